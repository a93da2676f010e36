"""The node: its status, its lease, and cordoning it the way kubectl does.
Runs last (file name) since a cordoned node takes no new pods."""

import unittest

from kubernetes import client

from common import Case, API, NODE, core, wait_for


class Node(Case):
    def test_status_and_lease(self):
        node = core.read_node(NODE)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        self.assertEqual([c.status for c in ready], ["True"])
        self.assertTrue(node.status.node_info.kubelet_version and node.status.node_info.os_image)
        self.assertIn("cpu", node.status.capacity)
        self.assertIn("pods", node.status.allocatable)
        self.assertEqual(node.metadata.labels["kubernetes.io/hostname"], NODE)
        self.assertIn(NODE, [n.metadata.name for n in core.list_node(label_selector=f"kubernetes.io/hostname={NODE}").items])
        lease = client.CoordinationV1Api(API).read_namespaced_lease(NODE, "kube-node-lease")
        self.assertEqual(lease.spec.holder_identity, NODE)
        self.assertIsNotNone(lease.spec.renew_time)

    def test_node_proxy(self):
        # The API server's proxy to the node's kubelet.
        self.assertEqual(core.connect_get_node_proxy_with_path(NODE, "healthz"), "ok")

    def test_cordon_and_field_selectors(self):
        def schedulable():
            return [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=false").items]

        def unschedulable():
            return [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items]

        self.assertIsNone(core.read_node(NODE).spec.unschedulable)
        self.assertIn(NODE, schedulable())
        try:
            # kubectl cordon: a strategic merge patch of spec.unschedulable.
            cordoned = core.patch_node(NODE, {"spec": {"unschedulable": True}})
            self.assertTrue(cordoned.spec.unschedulable)
            # The node lifecycle controller taints it.
            wait_for("the unschedulable taint", lambda: "node.kubernetes.io/unschedulable" in [t.key for t in core.read_node(NODE).spec.taints or []], timeout=30)
            self.assertIn(NODE, unschedulable())
            self.assertNotIn(NODE, schedulable())
        finally:
            # kubectl uncordon: unschedulable back to unset.
            core.patch_node(NODE, {"spec": {"unschedulable": None}})
        self.assertIsNone(core.read_node(NODE).spec.unschedulable)
        self.assertIn(NODE, schedulable())
        self.assertNotIn(NODE, unschedulable())


if __name__ == "__main__":
    unittest.main()
