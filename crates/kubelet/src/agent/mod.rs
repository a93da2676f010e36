//! The node agent: registers the Node, renews its Lease and runs the pods bound to it through the runtime and the pod network.
