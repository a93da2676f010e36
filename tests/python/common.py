"""What the Python client tests share: the clients, a namespace per module,
waiting helpers and the pods the tests run.

tests/python_client.rs starts `skiff server` with its node agent and runs
these tests with:
  KUBECONFIG        the server's kubeconfig
  SKIFF_TEST_IMAGE  a busybox image on a registry at 127.0.0.1
  SKIFF_NODE_NAME   the name of the server's node
"""

import json
import os
import signal
import time
import unittest
import uuid

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])

API = client.ApiClient()
core = client.CoreV1Api(API)
apps = client.AppsV1Api(API)
batch = client.BatchV1Api(API)
net = client.NetworkingV1Api(API)

IMAGE = os.environ["SKIFF_TEST_IMAGE"]
NODE = os.environ["SKIFF_NODE_NAME"]

# busybox httpd answering "hello-skiff" on port 8080.
WEB = "mkdir -p /www && echo hello-skiff > /www/index.html && echo started && exec httpd -f -p 8080 -h /www"


class Case(unittest.TestCase):
    """A test that fails (instead of hanging the run) after TEST_TIMEOUT seconds."""

    TEST_TIMEOUT = 300
    maxDiff = None

    def setUp(self):
        def expired(_sig, _frame):
            raise TimeoutError(f"{self.id()} still running after {self.TEST_TIMEOUT}s")

        signal.signal(signal.SIGALRM, expired)
        signal.alarm(self.TEST_TIMEOUT)

    def tearDown(self):
        signal.alarm(0)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def meta(name, labels=None, **kw):
    return client.V1ObjectMeta(name=name, labels=labels, **kw)


def container(name="main", command=None, ports=None, **kw):
    return client.V1Container(
        name=name,
        image=IMAGE,
        command=command or ["sh", "-c", "sleep 3600"],
        ports=[client.V1ContainerPort(container_port=p) for p in (ports or [])] or None,
        **kw,
    )


def pod_template(labels, command=None, restart_policy=None, ports=None):
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(
            containers=[container(command=command, ports=ports)],
            restart_policy=restart_policy,
            termination_grace_period_seconds=1,
        ),
    )


def create_namespace(prefix):
    name = unique(prefix)
    core.create_namespace(client.V1Namespace(metadata=meta(name)))
    # Pods need the namespace's default ServiceAccount, made by a controller.
    wait_for(f"the default ServiceAccount in {name}", lambda: core.read_namespaced_service_account("default", name))
    return name


def delete_namespace(name):
    try:
        core.delete_namespace(name, grace_period_seconds=0)
    except ApiException as e:
        if e.status != 404:
            raise


def wait_for(what, fn, timeout=90, interval=0.3):
    """Calls fn until it returns something truthy (API errors count as not yet)."""
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except ApiException as e:
            last = f"{e.status} {e.reason}: {e.body}"
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")
        time.sleep(interval)


def wait_gone(what, read, timeout=90):
    """Waits until read() fails with 404."""

    def gone():
        try:
            read()
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for(f"{what} to be gone", gone, timeout=timeout)


def watch_until(list_fn, what, cond, timeout=120, **kw):
    """Watches list_fn (a typed list call) until cond(event_type, object) holds; returns the object."""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        w = watch.Watch()
        for ev in w.stream(list_fn, timeout_seconds=max(1, int(deadline - time.time())), **kw):
            obj = ev["object"]
            seen.append(ev["type"])
            if cond(ev["type"], obj):
                w.stop()
                return obj
    raise AssertionError(f"timed out after {timeout}s watching for {what}; events seen: {seen}")


def pod_ready(pod):
    conds = (pod.status and pod.status.conditions) or []
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conds)


def wait_pod_ready(ns, name, timeout=120):
    # Polls rather than watches: the watch tests are elsewhere, and pods should start whatever they find.
    return wait_for(f"pod {ns}/{name} Ready", lambda: (lambda p: p if pod_ready(p) else None)(core.read_namespaced_pod(name, ns)), timeout=timeout)


def api_error(call, *args, **kwargs):
    """Runs a call that must fail; returns (HTTP status, decoded Status body)."""
    try:
        call(*args, **kwargs)
    except ApiException as e:
        return e.status, json.loads(e.body)
    raise AssertionError(f"{call.__name__}{args} should have failed")
