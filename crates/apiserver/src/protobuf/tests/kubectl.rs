//! Against the real kubectl: it sends protobuf bodies to a fake API server
//! (plain HTTP, recording them), and, handed a protobuf object back, prints
//! it as JSON with Go's own types: the reference the decoder must match.
//! Skipped when /usr/bin/kubectl is missing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::super::schema::{self, Kind, REP, ZERO};
use super::super::{decode, message_for, CONTENT_TYPE};
use super::{envelope, put_bytes, put_varint, strip_nulls};

const KUBECTL: &str = "/usr/bin/kubectl";

/// What the fake server answers to a protobuf POST.
#[derive(Clone)]
enum Reply {
    /// 500, as a server that can't decode it.
    Fail,
    /// 201 with the request body: kubectl prints its own reading of it.
    Echo,
    /// 201 with this protobuf body.
    Body(Vec<u8>),
}

/// The reply to give, and the (content type, body) of each POST/PUT/DELETE seen.
type State = Mutex<(Reply, Vec<(String, Vec<u8>)>)>;

struct Fake {
    url: String,
    cache: tempfile::TempDir,
    state: Arc<State>,
}

/// The kinds the commands below need discovery for.
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "pods", "Pod", true),
    ("v1", "services", "Service", true),
    ("v1", "namespaces", "Namespace", false),
    ("v1", "configmaps", "ConfigMap", true),
    ("v1", "secrets", "Secret", true),
    ("v1", "serviceaccounts", "ServiceAccount", true),
    ("v1", "resourcequotas", "ResourceQuota", true),
    ("apps/v1", "deployments", "Deployment", true),
    ("batch/v1", "jobs", "Job", true),
    ("batch/v1", "cronjobs", "CronJob", true),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", true),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", true),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", false),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", false),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", true),
    ("networking.k8s.io/v1", "ingresses", "Ingress", true),
    ("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", false),
];

impl Fake {
    fn start() -> Option<Fake> {
        if !Path::new(KUBECTL).exists() {
            eprintln!("skipping: {KUBECTL} is missing");
            return None;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new((Reply::Fail, Vec::new())));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Some(Fake { url, cache: tempfile::tempdir().unwrap(), state })
    }

    /// Runs kubectl with `reply` set; returns its stdout and the protobuf body it POSTed.
    fn run(&self, args: &[&str], reply: Reply) -> (String, Vec<u8>) {
        *self.state.lock().unwrap() = (reply, Vec::new());
        let out = Command::new(KUBECTL)
            .arg(format!("--server={}", self.url))
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .arg("--request-timeout=30s")
            .args(args)
            .env("KUBECONFIG", self.cache.path().join("none"))
            .env("HOME", self.cache.path())
            .output()
            .unwrap();
        let posts = std::mem::take(&mut self.state.lock().unwrap().1);
        let (ct, body) = posts.into_iter().last().unwrap_or_else(|| {
            panic!("kubectl {args:?} sent no body: {}", String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(ct, CONTENT_TYPE, "kubectl {args:?}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), body)
    }
}

fn serve(conn: TcpStream, state: &State) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut it = line.split_whitespace();
    let (method, target) = (it.next().unwrap_or("").to_string(), it.next().unwrap_or("").to_string());
    let (mut len, mut ct) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "content-type" => ct = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let path = target.split('?').next().unwrap_or("");
    let (status, rct, out): (u16, &str, Vec<u8>) = if method == "GET" {
        match discovery(path) {
            Some(v) => (200, "application/json", v.to_string().into_bytes()),
            None => (404, "application/json", b"{}".to_vec()),
        }
    } else {
        let mut st = state.lock().unwrap();
        st.1.push((ct.clone(), body.clone()));
        match (&st.0, ct == CONTENT_TYPE) {
            (Reply::Echo, true) => (201, CONTENT_TYPE, body),
            (Reply::Body(b), true) => (201, CONTENT_TYPE, b.clone()),
            _ => (500, "application/json", br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}"#.to_vec()),
        }
    };
    let mut w = conn;
    let head = format!("HTTP/1.1 {status} X\r\nContent-Type: {rct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", out.len());
    let _ = w.write_all(head.as_bytes()).and_then(|_| w.write_all(&out));
}

fn discovery(path: &str) -> Option<Value> {
    let gvs: Vec<&str> = RESOURCES.iter().map(|r| r.0).filter(|gv| gv.contains('/')).collect();
    Some(match path {
        "/version" => json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"]}),
        "/apis" => {
            let mut groups: Vec<Value> = Vec::new();
            for gv in gvs {
                let (g, v) = gv.split_once('/').unwrap();
                if groups.iter().all(|x| x["name"] != g) {
                    let ver = json!({"groupVersion": gv, "version": v});
                    groups.push(json!({"name": g, "versions": [ver], "preferredVersion": ver}));
                }
            }
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        p => {
            let gv = p.strip_prefix("/api/").or_else(|| p.strip_prefix("/apis/"))?;
            let rs: Vec<Value> = RESOURCES.iter().filter(|r| r.0 == gv).map(|&(_, plural, kind, ns)| {
                json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": ns, "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            }).collect();
            if rs.is_empty() {
                return None;
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rs})
        }
    })
}

/// (fixture name, kubectl arguments, apiVersion, kind).
const COMMANDS: &[(&str, &[&str], &str, &str)] = &[
    ("configmap", &["create", "configmap", "x", "--from-literal=a=b", "--from-literal=empty="], "v1", "ConfigMap"),
    ("namespace", &["create", "namespace", "nsx"], "v1", "Namespace"),
    ("secret", &["create", "secret", "generic", "sec", "--from-literal=k=v", "--type=Opaque"], "v1", "Secret"),
    ("deployment", &["create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80"], "apps/v1", "Deployment"),
    ("service", &["create", "service", "clusterip", "s", "--tcp=80:8080"], "v1", "Service"),
    ("job", &["create", "job", "j", "--image=busybox", "--", "sleep", "1"], "batch/v1", "Job"),
    ("cronjob", &["create", "cronjob", "cj", "--image=busybox", "--schedule=*/1 * * * *", "--", "date"], "batch/v1", "CronJob"),
    ("role", &["create", "role", "r", "--verb=get,list", "--resource=pods,deployments.apps"], "rbac.authorization.k8s.io/v1", "Role"),
    ("rolebinding", &["create", "rolebinding", "rb", "--role=r", "--user=u", "--serviceaccount=default:sa"], "rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("clusterrole", &["create", "clusterrole", "cr", "--verb=get", "--non-resource-url=/logs/*"], "rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("clusterrolebinding", &["create", "clusterrolebinding", "crb", "--clusterrole=cr", "--group=g"], "rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("quota", &["create", "quota", "q", "--hard=pods=2,requests.cpu=500m,requests.memory=1Gi", "--scopes=BestEffort"], "v1", "ResourceQuota"),
    ("priorityclass", &["create", "priorityclass", "pc", "--value=-5", "--description=low"], "scheduling.k8s.io/v1", "PriorityClass"),
    ("pdb", &["create", "pdb", "p", "--selector=a=b", "--min-available=50%"], "policy/v1", "PodDisruptionBudget"),
    ("ingress", &["create", "ingress", "i", "--rule=foo.com/bar*=svc:http,tls=cert", "--class=nginx"], "networking.k8s.io/v1", "Ingress"),
    ("serviceaccount", &["create", "serviceaccount", "sa"], "v1", "ServiceAccount"),
];

/// `args` with `-o json` (before a `--`, which starts a container's command).
fn with_json_output<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    [&args[..at], &["-o", "json"], &args[at..]].concat()
}

/// Every protobuf body kubectl sends for these commands decodes to exactly the
/// JSON kubectl prints for it.
#[test]
fn kubectl_bodies_decode_like_kubectl() {
    let Some(fake) = Fake::start() else { return };
    let mut got = BTreeMap::new();
    for &(name, args, api_version, kind) in COMMANDS {
        let args = with_json_output(args);
        let (stdout, body) = fake.run(&args, Reply::Echo);
        let mut want: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"));
        strip_nulls(&mut want);
        let v = decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v, want, "{name}");
        assert_eq!((v["apiVersion"].as_str(), v["kind"].as_str()), (Some(api_version), Some(kind)));
        got.insert(name, v);
    }
    // And the values are the ones asked for.
    assert_eq!(got["configmap"]["data"], json!({"a": "b", "empty": ""}));
    assert_eq!(got["secret"]["data"], json!({"k": "dg=="}));
    assert_eq!(got["secret"]["type"], "Opaque");
    let d = &got["deployment"];
    assert_eq!(d["spec"]["replicas"], 2);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("nginx"), Some("nginx")));
    assert_eq!(c["ports"], json!([{"containerPort": 80}]));
    assert_eq!(got["service"]["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]));
    assert_eq!(got["cronjob"]["spec"]["schedule"], "*/1 * * * *");
    assert_eq!(got["job"]["spec"]["template"]["spec"]["containers"][0]["command"], json!(["sleep", "1"]));
    assert_eq!(got["priorityclass"]["value"], -5);
    assert_eq!(got["pdb"]["spec"]["minAvailable"], "50%");
    assert_eq!(got["quota"]["spec"]["hard"], json!({"pods": "2", "requests.cpu": "500m", "requests.memory": "1Gi"}));
    assert_eq!(got["namespace"]["metadata"], json!({"name": "nsx"}));
}

/// kubectl create token: a TokenRequest (authentication/v1) with a pointer zero.
#[test]
fn kubectl_token_request() {
    let Some(fake) = Fake::start() else { return };
    let (_, body) = fake.run(&["create", "token", "sa", "--duration=10m", "--audience=a", "--audience=b"], Reply::Fail);
    let v = decode(&body).unwrap();
    assert_eq!(v["kind"], "TokenRequest");
    assert_eq!(v["spec"]["audiences"], json!(["a", "b"]));
    assert_eq!(v["spec"]["expirationSeconds"], 600);
}

/// Rewrites testdata/ from kubectl: `cargo test -p apiserver protobuf -- --ignored capture`.
#[test]
#[ignore]
fn capture_fixtures() {
    let Some(fake) = Fake::start() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protobuf/testdata");
    std::fs::create_dir_all(&dir).unwrap();
    for &(name, args, _, _) in COMMANDS {
        if !["configmap", "secret", "deployment", "service", "cronjob"].contains(&name) {
            continue;
        }
        let args = with_json_output(args);
        let (stdout, body) = fake.run(&args, Reply::Echo);
        std::fs::write(dir.join(format!("{name}.pb")), &body).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), stdout).unwrap();
    }
}

/// A message with every field set to its zero value ("", 0, false) or, with
/// `one`, to "x", 1, true; every message field present, every list and map
/// with one such element.
fn filled(name: &str, one: bool, stack: &mut Vec<String>) -> Vec<u8> {
    let (s, n): (&[u8], u64) = if one { (b"x", 1) } else { (b"", 0) };
    let mut b = Vec::new();
    match name.rsplit('.').next().unwrap() {
        "Time" | "MicroTime" => put_varint(&mut b, 1, 1),
        "Duration" => put_varint(&mut b, 1, 1_000_000_000),
        "Quantity" => put_bytes(&mut b, 1, b"1"),
        "IntOrString" => put_varint(&mut b, 2, 1),
        "RawExtension" | "FieldsV1" => put_bytes(&mut b, 1, b"{}"),
        "ExtraValue" | "Verbs" => put_bytes(&mut b, 1, b"x"),
        _ => {
            stack.push(name.to_string());
            for &(tag, _, kind, _) in schema::message(name).unwrap().fields {
                match kind {
                    Kind::Str | Kind::Bytes => put_bytes(&mut b, tag, s),
                    Kind::Bool | Kind::I32 | Kind::I64 => put_varint(&mut b, tag, n),
                    Kind::F64 => {
                        super::varint(&mut b, u64::from(tag) << 3 | 1);
                        b.extend_from_slice(&(n as f64).to_le_bytes());
                    }
                    Kind::Msg(t) if !stack.iter().any(|s| s == t) => put_bytes(&mut b, tag, &filled(t, one, stack)),
                    Kind::Msg(_) | Kind::MapMsg(_) => {}
                    Kind::MapStr | Kind::MapBytes => {
                        let mut e = Vec::new();
                        put_bytes(&mut e, 1, b"k");
                        put_bytes(&mut e, 2, s);
                        put_bytes(&mut b, tag, &e);
                    }
                }
                if let Kind::MapMsg(t) = kind {
                    let mut e = Vec::new();
                    put_bytes(&mut e, 1, b"k");
                    put_bytes(&mut e, 2, &filled(t, one, stack));
                    put_bytes(&mut b, tag, &e);
                }
            }
            stack.pop();
        }
    }
    b
}

/// For each singular scalar field of `name` reachable in `v`: whether Go kept its zero.
fn kept_zeros(name: &str, v: &Value, out: &mut BTreeMap<String, bool>) {
    let (Some(m), Some(obj)) = (schema::message(name), v.as_object()) else { return };
    for &(_, json, kind, flags) in m.fields {
        let child = obj.get(json);
        match kind {
            Kind::Msg(t) if json.is_empty() => kept_zeros(t, v, out),
            Kind::Msg(t) if flags & REP != 0 => child.and_then(|c| c.get(0)).iter().for_each(|c| kept_zeros(t, c, out)),
            Kind::Msg(t) => child.iter().for_each(|c| kept_zeros(t, c, out)),
            Kind::MapMsg(t) => child.and_then(|c| c.get("k")).iter().for_each(|c| kept_zeros(t, c, out)),
            Kind::MapStr | Kind::MapBytes => {}
            _ if flags & REP != 0 => {}
            _ => {
                out.entry(format!("{name}.{json}")).or_insert(child.is_some());
            }
        }
    }
}

/// Which zeros Go's JSON keeps (pointer and required fields) and which it
/// leaves out (omitempty values), for everything reachable from the kinds
/// kubectl creates, must be what the table's ZERO flags say. On a mismatch
/// this prints the entries to add to the generator's GO_OMITS_ZERO /
/// GO_KEEPS_ZERO lists.
#[test]
fn go_zero_values() {
    let Some(fake) = Fake::start() else { return };
    let (mut kept, mut known) = (BTreeMap::new(), BTreeMap::new());
    let mut diffs = Vec::new();
    for &(name, args, api_version, kind) in COMMANDS {
        let msg = message_for(api_version, kind).unwrap();
        let mut printed = Vec::new();
        for one in [true, false] {
            let body = envelope(api_version, kind, &filled(msg, one, &mut Vec::new()));
            let (stdout, _) = fake.run(&with_json_output(args), Reply::Body(body.clone()));
            let want: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"));
            printed.push((body, want));
        }
        // Fields kubectl v1.32 doesn't know (newer ones) it drops whatever their value.
        let shape = printed[0].1.clone();
        kept_zeros(msg, &shape, &mut known);
        kept_zeros(msg, &printed[1].1, &mut kept);
        for (body, mut want) in printed {
            strip_nulls(&mut want);
            let mut got = decode(&body).unwrap();
            prune(&mut got, &shape);
            if got != want {
                diffs.push(format!("{name}: decoded {got}\nkubectl {want}"));
            }
        }
    }
    let (mut omits, mut keeps) = (Vec::new(), Vec::new());
    for (field, go_kept) in &kept {
        if known.get(field) != Some(&true) {
            continue;
        }
        let (msg, json) = field.rsplit_once('.').unwrap();
        let flags = schema::message(msg).unwrap().fields.iter().find(|f| f.1 == json).unwrap().3;
        match (go_kept, flags & ZERO != 0) {
            (true, true) => keeps.push(field.as_str()),
            (false, false) => omits.push(field.as_str()),
            _ => {}
        }
    }
    if !omits.is_empty() || !keeps.is_empty() {
        eprintln!("add to GO_OMITS_ZERO:\n{}\nadd to GO_KEEPS_ZERO:\n{}", omits.join("\n"), keeps.join("\n"));
    }
    assert!(omits.is_empty() && keeps.is_empty(), "{} zero-value flags differ from Go's", omits.len() + keeps.len());
    assert!(diffs.is_empty(), "decoded objects differ from kubectl's JSON:\n{}", diffs.join("\n"));
    assert!(kept.len() > 400, "only {} fields probed", kept.len());
}

/// Drops from `v` what isn't in `shape` (the same object as kubectl printed it).
fn prune(v: &mut Value, shape: &Value) {
    match (v, shape) {
        (Value::Object(m), Value::Object(s)) => {
            m.retain(|k, _| s.contains_key(k));
            m.iter_mut().for_each(|(k, v)| prune(v, &s[k]));
        }
        (Value::Array(a), Value::Array(s)) if !s.is_empty() => a.iter_mut().for_each(|v| prune(v, &s[0])),
        _ => {}
    }
}
