//! Pod network: a Linux bridge with the node's pod CIDR, a veth per pod,
//! IPAM that survives restarts, masquerade and hostPort DNAT in nftables.
