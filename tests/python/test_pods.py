"""A Pod running a real container: its defaults and status, logs, events,
exec and port-forward through kubernetes.stream, and graceful deletion."""

import time
import unittest

from kubernetes import client
from kubernetes.stream import portforward, stream

from common import NODE, Case, WEB, api_error, container, core, create_namespace, delete_namespace, meta, unique, wait_for, wait_gone, wait_pod_ready

NS = None
POD = None


def setUpModule():
    global NS, POD
    NS = create_namespace("py-pods")
    POD = unique("web")
    spec = client.V1PodSpec(containers=[container(command=["sh", "-c", WEB], ports=[8080])])
    core.create_namespaced_pod(NS, client.V1Pod(metadata=meta(POD, {"app": "web"}), spec=spec))
    ports = [client.V1ServicePort(name="http", port=80, target_port=8080)]
    core.create_namespaced_service(NS, client.V1Service(metadata=meta("web"), spec=client.V1ServiceSpec(selector={"app": "web"}, ports=ports)))
    wait_pod_ready(NS, POD)


def tearDownModule():
    delete_namespace(NS)


class Pod(Case):
    def test_defaults_and_status(self):
        pod = core.read_namespaced_pod(POD, NS)
        s = pod.spec
        self.assertEqual((s.restart_policy, s.dns_policy, s.scheduler_name), ("Always", "ClusterFirst", "default-scheduler"))
        self.assertEqual((s.termination_grace_period_seconds, s.service_account_name, s.enable_service_links, s.priority), (30, "default", True, 0))
        self.assertEqual(s.node_name, NODE)
        self.assertEqual(
            sorted((t.key, t.effect, t.toleration_seconds) for t in s.tolerations),
            [("node.kubernetes.io/not-ready", "NoExecute", 300), ("node.kubernetes.io/unreachable", "NoExecute", 300)],
        )
        c = s.containers[0]
        self.assertEqual((c.image_pull_policy, c.termination_message_path, c.termination_message_policy), ("IfNotPresent", "/dev/termination-log", "File"))
        self.assertEqual(c.ports[0].protocol, "TCP")
        st = pod.status
        self.assertEqual((st.phase, st.qos_class), ("Running", "BestEffort"))
        self.assertTrue(st.pod_ip and st.host_ip and st.start_time)
        self.assertEqual([ip.ip for ip in st.pod_i_ps], [st.pod_ip])
        self.assertEqual({c.type for c in st.conditions} >= {"PodScheduled", "Initialized", "ContainersReady", "Ready"}, True, st.conditions)
        cs = st.container_statuses[0]
        self.assertTrue(cs.ready and cs.started and cs.state.running and cs.state.running.started_at)
        self.assertEqual(cs.restart_count, 0)
        self.assertTrue(cs.container_id and cs.image_id)
        self.assertEqual(core.read_namespaced_pod_status(POD, NS).status.pod_ip, st.pod_ip)

    def test_service_account_token_mount(self):
        # The ServiceAccount admission mounts the API token (automountServiceAccountToken defaults to true).
        c = core.read_namespaced_pod(POD, NS).spec.containers[0]
        self.assertIn("/var/run/secrets/kubernetes.io/serviceaccount", [m.mount_path for m in c.volume_mounts or []])

    def test_logs_and_events(self):
        self.assertEqual(core.read_namespaced_pod_log(POD, NS), "started\n")
        self.assertEqual(core.read_namespaced_pod_log(POD, NS, container="main", tail_lines=1, timestamps=True).split(" ", 1)[1], "started\n")
        events = wait_for("the pod's events", lambda: core.list_namespaced_event(NS, field_selector=f"involvedObject.name={POD}").items)
        reasons = {e.reason for e in events}
        self.assertIn("Scheduled", reasons)
        self.assertTrue(all(e.involved_object.kind == "Pod" for e in events))

    def test_exec(self):
        out = stream(core.connect_get_namespaced_pod_exec, POD, NS, command=["sh", "-c", "echo out; echo err >&2"], stdout=True, stderr=True, stdin=False, tty=False)
        self.assertEqual(sorted(out.split()), ["err", "out"])
        # A terminal.
        tty = stream(core.connect_get_namespaced_pod_exec, POD, NS, command=["tty"], stdout=True, stderr=True, stdin=False, tty=True)
        self.assertTrue(tty.strip().startswith("/dev/pts/"), tty)

    def test_exec_stdin(self):
        # Interactive: stdin in (as text frames, which the client sends for str), stdout and the exit code out.
        ws = stream(core.connect_get_namespaced_pod_exec, POD, NS, command=["sh", "-c", "read x; echo got-$x; exit 3"], stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        ws.write_stdin("hello\n")
        ws.run_forever(timeout=20)
        self.assertFalse(ws.is_open(), "the shell did not exit after reading its line")
        self.assertEqual(ws.read_stdout(timeout=1).strip(), "got-hello")
        self.assertEqual(ws.returncode, 3)
        ws.close()

    def test_port_forward(self):
        pf = portforward(core.connect_get_namespaced_pod_portforward, POD, NS, ports="8080")
        sock = pf.socket(8080)
        sock.setblocking(True)
        sock.settimeout(20)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        reply = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        sock.close()
        self.assertIn(b"200 OK", reply)
        self.assertIn(b"hello-skiff", reply)
        self.assertIsNone(pf.error(8080))


class Networking(Case):
    def test_service_endpoints(self):
        pod_ip = core.read_namespaced_pod(POD, NS).status.pod_ip
        ep = wait_for("the Service's Endpoints", lambda: core.read_namespaced_endpoints("web", NS).subsets)
        self.assertEqual([a.ip for a in ep[0].addresses], [pod_ip])
        self.assertEqual([(p.name, p.port, p.protocol) for p in ep[0].ports], [("http", 8080, "TCP")])
        self.assertEqual(ep[0].addresses[0].target_ref.name, POD)
        def one_slice():
            slices = client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=web").items
            return slices if len(slices) == 1 and slices[0].endpoints else None

        slices = wait_for("the Service's one EndpointSlice with the pod", one_slice, timeout=30)
        self.assertEqual(slices[0].address_type, "IPv4")
        self.assertEqual([e.addresses for e in slices[0].endpoints], [[pod_ip]])
        self.assertTrue(slices[0].endpoints[0].conditions.ready)
        self.assertEqual(slices[0].metadata.owner_references[0].name, "web")

    def test_proxies(self):
        # The API server's proxies to a pod and to a Service.
        self.assertEqual(core.connect_get_namespaced_pod_proxy_with_path(f"{POD}:8080", NS, "index.html"), "hello-skiff\n")
        wait_for("the Service's Endpoints", lambda: core.read_namespaced_endpoints("web", NS).subsets)
        self.assertEqual(core.connect_get_namespaced_service_proxy_with_path("web:http", NS, "index.html"), "hello-skiff\n")

    def test_binding_by_a_custom_scheduler(self):
        name = unique("bound")
        spec = client.V1PodSpec(containers=[container()], scheduler_name="e2e-scheduler", termination_grace_period_seconds=0)
        core.create_namespaced_pod(NS, client.V1Pod(metadata=meta(name), spec=spec))
        self.assertIsNone(core.read_namespaced_pod(name, NS).spec.node_name)
        binding = client.V1Binding(metadata=meta(name), target=client.V1ObjectReference(kind="Node", name=NODE))
        # The answer is a Status, which the generated V1Binding model cannot hold: read it raw.
        resp = core.create_namespaced_pod_binding(name, NS, binding, _preload_content=False)
        self.assertEqual(resp.status, 201)
        self.assertEqual(core.read_namespaced_pod(name, NS).spec.node_name, NODE)
        status, body = api_error(core.create_namespaced_pod_binding, name, NS, binding, _preload_content=False)
        self.assertEqual((status, body["reason"]), (409, "Conflict"))
        core.delete_namespaced_pod(name, NS, grace_period_seconds=0)


class ZDelete(Case):
    def test_graceful_delete_returns_the_pod(self):
        name = unique("short")
        spec = client.V1PodSpec(containers=[container()], termination_grace_period_seconds=2)
        core.create_namespaced_pod(NS, client.V1Pod(metadata=meta(name), spec=spec))
        wait_pod_ready(NS, name)
        deleted = core.delete_namespaced_pod(name, NS)
        self.assertEqual((deleted.kind, deleted.metadata.name), ("Pod", name))
        self.assertIsNotNone(deleted.metadata.deletion_timestamp)
        self.assertEqual(deleted.metadata.deletion_grace_period_seconds, 2)
        started = time.time()
        wait_gone(f"pod {name}", lambda: core.read_namespaced_pod(name, NS), timeout=60)
        self.assertLess(time.time() - started, 30)
        # Eviction through the pods/eviction subresource.
        deleted = core.create_namespaced_pod_eviction(POD, NS, client.V1Eviction(metadata=meta(POD, namespace=NS)))
        self.assertIsNotNone(deleted)
        wait_gone(f"evicted pod {POD}", lambda: core.read_namespaced_pod(POD, NS), timeout=60)


if __name__ == "__main__":
    unittest.main()
