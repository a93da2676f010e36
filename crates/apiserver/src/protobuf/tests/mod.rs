mod kubectl;

use serde_json::{json, Value};

use super::schema::{self, Kind, REP};
use super::table::MESSAGES;
use super::{decode, message_for, wire};

// ---------------------------------------------------------------- encoding helpers

pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    varint(buf, u64::from(tag) << 3);
    varint(buf, v);
}

pub fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    varint(buf, u64::from(tag) << 3 | 2);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A body: magic + runtime.Unknown{typeMeta, raw}.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    put_bytes(&mut tm, 1, api_version.as_bytes());
    put_bytes(&mut tm, 2, kind.as_bytes());
    let mut out = b"k8s\0".to_vec();
    put_bytes(&mut out, 1, &tm);
    put_bytes(&mut out, 2, raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// `{"name": n}` as an ObjectMeta.
fn meta(name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    put_bytes(&mut m, 1, name.as_bytes());
    m
}

/// Go's JSON has `creationTimestamp: null` and such; the decoder leaves nulls out.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------- the table

#[test]
fn table_is_sorted_and_closed() {
    // Fields are in Go struct order, so tags are unique but not sorted.
    for w in MESSAGES.windows(2) {
        assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
    }
    for m in MESSAGES {
        let mut tags: Vec<u32> = m.fields.iter().map(|f| f.0).collect();
        tags.sort_unstable();
        assert!(tags.windows(2).all(|w| w[0] < w[1]), "{}: a tag used twice", m.name);
        for &(tag, json, kind, flags) in m.fields {
            if let Kind::Msg(t) | Kind::MapMsg(t) = kind {
                assert!(schema::message(t).is_some(), "{}.{json} ({tag}) refers to missing {t}", m.name);
            }
            if json.is_empty() {
                assert!(matches!(kind, Kind::Msg(_)) && flags & REP == 0, "{}: bad embedded field {tag}", m.name);
            }
        }
    }
    // Spot checks of the join: odd JSON names, embedded structs, maps of bytes.
    let field = |m: &str, tag: u32| schema::message(m).unwrap().field(tag).unwrap();
    assert_eq!(field("k8s.io.api.core.v1.ServiceSpec", 18).1, "clusterIPs");
    assert_eq!(field("k8s.io.api.core.v1.PodStatus", 6).1, "podIP");
    assert_eq!(field("k8s.io.api.core.v1.Volume", 2).1, "");
    assert_eq!(field("k8s.io.api.core.v1.Secret", 2).2, Kind::MapBytes);
    assert_eq!(field("k8s.io.api.core.v1.PodSpec", 35).1, "setHostnameAsFQDN");
    assert!(schema::message("k8s.io.api.storage.v1.CSIDriver").is_some());
}

#[test]
fn kinds_map_to_messages() {
    let m = |av, k| message_for(av, k);
    assert_eq!(m("v1", "ConfigMap"), Some("k8s.io.api.core.v1.ConfigMap"));
    assert_eq!(m("apps/v1", "Deployment"), Some("k8s.io.api.apps.v1.Deployment"));
    assert_eq!(m("networking.k8s.io/v1", "Ingress"), Some("k8s.io.api.networking.v1.Ingress"));
    assert_eq!(m("rbac.authorization.k8s.io/v1", "Role"), Some("k8s.io.api.rbac.v1.Role"));
    assert_eq!(m("autoscaling/v2", "HorizontalPodAutoscaler"), Some("k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler"));
    assert_eq!(m("autoscaling/v1", "Scale"), Some("k8s.io.api.autoscaling.v1.Scale"));
    assert_eq!(m("policy/v1", "Eviction"), Some("k8s.io.api.policy.v1.Eviction"));
    assert_eq!(m("storage.k8s.io/v1", "CSIDriver"), Some("k8s.io.api.storage.v1.CSIDriver"));
    for av in ["v1", "meta.k8s.io/v1", "apps/v1", "policy/v1"] {
        assert_eq!(m(av, "DeleteOptions"), Some("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"), "{av}");
    }
    assert_eq!(m("v1", "Status"), Some("k8s.io.apimachinery.pkg.apis.meta.v1.Status"));
    assert_eq!(m("example.com/v1", "Widget"), None);
    assert_eq!(m("v1", "Widget"), None);
}

// ---------------------------------------------------------------- wire format

#[test]
fn scalars_repeated_and_unknown_fields() {
    // ContainerPort{containerPort: -1 (a 10-byte varint), hostPort: 0, name: ""}, plus
    // an unknown field 99 of each wire type.
    let mut port = Vec::new();
    put_varint(&mut port, 3, -1i32 as i64 as u64);
    put_varint(&mut port, 2, 0);
    put_bytes(&mut port, 1, b"");
    put_varint(&mut port, 99, 7);
    put_bytes(&mut port, 99, b"junk");
    varint(&mut port, 99 << 3 | 1);
    port.extend_from_slice(&[0; 8]);
    varint(&mut port, 99 << 3 | 5);
    port.extend_from_slice(&[0; 4]);
    let v = wire::message("k8s.io.api.core.v1.ContainerPort", &port, 0).unwrap();
    assert_eq!(v["containerPort"], json!(-1));
    assert!(v.get("name").is_none(), "an empty optional string is unset: {v}");

    // Repeated int64, packed and unpacked; repeated strings keep "" items.
    let mut caps = Vec::new();
    let mut packed = Vec::new();
    varint(&mut packed, 1);
    varint(&mut packed, u64::MAX); // -1
    put_bytes(&mut caps, 4, &packed); // PodSecurityContext.supplementalGroups
    put_varint(&mut caps, 4, 300);
    let v = wire::message("k8s.io.api.core.v1.PodSecurityContext", &caps, 0).unwrap();
    assert_eq!(v["supplementalGroups"], json!([1, -1, 300]));
    let mut c = Vec::new();
    put_bytes(&mut c, 1, b"app");
    for a in ["sleep", "", "1"] {
        put_bytes(&mut c, 3, a.as_bytes());
    }
    let v = wire::message("k8s.io.api.core.v1.Container", &c, 0).unwrap();
    assert_eq!(v, json!({"name": "app", "command": ["sleep", "", "1"]}));
}

#[test]
fn maps_bytes_and_embedded_structs() {
    // Secret{data: {k: "\x00\xff"}, stringData: {s: "v"}}
    let mut s = Vec::new();
    put_bytes(&mut s, 1, &meta("sec"));
    let mut e = Vec::new();
    put_bytes(&mut e, 1, b"k");
    put_bytes(&mut e, 2, &[0, 0xff]);
    put_bytes(&mut s, 2, &e);
    let mut e = Vec::new();
    put_bytes(&mut e, 1, b"s");
    put_bytes(&mut e, 2, b"v");
    put_bytes(&mut s, 4, &e);
    let v = decode(&envelope("v1", "Secret", &s)).unwrap();
    assert_eq!(v, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
        "data": {"k": "AP8="}, "stringData": {"s": "v"}}));

    // Volume{name, VolumeSource{emptyDir{sizeLimit: 1Gi}}}: the source's fields are the volume's.
    let mut q = Vec::new();
    put_bytes(&mut q, 1, b"1Gi");
    let mut ed = Vec::new();
    put_bytes(&mut ed, 2, &q);
    let mut src = Vec::new();
    put_bytes(&mut src, 2, &ed);
    let mut vol = Vec::new();
    put_bytes(&mut vol, 1, b"scratch");
    put_bytes(&mut vol, 2, &src);
    let v = wire::message("k8s.io.api.core.v1.Volume", &vol, 0).unwrap();
    assert_eq!(v, json!({"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}));

    // ResourceRequirements{limits: {cpu: <empty Quantity>}}, and an empty message is `{}`.
    let mut e = Vec::new();
    put_bytes(&mut e, 1, b"cpu");
    put_bytes(&mut e, 2, &q[..0]);
    let mut rr = Vec::new();
    put_bytes(&mut rr, 1, &e);
    let v = wire::message("k8s.io.api.core.v1.ResourceRequirements", &rr, 0).unwrap();
    assert_eq!(v, json!({"limits": {"cpu": "0"}}));
    let mut c = Vec::new();
    put_bytes(&mut c, 8, b"");
    let v = wire::message("k8s.io.api.core.v1.Container", &c, 0).unwrap();
    assert_eq!(v, json!({"resources": {}}));
}

#[test]
fn special_messages() {
    let msg = |name: &str, fields: &[(u32, u64)], strs: &[(u32, &[u8])]| {
        let mut b = Vec::new();
        fields.iter().for_each(|&(t, v)| put_varint(&mut b, t, v));
        strs.iter().for_each(|&(t, s)| put_bytes(&mut b, t, s));
        wire::message(&format!("k8s.io.apimachinery.pkg.{name}"), &b, 0).unwrap()
    };
    assert_eq!(msg("apis.meta.v1.Time", &[(1, 1_700_000_000), (2, 5)], &[]), json!("2023-11-14T22:13:20Z"));
    assert_eq!(msg("apis.meta.v1.Time", &[(1, 0)], &[]), json!("1970-01-01T00:00:00Z"));
    assert_eq!(msg("apis.meta.v1.Time", &[], &[]), Value::Null);
    assert_eq!(msg("apis.meta.v1.MicroTime", &[(1, 1_700_000_000), (2, 123_456_789)], &[]), json!("2023-11-14T22:13:20.123456Z"));
    assert_eq!(msg("apis.meta.v1.MicroTime", &[(1, 1_700_000_000)], &[]), json!("2023-11-14T22:13:20.000000Z"));
    assert_eq!(msg("apis.meta.v1.Duration", &[(1, 60_000_000_000)], &[]), json!("1m0s"));
    assert_eq!(msg("api.resource.Quantity", &[], &[(1, b"100Mi")]), json!("100Mi"));
    assert_eq!(msg("util.intstr.IntOrString", &[(1, 0), (2, 8080)], &[]), json!(8080));
    assert_eq!(msg("util.intstr.IntOrString", &[(1, 1)], &[(3, b"http")]), json!("http"));
    assert_eq!(msg("util.intstr.IntOrString", &[], &[]), json!(0));
    assert_eq!(msg("runtime.RawExtension", &[], &[(1, br#"{"a":[1]}"#)]), json!({"a": [1]}));
    assert_eq!(msg("apis.meta.v1.FieldsV1", &[], &[(1, br#"{"f:data":{}}"#)]), json!({"f:data": {}}));
    // A RawExtension may hold a protobuf object of its own.
    let mut cm = Vec::new();
    put_bytes(&mut cm, 1, &meta("cm"));
    let inner = envelope("v1", "ConfigMap", &cm);
    assert_eq!(msg("runtime.RawExtension", &[], &[(1, &inner)]),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}));

    for (ns, s) in [(0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (2_000_000, "2ms"), (1_000_000_000, "1s"),
        (90_500_000_000, "1m30.5s"), (3_600_000_000_000, "1h0m0s"), (-5_000_000_000, "-5s")] {
        assert_eq!(wire::go_duration(ns), s);
    }
}

#[test]
fn eviction_and_delete_options() {
    // DeleteOptions{gracePeriodSeconds: 0, preconditions{uid}, propagationPolicy, dryRun: [All]}:
    // every field is a Go pointer, so the zero grace period is kept.
    let mut pre = Vec::new();
    put_bytes(&mut pre, 1, b"u-1");
    let mut opts = Vec::new();
    put_varint(&mut opts, 1, 0);
    put_bytes(&mut opts, 2, &pre);
    put_bytes(&mut opts, 4, b"Foreground");
    put_bytes(&mut opts, 5, b"All");
    let mut ev = Vec::new();
    put_bytes(&mut ev, 1, &meta("web-1"));
    put_bytes(&mut ev, 2, &opts);
    let v = decode(&envelope("policy/v1", "Eviction", &ev)).unwrap();
    assert_eq!(v, json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1"},
        "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"},
            "propagationPolicy": "Foreground", "dryRun": ["All"]}}));
    let v = decode(&envelope("v1", "DeleteOptions", &opts)).unwrap();
    assert_eq!(v["kind"], "DeleteOptions");
    assert_eq!(v["gracePeriodSeconds"], 0);
}

#[test]
fn bad_bodies_are_errors() {
    assert!(decode(b"{\"kind\":\"Pod\"}").unwrap_err().contains("prefix"));
    assert!(decode(b"k8s\0").unwrap_err().contains("no kind"));
    assert!(decode(&envelope("example.com/v1", "Widget", b"")).unwrap_err().contains("Widget"));
    // Truncated: a length running past the end, a varint cut short.
    let mut body = envelope("v1", "ConfigMap", &meta("cm"));
    body.truncate(body.len() - 6);
    assert!(decode(&body).is_err());
    assert!(decode(&envelope("v1", "ConfigMap", &[0x08, 0x80])).is_err());
    // A string field sent as a varint.
    assert!(decode(&envelope("v1", "ConfigMap", &[0x0a, 2, 0x08, 1])).is_err());
    // Gzip and other encodings aren't supported.
    let mut enc = envelope("v1", "ConfigMap", b"");
    put_bytes(&mut enc, 3, b"gzip");
    assert!(decode(&enc).unwrap_err().contains("gzip"));
    // Absurd nesting is refused rather than overflowing the stack.
    // (WatchEvent{object: RawExtension{raw: <a WatchEvent>}} ...)
    let mut body = envelope("v1", "ConfigMap", b"");
    for _ in 0..100 {
        let mut ext = Vec::new();
        put_bytes(&mut ext, 1, &body);
        let mut ev = Vec::new();
        put_bytes(&mut ev, 2, &ext);
        body = envelope("v1", "WatchEvent", &ev);
    }
    assert!(decode(&body).unwrap_err().contains("too deeply"));
}

/// Bodies kubectl v1.32 sent, with the JSON kubectl itself printed for them
/// (see kubectl.rs, `capture_fixtures`).
#[test]
fn decodes_captured_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protobuf/testdata");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pb") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let mut want: Value = serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        strip_nulls(&mut want);
        let got = decode(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{}", path.display());
        n += 1;
    }
    assert!(n >= 3, "fixtures missing from {}", dir.display());
}
