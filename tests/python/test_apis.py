"""The other API groups a program reaches through the typed client:
CustomResourceDefinitions and CustomObjectsApi, RBAC and access reviews,
PodDisruptionBudgets, HorizontalPodAutoscalers, Leases, scheduling, storage
and node classes, and ServiceAccount tokens."""

import time
import unittest

from kubernetes import client

from common import API, Case, api_error, core, create_namespace, delete_namespace, meta, unique, wait_for, wait_gone

NS = None
GROUP = "e2e.skiff.dev"


def setUpModule():
    global NS
    NS = create_namespace("py-apis")


def tearDownModule():
    delete_namespace(NS)


class CustomResources(Case):
    @unittest.skip("needs CustomResourceDefinitions (issue 15)")
    def test_crd_and_custom_objects(self):
        ext = client.ApiextensionsV1Api(API)
        custom = client.CustomObjectsApi(API)
        plural, kind = "widgets", "Widget"
        name = f"{plural}.{GROUP}"
        schema = client.V1JSONSchemaProps(
            type="object",
            properties={
                "spec": client.V1JSONSchemaProps(type="object", properties={"size": client.V1JSONSchemaProps(type="integer", minimum=1)}),
                "status": client.V1JSONSchemaProps(type="object", properties={"phase": client.V1JSONSchemaProps(type="string")}),
            },
        )
        crd = client.V1CustomResourceDefinition(
            metadata=meta(name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=GROUP,
                scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(plural=plural, singular="widget", kind=kind, short_names=["wd"]),
                versions=[
                    client.V1CustomResourceDefinitionVersion(
                        name="v1",
                        served=True,
                        storage=True,
                        schema=client.V1CustomResourceValidation(open_apiv3_schema=schema),
                        subresources=client.V1CustomResourceSubresources(status={}),
                    )
                ],
            ),
        )
        created = ext.create_custom_resource_definition(crd)
        self.assertEqual(created.spec.names.list_kind, "WidgetList")
        wait_for(
            f"CRD {name} Established",
            lambda: any(c.type == "Established" and c.status == "True" for c in (ext.read_custom_resource_definition(name).status.conditions or [])),
            timeout=30,
        )
        try:
            body = {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": {"name": "w1"}, "spec": {"size": 3, "unknown": "pruned"}}
            obj = custom.create_namespaced_custom_object(GROUP, "v1", NS, plural, body)
            self.assertEqual(obj["spec"], {"size": 3})
            self.assertEqual(obj["metadata"]["generation"], 1)
            got = custom.get_namespaced_custom_object(GROUP, "v1", NS, plural, "w1")
            self.assertEqual(got["metadata"]["uid"], obj["metadata"]["uid"])
            patched = custom.patch_namespaced_custom_object(GROUP, "v1", NS, plural, "w1", {"spec": {"size": 5}})
            self.assertEqual((patched["spec"]["size"], patched["metadata"]["generation"]), (5, 2))
            got = custom.get_namespaced_custom_object(GROUP, "v1", NS, plural, "w1")
            got["status"] = {"phase": "Ready"}
            with_status = custom.replace_namespaced_custom_object_status(GROUP, "v1", NS, plural, "w1", got)
            self.assertEqual(with_status["status"], {"phase": "Ready"})
            self.assertEqual(with_status["metadata"]["generation"], 2)
            # status is ignored on the main resource, spec on /status.
            got = custom.get_namespaced_custom_object(GROUP, "v1", NS, plural, "w1")
            got["status"] = {"phase": "Other"}
            self.assertEqual(custom.replace_namespaced_custom_object(GROUP, "v1", NS, plural, "w1", got)["status"], {"phase": "Ready"})
            listed = custom.list_namespaced_custom_object(GROUP, "v1", NS, plural)
            self.assertEqual((listed["kind"], [i["metadata"]["name"] for i in listed["items"]]), (kind + "List", ["w1"]))
            self.assertEqual(len(custom.list_cluster_custom_object(GROUP, "v1", plural)["items"]), 1)
            status, err = api_error(custom.create_namespaced_custom_object, GROUP, "v1", NS, plural, dict(body, metadata={"name": "w2"}, spec={"size": 0}))
            self.assertEqual((status, err["reason"]), (422, "Invalid"))
            self.assertIn("spec.size", [c["field"] for c in err["details"]["causes"]])
            custom.delete_namespaced_custom_object(GROUP, "v1", NS, plural, "w1")
            wait_gone("w1", lambda: custom.get_namespaced_custom_object(GROUP, "v1", NS, plural, "w1"), timeout=30)
            resources = client.CustomObjectsApi(API).get_api_resources(GROUP, "v1")
            self.assertIn(plural, [r.name for r in resources.resources])
        finally:
            ext.delete_custom_resource_definition(name)
        wait_gone(f"CRD {name}", lambda: ext.read_custom_resource_definition(name), timeout=60)


class Rbac(Case):
    def test_roles_and_bindings(self):
        rbac = client.RbacAuthorizationV1Api(API)
        role = rbac.create_namespaced_role(
            NS, client.V1Role(metadata=meta("reader"), rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])])
        )
        self.assertEqual(role.rules[0].verbs, ["get", "list"])
        binding = rbac.create_namespaced_role_binding(
            NS,
            client.V1RoleBinding(
                metadata=meta("reader"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="reader"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=NS)],
            ),
        )
        self.assertEqual(binding.subjects[0].name, "default")

    @unittest.skip("needs RBAC authorization and the access review APIs (issue 14)")
    def test_access_reviews(self):
        authz = client.AuthorizationV1Api(API)
        review = authz.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(namespace=NS, verb="create", resource="pods")))
        )
        self.assertTrue(review.status.allowed)
        sar = authz.create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=f"system:serviceaccount:{NS}:default",
                    resource_attributes=client.V1ResourceAttributes(namespace=NS, verb="list", resource="pods"),
                )
            )
        )
        self.assertTrue(sar.status.allowed, sar.status)
        sar = authz.create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=f"system:serviceaccount:{NS}:default",
                    resource_attributes=client.V1ResourceAttributes(namespace=NS, verb="delete", resource="pods"),
                )
            )
        )
        self.assertFalse(sar.status.allowed, sar.status)
        rules = authz.create_self_subject_rules_review(client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=NS)))
        self.assertTrue(rules.status.resource_rules)
        me = client.AuthenticationV1Api(API).create_self_subject_review(client.V1SelfSubjectReview())
        self.assertTrue(me.status.user_info.username)


    @unittest.skip("needs RBAC's bootstrap policy (issue 14)")
    def test_bootstrap_cluster_roles(self):
        roles = [c.metadata.name for c in client.RbacAuthorizationV1Api(API).list_cluster_role().items]
        self.assertEqual([r for r in ["cluster-admin", "admin", "edit", "view"] if r not in roles], [], "the bootstrap ClusterRoles upstream creates")


class Policy(Case):
    def test_pdb_and_hpa(self):
        pdb = client.PolicyV1Api(API).create_namespaced_pod_disruption_budget(
            NS, client.V1PodDisruptionBudget(metadata=meta("pdb"), spec=client.V1PodDisruptionBudgetSpec(min_available=1, selector=client.V1LabelSelector(match_labels={"app": "none"})))
        )
        self.assertEqual(pdb.spec.min_available, 1)
        wait_for("the PDB's status", lambda: client.PolicyV1Api(API).read_namespaced_pod_disruption_budget_status("pdb", NS).status.observed_generation == 1, timeout=30)
        hpa = client.AutoscalingV2Api(API).create_namespaced_horizontal_pod_autoscaler(
            NS,
            client.V2HorizontalPodAutoscaler(
                metadata=meta("hpa"),
                spec=client.V2HorizontalPodAutoscalerSpec(
                    scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment", name="none"),
                    max_replicas=3,
                    metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=50)))],
                ),
            ),
        )
        self.assertEqual(hpa.spec.min_replicas, 1)
        v1 = client.AutoscalingV1Api(API).read_namespaced_horizontal_pod_autoscaler("hpa", NS)
        self.assertEqual(v1.spec.target_cpu_utilization_percentage, 50)


class ClusterScoped(Case):
    def test_leases(self):
        coord = client.CoordinationV1Api(API)
        lease = coord.create_namespaced_lease(NS, client.V1Lease(metadata=meta("lock"), spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15)))
        lease.spec.holder_identity = "you"
        self.assertEqual(coord.replace_namespaced_lease("lock", NS, lease).spec.holder_identity, "you")
        coord.delete_namespaced_lease("lock", NS)

    def test_priority_classes(self):
        sched = client.SchedulingV1Api(API)
        names = [p.metadata.name for p in sched.list_priority_class().items]
        self.assertIn("system-node-critical", names)
        self.assertIn("system-cluster-critical", names)
        pc = unique("prio")
        created = sched.create_priority_class(client.V1PriorityClass(metadata=meta(pc), value=1000, description="e2e"))
        self.assertEqual(created.preemption_policy, "PreemptLowerPriority")
        sched.delete_priority_class(pc)

    def test_storage_classes(self):
        sc = unique("sc")
        storage = client.StorageV1Api(API).create_storage_class(client.V1StorageClass(metadata=meta(sc), provisioner="example.com/none"))
        self.assertEqual((storage.reclaim_policy, storage.volume_binding_mode), ("Delete", "Immediate"))
        client.StorageV1Api(API).delete_storage_class(sc)

    def test_runtime_classes(self):
        node = client.NodeV1Api(API)
        rc = unique("rc")
        overhead = client.V1Overhead(pod_fixed={"cpu": "10m"})
        scheduling = client.V1Scheduling(node_selector={"runtime": "runc"}, tolerations=[client.V1Toleration(key="sandboxed", operator="Exists")])
        runtime = node.create_runtime_class(client.V1RuntimeClass(metadata=meta(rc), handler="runc", overhead=overhead, scheduling=scheduling))
        self.assertEqual(runtime.handler, "runc")
        self.assertIn(rc, [r.metadata.name for r in node.list_runtime_class().items])
        status, body = api_error(node.create_runtime_class, client.V1RuntimeClass(metadata=meta(unique("bad")), handler="Not_A_Label"))
        self.assertEqual((status, body["reason"], body["details"]["causes"][0]["field"]), (422, "Invalid", "handler"))
        # RuntimeClass admission: overhead and scheduling go into the pod; a missing class is refused.
        spec = client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")], runtime_class_name=rc, node_selector={"disk": "ssd"})
        pod = core.create_namespaced_pod(NS, client.V1Pod(metadata=meta(unique("rcpod")), spec=spec))
        self.assertEqual(pod.spec.overhead, {"cpu": "10m"})
        self.assertEqual(pod.spec.node_selector, {"disk": "ssd", "runtime": "runc"})
        self.assertIn("sandboxed", [t.key for t in pod.spec.tolerations])
        core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
        spec.runtime_class_name = "missing"
        status, body = api_error(core.create_namespaced_pod, NS, client.V1Pod(metadata=meta("orphan"), spec=spec))
        self.assertEqual((status, body["reason"]), (403, "Forbidden"))
        self.assertIn('pod rejected: RuntimeClass "missing" not found', body["message"])
        spec.runtime_class_name = rc
        spec.node_selector = {"runtime": "kata"}
        status, body = api_error(core.create_namespaced_pod, NS, client.V1Pod(metadata=meta("conflict"), spec=spec))
        self.assertEqual(status, 403)
        self.assertIn("conflict: runtimeClass.scheduling.nodeSelector[runtime] = runc; pod.spec.nodeSelector[runtime] = kata", body["message"])
        node.delete_runtime_class(rc)

    @unittest.skip("needs ServiceAccount TokenRequest and TokenReview (issue 14)")
    def test_service_account_tokens(self):
        token = core.create_namespaced_service_account_token("default", NS, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
        self.assertTrue(token.status.token)
        self.assertGreater(token.status.expiration_timestamp.timestamp(), time.time())
        review = client.AuthenticationV1Api(API).create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token.status.token)))
        self.assertTrue(review.status.authenticated, review.status)
        self.assertEqual(review.status.user.username, f"system:serviceaccount:{NS}:default")


if __name__ == "__main__":
    unittest.main()
