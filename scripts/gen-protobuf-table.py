#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf/table.rs: the protobuf schema of the
Kubernetes kinds skiff decodes, as (tag, JSON name, kind) per message.

Inputs (both from the Cargo registry, found under $CARGO_HOME or ~/.cargo):
  * k8s-pb 0.9.0: prost bindings generated from Kubernetes' generated.proto,
    giving field numbers, wire kinds and message types;
  * k8s-openapi 0.25.0 (v1_33): the JSON field names (from each type's
    deserializer, `"podIP" => Field::Key_pod_ip`) and which fields are optional.
Messages are joined by package and lower-cased name (prost writes `PodIp` for
`PodIP`; the proto name used in the table is the Kubernetes one), fields by
normalized name (lower case, no underscores or punctuation). A proto field with
no JSON counterpart whose message's fields all appear in the parent's JSON type
is an embedded (`json:",inline"`) struct; any other unmatched field is an error.

Usage: python3 scripts/gen-protobuf-table.py [OUTPUT]   (default: the path above)
"""

import glob
import os
import re
import sys

PB_VERSION = "0.9.0"
OPENAPI_VERSION = "0.25.0"
OPENAPI_FEATURE = "v1_33"

# k8s-pb module directories (under src/) to include.
PACKAGES = [
    "api/core/v1",
    "api/apps/v1",
    "api/batch/v1",
    "api/autoscaling/v1",
    "api/autoscaling/v2",
    "api/policy/v1",
    "api/networking/v1",
    "api/discovery/v1",
    "api/coordination/v1",
    "api/events/v1",
    "api/rbac/v1",
    "api/storage/v1",
    "api/scheduling/v1",
    "api/admissionregistration/v1",
    "api/authentication/v1",
    "api/authorization/v1",
    "api/certificates/v1",
    "api/node/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/runtime",
]

# Messages with a JSON form of their own; the decoder handles them by name
# (their proto fields are still listed, under their proto names).
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.runtime.TypeMeta",
    "k8s.io.apimachinery.pkg.runtime.Unknown",
    # Go string slices as named types: `ExtraValue []string` -> a JSON array.
    "k8s.io.api.authentication.v1.ExtraValue",
    "k8s.io.api.authorization.v1.ExtraValue",
    "k8s.io.api.certificates.v1.ExtraValue",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs",
}

# Fields k8s-pb (generated from a newer Kubernetes) has and k8s-openapi's
# v1_33 does not: skiff serves v1.33, so the decoder skips them like any
# unknown field. Listing them keeps every other unmatched field an error.
NEWER = {
    "k8s.io.api.core.v1.Container.restart_policy_rules",
    "k8s.io.api.core.v1.EphemeralContainerCommon.restart_policy_rules",
    "k8s.io.api.core.v1.EnvVarSource.file_key_ref",
    "k8s.io.api.core.v1.NodeStatus.declared_features",
    "k8s.io.api.core.v1.PodSpec.hostname_override",
    "k8s.io.api.core.v1.PodSpec.workload_ref",
    "k8s.io.api.core.v1.PodStatus.extended_resource_claim_status",
    "k8s.io.api.core.v1.PodStatus.allocated_resources",
    "k8s.io.api.core.v1.PodStatus.resources",
    "k8s.io.api.core.v1.VolumeProjection.pod_certificate",
    "k8s.io.api.storage.v1.CSIDriverSpec.service_account_token_in_secrets",
}

# Go's JSON leaves out a scalar only when it is a value (not a pointer) field
# tagged omitempty at its zero value, while its protobuf marshaller always
# writes value fields: so a zero read off the wire is "unset" for those fields
# and an explicit value (replicas: 0, automountServiceAccountToken: false,
# storageClassName: "") for pointer and required fields. The proto files don't
# say which fields are pointers. By default optional strings count as values
# (nearly all are) and optional numbers and bools as pointers (keeping a zero
# is harmless where dropping one changes meaning); the lists below correct
# that, as found by having kubectl itself print zero-filled protobuf objects
# (test `protobuf::tests::kubectl::go_zero_values`, which prints both lists).
GO_OMITS_ZERO = set("""
k8s.io.api.apps.v1.DeploymentSpec.minReadySeconds
k8s.io.api.apps.v1.DeploymentSpec.paused
k8s.io.api.apps.v1.DeploymentStatus.availableReplicas
k8s.io.api.apps.v1.DeploymentStatus.observedGeneration
k8s.io.api.apps.v1.DeploymentStatus.readyReplicas
k8s.io.api.apps.v1.DeploymentStatus.replicas
k8s.io.api.apps.v1.DeploymentStatus.unavailableReplicas
k8s.io.api.apps.v1.DeploymentStatus.updatedReplicas
k8s.io.api.batch.v1.JobStatus.active
k8s.io.api.batch.v1.JobStatus.failed
k8s.io.api.batch.v1.JobStatus.succeeded
k8s.io.api.core.v1.AWSElasticBlockStoreVolumeSource.partition
k8s.io.api.core.v1.AWSElasticBlockStoreVolumeSource.readOnly
k8s.io.api.core.v1.AzureFileVolumeSource.readOnly
k8s.io.api.core.v1.CephFSVolumeSource.readOnly
k8s.io.api.core.v1.CinderVolumeSource.readOnly
k8s.io.api.core.v1.Container.stdin
k8s.io.api.core.v1.Container.stdinOnce
k8s.io.api.core.v1.Container.tty
k8s.io.api.core.v1.ContainerPort.hostPort
k8s.io.api.core.v1.EphemeralContainerCommon.stdin
k8s.io.api.core.v1.EphemeralContainerCommon.stdinOnce
k8s.io.api.core.v1.EphemeralContainerCommon.tty
k8s.io.api.core.v1.FCVolumeSource.readOnly
k8s.io.api.core.v1.FlexVolumeSource.readOnly
k8s.io.api.core.v1.GCEPersistentDiskVolumeSource.partition
k8s.io.api.core.v1.GCEPersistentDiskVolumeSource.readOnly
k8s.io.api.core.v1.GlusterfsVolumeSource.readOnly
k8s.io.api.core.v1.ISCSIVolumeSource.chapAuthDiscovery
k8s.io.api.core.v1.ISCSIVolumeSource.chapAuthSession
k8s.io.api.core.v1.ISCSIVolumeSource.readOnly
k8s.io.api.core.v1.LocalObjectReference.name
k8s.io.api.core.v1.NFSVolumeSource.readOnly
k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource.readOnly
k8s.io.api.core.v1.PodSpec.hostIPC
k8s.io.api.core.v1.PodSpec.hostNetwork
k8s.io.api.core.v1.PodSpec.hostPID
k8s.io.api.core.v1.PortworxVolumeSource.readOnly
k8s.io.api.core.v1.Probe.failureThreshold
k8s.io.api.core.v1.Probe.initialDelaySeconds
k8s.io.api.core.v1.Probe.periodSeconds
k8s.io.api.core.v1.Probe.successThreshold
k8s.io.api.core.v1.Probe.timeoutSeconds
k8s.io.api.core.v1.QuobyteVolumeSource.readOnly
k8s.io.api.core.v1.RBDVolumeSource.readOnly
k8s.io.api.core.v1.ScaleIOVolumeSource.readOnly
k8s.io.api.core.v1.ScaleIOVolumeSource.sslEnabled
k8s.io.api.core.v1.ServicePort.nodePort
k8s.io.api.core.v1.ServiceSpec.healthCheckNodePort
k8s.io.api.core.v1.ServiceSpec.publishNotReadyAddresses
k8s.io.api.core.v1.StorageOSVolumeSource.readOnly
k8s.io.api.core.v1.VolumeMount.readOnly
k8s.io.api.networking.v1.ServiceBackendPort.number
k8s.io.api.policy.v1.PodDisruptionBudgetStatus.observedGeneration
k8s.io.api.scheduling.v1.PriorityClass.globalDefault
k8s.io.apimachinery.pkg.apis.meta.v1.Condition.observedGeneration
k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.generation
""".split())
GO_KEEPS_ZERO = set("""
k8s.io.api.batch.v1.CronJobSpec.timeZone
k8s.io.api.batch.v1.JobSpec.completionMode
k8s.io.api.batch.v1.JobSpec.managedBy
k8s.io.api.batch.v1.JobSpec.podReplacementPolicy
k8s.io.api.batch.v1.JobStatus.failedIndexes
k8s.io.api.batch.v1.PodFailurePolicyOnExitCodesRequirement.containerName
k8s.io.api.batch.v1.SuccessPolicyRule.succeededIndexes
k8s.io.api.core.v1.AppArmorProfile.localhostProfile
k8s.io.api.core.v1.AzureDiskVolumeSource.cachingMode
k8s.io.api.core.v1.AzureDiskVolumeSource.fsType
k8s.io.api.core.v1.AzureDiskVolumeSource.kind
k8s.io.api.core.v1.CSIVolumeSource.fsType
k8s.io.api.core.v1.ClusterTrustBundleProjection.name
k8s.io.api.core.v1.ClusterTrustBundleProjection.signerName
k8s.io.api.core.v1.Container.restartPolicy
k8s.io.api.core.v1.EphemeralContainerCommon.restartPolicy
k8s.io.api.core.v1.GRPCAction.service
k8s.io.api.core.v1.HostPathVolumeSource.type
k8s.io.api.core.v1.ISCSIVolumeSource.initiatorName
k8s.io.api.core.v1.LoadBalancerIngress.ipMode
k8s.io.api.core.v1.PersistentVolumeClaimSpec.storageClassName
k8s.io.api.core.v1.PersistentVolumeClaimSpec.volumeAttributesClassName
k8s.io.api.core.v1.PersistentVolumeClaimSpec.volumeMode
k8s.io.api.core.v1.PodDNSConfigOption.value
k8s.io.api.core.v1.PodResourceClaim.resourceClaimName
k8s.io.api.core.v1.PodResourceClaim.resourceClaimTemplateName
k8s.io.api.core.v1.PodSecurityContext.fsGroupChangePolicy
k8s.io.api.core.v1.PodSecurityContext.seLinuxChangePolicy
k8s.io.api.core.v1.PodSecurityContext.supplementalGroupsPolicy
k8s.io.api.core.v1.PodSpec.preemptionPolicy
k8s.io.api.core.v1.PodSpec.runtimeClassName
k8s.io.api.core.v1.PortStatus.error
k8s.io.api.core.v1.SeccompProfile.localhostProfile
k8s.io.api.core.v1.SecurityContext.procMount
k8s.io.api.core.v1.ServicePort.appProtocol
k8s.io.api.core.v1.ServiceSpec.internalTrafficPolicy
k8s.io.api.core.v1.ServiceSpec.ipFamilyPolicy
k8s.io.api.core.v1.ServiceSpec.loadBalancerClass
k8s.io.api.core.v1.ServiceSpec.trafficDistribution
k8s.io.api.core.v1.TopologySpreadConstraint.nodeAffinityPolicy
k8s.io.api.core.v1.TopologySpreadConstraint.nodeTaintsPolicy
k8s.io.api.core.v1.TypedLocalObjectReference.apiGroup
k8s.io.api.core.v1.TypedObjectReference.apiGroup
k8s.io.api.core.v1.TypedObjectReference.namespace
k8s.io.api.core.v1.VolumeMount.mountPropagation
k8s.io.api.core.v1.VolumeMount.recursiveReadOnly
k8s.io.api.core.v1.WindowsSecurityContextOptions.gmsaCredentialSpec
k8s.io.api.core.v1.WindowsSecurityContextOptions.gmsaCredentialSpecName
k8s.io.api.core.v1.WindowsSecurityContextOptions.runAsUserName
k8s.io.api.networking.v1.IngressPortStatus.error
k8s.io.api.networking.v1.IngressSpec.ingressClassName
k8s.io.api.policy.v1.PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy
k8s.io.api.scheduling.v1.PriorityClass.preemptionPolicy
""".split())

OUTPUT = "crates/apiserver/src/protobuf/table.rs"


def registry_dirs():
    roots = []
    if os.environ.get("CARGO_HOME"):
        roots.append(os.path.join(os.environ["CARGO_HOME"], "registry", "src"))
    roots.append(os.path.expanduser("~/.cargo/registry/src"))
    return roots


def find_crate(name, version):
    for root in registry_dirs():
        hits = sorted(glob.glob(os.path.join(root, "*", f"{name}-{version}")))
        if hits:
            return hits[0]
    sys.exit(f"error: {name}-{version} not found under {registry_dirs()} (run `cargo fetch`)")


def norm(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ---------------------------------------------------------------- k8s-pb

PROST_ATTR = re.compile(r'#\[prost\((.*?)\)\]\s*pub\s+(?:r#)?(\w+)\s*:', re.S)


def parse_pb_package(src, pkgdir):
    """Returns {RustName: [(tag, rust_field, kind, repeated, type_path)]}."""
    text = open(os.path.join(src, pkgdir, "mod.rs")).read()
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    structs = {}
    for m in re.finditer(r"^pub struct (\w+) \{(.*?)\}$", text, re.S | re.M):
        name, body = m.group(1), m.group(2)
        attrs = list(PROST_ATTR.finditer(body))
        fields = []
        for i, a in enumerate(attrs):
            spec, field = a.group(1), a.group(2)
            end = attrs[i + 1].start() if i + 1 < len(attrs) else len(body)
            ty = body[a.end():end]
            tag = int(re.search(r'tag\s*=\s*"(\d+)"', spec).group(1))
            parts = [p.strip() for p in re.sub(r'"[^"]*"', '""', spec).split(",")]
            repeated = "repeated" in parts
            kind = parts[0]
            if kind.startswith("btree_map"):
                kind = "map:" + re.search(r'"string,\s*(\w+)"', spec).group(1)
            elif kind.startswith("bytes"):
                kind = "bytes"
            # The message type: the one path not rooted at `::` (::core, ::prost).
            stripped = re.sub(r"(?<![\w])::(?:\w+::)*\w+", "", ty)
            paths = re.findall(r"[A-Za-z_][\w]*(?:::[A-Za-z_]\w*)*", stripped)
            type_path = paths[-1] if kind in ("message", "map:message") else None
            if kind in ("message", "map:message") and len(paths) != 1:
                sys.exit(f"error: can't read the type of {pkgdir} {name}.{field}: {ty!r}")
            fields.append((tag, field, kind, repeated, type_path))
        structs[name] = fields
    return structs


def resolve(pkgdir, path):
    """Resolves a relative Rust path inside k8s-pb to (pkgdir, RustName)."""
    segs = path.split("::")
    mod = pkgdir.split("/")
    while segs and segs[0] == "super":
        segs.pop(0)
        mod.pop()
    if segs and segs[0] == "crate":
        segs.pop(0)
        mod = []
    return "/".join(mod + segs[:-1]), segs[-1]


def proto_package(pkgdir):
    return "k8s.io." + pkgdir.replace("/", ".")


# ---------------------------------------------------------------- k8s-openapi

def parse_openapi(src):
    """Returns {definition name: {"fields": {rust_field: optional}, "json": {rust_field: json}}}."""
    defs = {}
    for path in glob.glob(os.path.join(src, OPENAPI_FEATURE, "**", "*.rs"), recursive=True):
        text = open(path).read()
        m = re.match(r"// Generated from definition (\S+)", text)
        if not m:
            continue
        sm = re.search(r"^pub struct \w+ \{(.*?)^\}", text, re.S | re.M)
        fields = {}
        if sm:
            for fm in re.finditer(r"^    pub (\w+): (.*),$", sm.group(1), re.M):
                fields[fm.group(1)] = fm.group(2).startswith("Option<")
        json = {}
        for jm in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', text):
            json[jm.group(2)] = jm.group(1)
        defs[m.group(1)] = {"fields": fields, "json": json}
    return defs


def openapi_name(proto_pkg):
    # k8s.io.api.core.v1 -> io.k8s.api.core.v1
    return "io.k8s." + proto_pkg[len("k8s.io."):]


# ---------------------------------------------------------------- join

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else OUTPUT
    pb_src = os.path.join(find_crate("k8s-pb", PB_VERSION), "src")
    oa_src = os.path.join(find_crate("k8s-openapi", OPENAPI_VERSION), "src")
    openapi = parse_openapi(oa_src)
    oa_by_pkg = {}
    for d in openapi:
        pkg, _, n = d.rpartition(".")
        oa_by_pkg.setdefault(pkg, {})[n.lower()] = d

    pb = {pkgdir: parse_pb_package(pb_src, pkgdir) for pkgdir in PACKAGES}

    # Proto full name of every k8s-pb struct, and its openapi definition.
    full = {}
    definition = {}
    for pkgdir, structs in pb.items():
        ppkg = proto_package(pkgdir)
        for rust in structs:
            d = oa_by_pkg.get(openapi_name(ppkg), {}).get(rust.lower())
            name = ppkg + "." + (d.rpartition(".")[2] if d else rust)
            full[(pkgdir, rust)] = name
            definition[name] = d

    errors = []
    skipped = []
    messages = {}
    struct = {full[k]: (k[0], pb[k[0]][k[1]]) for k in full}

    def json_index(d):
        oa = openapi[d]
        idx = {}
        for rf, js in oa["json"].items():
            idx[norm(js)] = (js, oa["fields"].get(rf, True))
        for rf, js in oa["json"].items():
            idx.setdefault(norm(rf), (js, oa["fields"].get(rf, True)))
        return idx

    def inlinable(name, idx):
        """Whether every field of message `name` is a JSON field of `idx` (embedding)."""
        pkgdir, fields = struct[name]
        if not fields:
            return False
        for _, f, kind, repeated, tp in fields:
            if norm(f) in idx or f"{name}.{f}" in NEWER:
                continue
            t = full.get(resolve(pkgdir, tp)) if tp else None
            if not (kind == "message" and not repeated and t and inlinable(t, idx)):
                return False
        return True

    def build(name, d, idx):
        pkgdir, fields = struct[name]
        rows = []
        for tag, field, kind, repeated, tp in fields:
            target = full.get(resolve(pkgdir, tp)) if tp else None
            if tp and target is None:
                errors.append(f"{name}.{field}: type {resolve(pkgdir, tp)} is outside the included packages")
                continue
            if f"{name}.{field}" in NEWER:
                newer_seen.add(f"{name}.{field}")
                continue
            hit = idx.get(norm(field))
            if hit:
                rows.append((tag, hit[0], kind, repeated, target, hit[1]))
            elif kind == "message" and not repeated and inlinable(target, idx):
                rows.append((tag, "", kind, False, target, True))
                if definition[target] is None:
                    inline_ctx.setdefault(target, set()).add(d)
            else:
                errors.append(f"{name}.{field} (tag {tag}) has no JSON field in {d}")
        return rows

    newer_seen = set()
    inline_ctx = {}
    for name in sorted(struct):
        if name in SPECIAL:
            pkgdir, fields = struct[name]
            messages[name] = [(t, f, k, r, full.get(resolve(pkgdir, tp)) if tp else None, False)
                              for t, f, k, r, tp in fields]
        elif definition[name] is not None:
            messages[name] = build(name, definition[name], json_index(definition[name]))
    # Embedded structs with no JSON type of their own take their parent's names
    # (repeated: an embedded struct may embed another).
    done = set()
    while set(inline_ctx) - done:
        for name in sorted(set(inline_ctx) - done):
            done.add(name)
            builds = {d: build(name, d, json_index(d)) for d in sorted(inline_ctx[name])}
            if len({repr(b) for b in builds.values()}) != 1:
                errors.append(f"{name} is embedded in {sorted(builds)} with different JSON names")
            messages[name] = next(iter(builds.values()))
    skipped = sorted(n for n in struct if n not in messages)
    for stale in sorted(NEWER - newer_seen):
        errors.append(f"NEWER lists {stale}, which k8s-pb no longer has (or has a JSON name for)")

    # Every referenced message must be in the table.
    for name, rows in messages.items():
        for row in rows:
            target = row[4]
            if target is None:
                continue
            if target not in messages:
                errors.append(f"{name} field {row[1]!r}: type {target} has no JSON definition")

    if errors:
        print("\n".join("error: " + e for e in errors), file=sys.stderr)
        sys.exit(1)

    lines = [
        "// @generated by scripts/gen-protobuf-table.py -- do not edit; rerun the script.",
        f"// Source: k8s-pb {PB_VERSION} (field numbers and wire kinds, from Kubernetes' generated.proto)",
        f"// joined with k8s-openapi {OPENAPI_VERSION} ({OPENAPI_FEATURE}: JSON names, optional fields).",
        "// Each field: (tag, JSON name (\"\" = embedded struct), kind, flags REP|OPT|ZERO), in Go struct order.",
        "",
        "use super::schema::{Kind::*, Message, OPT, REP, ZERO};",
        "",
        "#[rustfmt::skip]",
        "pub static MESSAGES: &[Message] = &[",
    ]
    used_lists = set()
    for name in sorted(messages):
        rows = messages[name]  # declaration order: Go's struct order, which Go's JSON keeps
        cells = []
        for tag, js, kind, repeated, target, optional in rows:
            key = f"{name}.{js}"
            scalar = kind in ("string", "bool", "int32", "int64", "double", "bytes") and not repeated
            zero = scalar and (key in GO_OMITS_ZERO or (
                key not in GO_KEEPS_ZERO and optional and kind in ("string", "bytes")))
            used_lists.add(key)
            flags = "|".join(f for f, on in (("REP", repeated), ("OPT", optional), ("ZERO", zero)) if on) or "0"
            k = {
                "string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64",
                "bytes": "Bytes", "map:string": "MapStr", "map:bytes": "MapBytes",
            }.get(kind)
            if k is None:
                k = f'Msg("{target}")' if kind == "message" else f'MapMsg("{target}")'
            cells.append(f'({tag}, "{js}", {k}, {flags})')
        lines.append(f'    Message {{ name: "{name}", fields: &[{", ".join(cells)}] }},')
    lines.append("];")
    stale = sorted((GO_OMITS_ZERO | GO_KEEPS_ZERO) - used_lists)
    if stale:
        sys.exit("error: GO_OMITS_ZERO/GO_KEEPS_ZERO name fields not in the table: " + " ".join(stale))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(messages)} messages; {len(skipped)} proto messages with no JSON type left out:",
          file=sys.stderr)
    print("  " + " ".join(sorted(s.rpartition(".")[2] for s in skipped)), file=sys.stderr)


if __name__ == "__main__":
    main()
