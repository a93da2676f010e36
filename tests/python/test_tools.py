"""The client's higher-level tools: utils.create_from_yaml with a
multi-document file, and the discovery-driven DynamicClient."""

import os
import tempfile
import unittest

from kubernetes import dynamic, utils

from common import Case, API, IMAGE, apps, core, create_namespace, delete_namespace, net, unique, wait_gone

NS = None

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {extra_ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: yaml
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  token: abc
---
apiVersion: v1
kind: Service
metadata:
  name: yaml-web
spec:
  selector:
    app: yaml-web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: yaml-web
  labels:
    app: yaml-web
spec:
  replicas: 0
  selector:
    matchLabels:
      app: yaml-web
  template:
    metadata:
      labels:
        app: yaml-web
    spec:
      containers:
      - name: web
        image: {image}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  podSelector: {{}}
"""


def setUpModule():
    global NS
    NS = create_namespace("py-tools")


def tearDownModule():
    delete_namespace(NS)


class CreateFromYaml(Case):
    def test_multi_document_file(self):
        extra_ns = unique("py-yaml")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(MANIFEST.format(extra_ns=extra_ns, image=IMAGE))
        try:
            created = utils.create_from_yaml(API, f.name, namespace=NS)
        finally:
            os.unlink(f.name)
        kinds = [objs[0].kind for objs in created]
        self.assertEqual(kinds, ["Namespace", "ConfigMap", "Secret", "Service", "Deployment", "NetworkPolicy"])
        self.assertEqual(core.read_namespace(extra_ns).status.phase, "Active")
        self.assertEqual(core.read_namespaced_config_map("settings", NS).data, {"mode": "yaml"})
        self.assertEqual(core.read_namespaced_secret("creds", NS).data, {"token": "YWJj"})
        self.assertTrue(core.read_namespaced_service("yaml-web", NS).spec.cluster_ip)
        self.assertEqual(apps.read_namespaced_deployment("yaml-web", NS).spec.replicas, 0)
        self.assertEqual(net.read_namespaced_network_policy("deny-all", NS).spec.policy_types, ["Ingress"])
        # The same file again: every object already exists.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(MANIFEST.format(extra_ns=extra_ns, image=IMAGE))
        try:
            with self.assertRaises(utils.FailToCreateError) as e:
                utils.create_from_yaml(API, f.name, namespace=NS)
        finally:
            os.unlink(f.name)
        self.assertEqual([x.status for x in e.exception.api_exceptions], [409] * 6)
        # And once more with apply=True: server-side apply of what exists.
        docs = list(__import__("yaml").safe_load_all(MANIFEST.format(extra_ns=extra_ns, image=IMAGE)))
        docs[1]["data"]["mode"] = "applied"
        applied = utils.create_from_yaml(API, yaml_objects=docs, namespace=NS, apply=True, force_conflicts=True)
        self.assertEqual(len(applied), 6)
        self.assertEqual(core.read_namespaced_config_map("settings", NS).data, {"mode": "applied"})
        delete_namespace(extra_ns)


class Dynamic(Case):
    def test_discovery_crud_and_apply(self):
        dyn = dynamic.DynamicClient(API)
        cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
        self.assertEqual((cms.name, cms.namespaced), ("configmaps", True))
        name = unique("dyn")
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}
        created = cms.create(body=body, namespace=NS)
        self.assertEqual(created.data.a, "1")
        self.assertEqual(cms.get(name=name, namespace=NS).metadata.uid, created.metadata.uid)
        applied = cms.server_side_apply(
            body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1", "b": "2"}},
            name=name,
            namespace=NS,
            field_manager="py-test",
            force_conflicts=True,
        )
        self.assertEqual(applied.data.to_dict(), {"a": "1", "b": "2"})
        managers = {m.manager for m in applied.metadata.managedFields}
        self.assertIn("py-test", managers)
        listed = cms.get(namespace=NS, label_selector="")
        self.assertIn(name, [i.metadata.name for i in listed.items])
        cms.delete(name=name, namespace=NS)
        wait_gone(f"configmap {name}", lambda: core.read_namespaced_config_map(name, NS))

        deploys = dyn.resources.get(api_version="apps/v1", kind="Deployment")
        self.assertEqual(deploys.group_version, "apps/v1")
        scale = dyn.resources.get(api_version="apps/v1", kind="Deployment").subresources["scale"]
        self.assertEqual(scale.kind, "Scale")
        ingresses = dyn.resources.get(api_version="networking.k8s.io/v1", kind="Ingress")
        self.assertEqual(ingresses.short_names, ["ing"])


if __name__ == "__main__":
    unittest.main()
