"""apps, batch and networking kinds through the typed AppsV1Api, BatchV1Api
and NetworkingV1Api, with their controllers running real pods."""

import unittest

from kubernetes import client

from common import (
    Case,
    api_error,
    apps,
    batch,
    core,
    create_namespace,
    delete_namespace,
    meta,
    net,
    pod_template,
    unique,
    wait_for,
    wait_gone,
    watch_until,
)

NS = None


def setUpModule():
    global NS
    NS = create_namespace("py-work")


def tearDownModule():
    delete_namespace(NS)


def selector(labels):
    return client.V1LabelSelector(match_labels=labels)


def background():
    return client.V1DeleteOptions(propagation_policy="Background")


class Deployments(Case):
    def test_rollout_scale_and_delete(self):
        name = unique("deploy")
        labels = {"app": name}
        body = client.V1Deployment(metadata=meta(name), spec=client.V1DeploymentSpec(replicas=1, selector=selector(labels), template=pod_template(labels)))
        created = apps.create_namespaced_deployment(NS, body)
        spec = created.spec
        self.assertEqual(created.metadata.generation, 1)
        self.assertEqual((spec.strategy.type, spec.strategy.rolling_update.max_surge, spec.strategy.rolling_update.max_unavailable), ("RollingUpdate", "25%", "25%"))
        self.assertEqual((spec.revision_history_limit, spec.progress_deadline_seconds), (10, 600))
        self.assertEqual(spec.template.spec.containers[0].image_pull_policy, "IfNotPresent")

        def available(n):
            return lambda _t, d: d.status is not None and d.status.available_replicas == n and d.status.replicas == n and d.status.observed_generation == d.metadata.generation and d.status.updated_replicas == n

        watch_until(apps.list_namespaced_deployment, f"deployment {name} available", available(1), namespace=NS, field_selector=f"metadata.name={name}")
        scale = apps.read_namespaced_deployment_scale(name, NS)
        self.assertEqual((scale.spec.replicas, scale.status.replicas, scale.status.selector), (1, 1, f"app={name}"))
        apps.patch_namespaced_deployment_scale(name, NS, {"spec": {"replicas": 2}})
        watch_until(apps.list_namespaced_deployment, f"deployment {name} scaled to 2", available(2), namespace=NS, field_selector=f"metadata.name={name}")

        # A new template rolls out a second ReplicaSet.
        d = apps.read_namespaced_deployment(name, NS)
        d.spec.template.metadata.annotations = {"rev": "2"}
        replaced = apps.replace_namespaced_deployment(name, NS, d)
        self.assertEqual(replaced.metadata.generation, 3)
        done = watch_until(apps.list_namespaced_deployment, f"deployment {name} rolled out", available(2), namespace=NS, field_selector=f"metadata.name={name}")
        self.assertEqual(done.metadata.annotations["deployment.kubernetes.io/revision"], "2")
        rss = apps.list_namespaced_replica_set(NS, label_selector=f"app={name}").items
        self.assertEqual(len(rss), 2, [r.metadata.name for r in rss])
        for rs in rss:
            self.assertEqual([(o.kind, o.name, o.controller) for o in rs.metadata.owner_references], [("Deployment", name, True)])
        self.assertEqual(sorted(rs.spec.replicas for rs in rss), [0, 2])
        status = apps.read_namespaced_deployment_status(name, NS).status
        self.assertIn("Available", [c.type for c in status.conditions])

        apps.delete_namespaced_deployment(name, NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        wait_gone(f"deployment {name}", lambda: apps.read_namespaced_deployment(name, NS))
        self.assertEqual(apps.list_namespaced_replica_set(NS, label_selector=f"app={name}").items, [])
        self.assertEqual(core.list_namespaced_pod(NS, label_selector=f"app={name}").items, [])


class DaemonSets(Case):
    def test_defaults_and_crud(self):
        name = unique("ds")
        labels = {"app": name}
        body = client.V1DaemonSet(metadata=meta(name), spec=client.V1DaemonSetSpec(selector=selector(labels), template=pod_template(labels)))
        created = apps.create_namespaced_daemon_set(NS, body)
        self.assertEqual(created.spec.update_strategy.type, "RollingUpdate")
        self.assertEqual(created.spec.revision_history_limit, 10)
        self.assertIn(name, [d.metadata.name for d in apps.list_daemon_set_for_all_namespaces().items])
        apps.delete_namespaced_daemon_set(name, NS)
        wait_gone(f"daemonset {name}", lambda: apps.read_namespaced_daemon_set(name, NS))

    def test_runs_on_the_node(self):
        name = unique("ds")
        labels = {"app": name}
        body = client.V1DaemonSet(metadata=meta(name), spec=client.V1DaemonSetSpec(selector=selector(labels), template=pod_template(labels)))
        apps.create_namespaced_daemon_set(NS, body)
        wait_for(f"daemonset {name} ready", lambda: apps.read_namespaced_daemon_set_status(name, NS).status.number_ready == 1, timeout=60)
        listed = apps.list_daemon_set_for_all_namespaces().items
        self.assertIn(name, [d.metadata.name for d in listed])
        # Upstream's template generation: an annotation on the DaemonSet, a label on its pods.
        ds = apps.read_namespaced_daemon_set(name, NS)
        self.assertEqual(ds.metadata.annotations["deprecated.daemonset.template.generation"], "1")
        pods = core.list_namespaced_pod(NS, label_selector=f"app={name}").items
        self.assertEqual([p.metadata.labels.get("pod-template-generation") for p in pods], ["1"])
        ds.spec.template.metadata.labels["rev"] = "2"
        replaced = apps.replace_namespaced_daemon_set(name, NS, ds)
        self.assertEqual(replaced.metadata.annotations["deprecated.daemonset.template.generation"], "2")
        apps.delete_namespaced_daemon_set(name, NS)
        wait_gone(f"daemonset {name}", lambda: apps.read_namespaced_daemon_set(name, NS))


class StatefulSets(Case):
    def test_defaults(self):
        name = unique("sts")
        labels = {"app": name}
        body = client.V1StatefulSet(
            metadata=meta(name), spec=client.V1StatefulSetSpec(service_name=name, replicas=1, selector=selector(labels), template=pod_template(labels))
        )
        created = apps.create_namespaced_stateful_set(NS, body)
        self.assertEqual((created.spec.pod_management_policy, created.spec.update_strategy.type), ("OrderedReady", "RollingUpdate"))
        self.assertEqual(created.spec.persistent_volume_claim_retention_policy.when_deleted, "Retain")
        self.assertEqual(apps.read_namespaced_stateful_set_scale(name, NS).spec.replicas, 1)
        apps.delete_namespaced_stateful_set(name, NS)
        wait_gone(f"statefulset {name}", lambda: apps.read_namespaced_stateful_set(name, NS))

    def test_ordinal_pods(self):
        name = unique("sts")
        labels = {"app": name}
        core.create_namespaced_service(NS, client.V1Service(metadata=meta(name), spec=client.V1ServiceSpec(cluster_ip="None", selector=labels, ports=[client.V1ServicePort(port=80)])))
        body = client.V1StatefulSet(
            metadata=meta(name), spec=client.V1StatefulSetSpec(service_name=name, replicas=1, selector=selector(labels), template=pod_template(labels))
        )
        created = apps.create_namespaced_stateful_set(NS, body)
        self.assertEqual((created.spec.pod_management_policy, created.spec.update_strategy.type), ("OrderedReady", "RollingUpdate"))
        self.assertEqual(created.spec.persistent_volume_claim_retention_policy.when_deleted, "Retain")
        wait_for(f"statefulset {name} ready", lambda: apps.read_namespaced_stateful_set(name, NS).status.ready_replicas == 1, timeout=60)
        pod = core.read_namespaced_pod(f"{name}-0", NS)
        self.assertEqual(pod.metadata.labels["statefulset.kubernetes.io/pod-name"], f"{name}-0")
        self.assertEqual(pod.spec.hostname, f"{name}-0")
        self.assertEqual(pod.spec.subdomain, name)
        self.assertEqual(apps.read_namespaced_stateful_set_scale(name, NS).spec.replicas, 1)
        apps.delete_namespaced_stateful_set(name, NS, body=background())
        wait_gone(f"pod {name}-0", lambda: core.read_namespaced_pod(f"{name}-0", NS))


class ReplicaSets(Case):
    def test_owns_pods(self):
        name = unique("rs")
        labels = {"app": name}
        body = client.V1ReplicaSet(metadata=meta(name), spec=client.V1ReplicaSetSpec(replicas=1, selector=selector(labels), template=pod_template(labels)))
        apps.create_namespaced_replica_set(NS, body)
        wait_for(f"replicaset {name} ready", lambda: apps.read_namespaced_replica_set(name, NS).status.ready_replicas == 1)
        pods = core.list_namespaced_pod(NS, label_selector=f"app={name}").items
        self.assertEqual(len(pods), 1)
        self.assertEqual([(o.kind, o.name) for o in pods[0].metadata.owner_references], [("ReplicaSet", name)])
        apps.patch_namespaced_replica_set_scale(name, NS, {"spec": {"replicas": 0}})
        wait_for(f"replicaset {name} pods gone", lambda: not core.list_namespaced_pod(NS, label_selector=f"app={name}").items)
        apps.delete_namespaced_replica_set(name, NS, body=background())
        wait_gone(f"replicaset {name}", lambda: apps.read_namespaced_replica_set(name, NS))


class Jobs(Case):
    def test_job_defaults(self):
        name = unique("job")
        template = pod_template({"app": name}, command=["sh", "-c", "true"], restart_policy="Never")
        # Suspended: nothing should run it.
        created = batch.create_namespaced_job(NS, client.V1Job(metadata=meta(name), spec=client.V1JobSpec(template=template, suspend=True)))
        s = created.spec
        self.assertEqual((s.backoff_limit, s.completions, s.parallelism, s.completion_mode, s.suspend), (6, 1, 1, "NonIndexed", True))
        uid = s.selector.match_labels["batch.kubernetes.io/controller-uid"]
        self.assertEqual(uid, created.metadata.uid)
        labels = s.template.metadata.labels
        self.assertEqual((labels["batch.kubernetes.io/job-name"], labels["job-name"]), (name, name))
        batch.delete_namespaced_job(name, NS, propagation_policy="Background")
        wait_gone(f"job {name}", lambda: batch.read_namespaced_job(name, NS))

    def test_job_completes(self):
        name = unique("job")
        template = pod_template({"app": name}, command=["sh", "-c", "echo job-done"], restart_policy="Never")
        created = batch.create_namespaced_job(NS, client.V1Job(metadata=meta(name), spec=client.V1JobSpec(template=template)))
        s = created.spec
        self.assertEqual((s.backoff_limit, s.completions, s.parallelism, s.completion_mode, s.suspend), (6, 1, 1, "NonIndexed", False))
        self.assertIn("batch.kubernetes.io/controller-uid", s.selector.match_labels)
        self.assertEqual(s.template.metadata.labels["batch.kubernetes.io/job-name"], name)
        self.assertEqual(s.template.metadata.labels["job-name"], name)
        done = watch_until(batch.list_namespaced_job, f"job {name} complete", lambda _t, j: j.status and j.status.succeeded == 1, namespace=NS, field_selector=f"metadata.name={name}")
        self.assertIn(("Complete", "True"), [(c.type, c.status) for c in done.status.conditions])
        self.assertIsNotNone(done.status.completion_time)
        pods = core.list_namespaced_pod(NS, label_selector=f"batch.kubernetes.io/job-name={name}").items
        self.assertEqual([p.status.phase for p in pods], ["Succeeded"])
        self.assertEqual(core.read_namespaced_pod_log(pods[0].metadata.name, NS), "job-done\n")
        batch.delete_namespaced_job(name, NS, propagation_policy="Background")
        wait_for(f"job {name} pods gone", lambda: not core.list_namespaced_pod(NS, label_selector=f"batch.kubernetes.io/job-name={name}").items)

    def test_cronjob_crud(self):
        name = unique("cron")
        template = client.V1JobTemplateSpec(spec=client.V1JobSpec(template=pod_template({"app": name}, restart_policy="OnFailure")))
        body = client.V1CronJob(metadata=meta(name), spec=client.V1CronJobSpec(schedule="0 0 1 1 *", job_template=template))
        created = batch.create_namespaced_cron_job(NS, body)
        s = created.spec
        self.assertEqual((s.concurrency_policy, s.suspend, s.successful_jobs_history_limit, s.failed_jobs_history_limit), ("Allow", False, 3, 1))
        got = batch.read_namespaced_cron_job(name, NS)
        got.spec.schedule = "*/5 * * * *"
        self.assertEqual(batch.replace_namespaced_cron_job(name, NS, got).spec.schedule, "*/5 * * * *")
        self.assertTrue(batch.patch_namespaced_cron_job(name, NS, {"spec": {"suspend": True}}).spec.suspend)
        self.assertIsNotNone(batch.read_namespaced_cron_job_status(name, NS))
        self.assertIn(name, [c.metadata.name for c in batch.list_cron_job_for_all_namespaces().items])
        batch.delete_namespaced_cron_job(name, NS)
        wait_gone(f"cronjob {name}", lambda: batch.read_namespaced_cron_job(name, NS))


class Networking(Case):
    def test_ingress_crud(self):
        name = unique("ing")
        backend = client.V1IngressBackend(service=client.V1IngressServiceBackend(name="web", port=client.V1ServiceBackendPort(number=80)))
        rule = client.V1IngressRule(host="web.example.com", http=client.V1HTTPIngressRuleValue(paths=[client.V1HTTPIngressPath(path="/", path_type="Prefix", backend=backend)]))
        created = net.create_namespaced_ingress(NS, client.V1Ingress(metadata=meta(name), spec=client.V1IngressSpec(rules=[rule])))
        self.assertEqual(created.spec.rules[0].http.paths[0].backend.service.port.number, 80)
        got = net.read_namespaced_ingress(name, NS)
        got.spec.rules[0].http.paths.append(client.V1HTTPIngressPath(path="/api", path_type="Exact", backend=backend))
        self.assertEqual([p.path for p in net.replace_namespaced_ingress(name, NS, got).spec.rules[0].http.paths], ["/", "/api"])
        self.assertIsNotNone(net.read_namespaced_ingress_status(name, NS))
        self.assertIn(name, [i.metadata.name for i in net.list_ingress_for_all_namespaces().items])
        bad = client.V1Ingress(metadata=meta(unique("bad")), spec=client.V1IngressSpec(rules=[client.V1IngressRule(host="x", http=client.V1HTTPIngressRuleValue(paths=[client.V1HTTPIngressPath(path="rel", path_type="Prefix", backend=backend)]))]))
        status, body = api_error(net.create_namespaced_ingress, NS, bad)
        self.assertEqual((status, body["reason"]), (422, "Invalid"))
        self.assertIn("spec.rules[0].http.paths[0].path", [c["field"] for c in body["details"]["causes"]])
        net.delete_namespaced_ingress(name, NS)
        wait_gone(f"ingress {name}", lambda: net.read_namespaced_ingress(name, NS))

    def test_network_policy_crud(self):
        name = unique("np")
        peer = client.V1NetworkPolicyPeer(pod_selector=client.V1LabelSelector(match_labels={"role": "client"}))
        rule = client.V1NetworkPolicyIngressRule(_from=[peer], ports=[client.V1NetworkPolicyPort(port=8080)])
        spec = client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(match_labels={"app": "web"}), ingress=[rule])
        created = net.create_namespaced_network_policy(NS, client.V1NetworkPolicy(metadata=meta(name), spec=spec))
        self.assertEqual(created.spec.policy_types, ["Ingress"])
        self.assertEqual(created.spec.ingress[0].ports[0].protocol, "TCP")
        self.assertEqual(created.spec.ingress[0]._from[0].pod_selector.match_labels, {"role": "client"})
        got = net.read_namespaced_network_policy(name, NS)
        got.spec.egress = [client.V1NetworkPolicyEgressRule(to=[peer])]
        got.spec.policy_types = None
        self.assertEqual(net.replace_namespaced_network_policy(name, NS, got).spec.policy_types, ["Ingress", "Egress"])
        self.assertEqual([p.metadata.name for p in net.list_namespaced_network_policy(NS).items], [name])
        self.assertEqual(net.delete_namespaced_network_policy(name, NS).status, "Success")


if __name__ == "__main__":
    unittest.main()
