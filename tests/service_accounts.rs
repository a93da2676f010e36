//! Authentication with bearer tokens and pod identity, through the real
//! kubectl and curl: `kubectl create token` (TokenRequest) tokens, bound
//! tokens refused once their pod is gone, static and bootstrap tokens,
//! legacy token Secrets, OIDC discovery, and the ServiceAccount admission
//! plugin mounting a working token into a real container. One server with
//! its node agent for all of it; needs root (as CI runs).

use std::process::Command;

use e2e::{eventually, registry_with_busybox, Server};
use serde_json::Value;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `curl` to the server with `token` (None: no credentials); (status, body).
fn curl(s: &Server, token: Option<&str>, path: &str) -> (u16, String) {
    let ca = s.dir.path().join("server/tls/ca.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--cacert"]).arg(&ca);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(format!("https://127.0.0.1:{}{path}", s.port)).output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn assert_unauthorized(s: &Server, token: Option<&str>, what: &str) {
    let (code, body) = curl(s, token, "/api/v1/namespaces/default/pods");
    assert_eq!(code, 401, "{what}: {body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str(), status["code"].as_i64()), (Some("Status"), Some("Unauthorized"), Some(401)), "{what}: {body}");
}

fn lists_pods(s: &Server, token: &str) -> bool {
    let (code, body) = curl(s, Some(token), "/api/v1/namespaces/default/pods");
    code == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["kind"] == "PodList")
}

#[test]
fn tokens_authenticate_and_pods_get_their_identity() {
    let (_reg, image) = registry_with_busybox();
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("tokens.csv");
    std::fs::write(&token_file, "static-e2e-token,alice,1001,\"devs,ops\"\n").unwrap();
    let s = Server::start_node_with(&["--token-auth-file", token_file.to_str().unwrap()]);
    s.wait_node_ready();
    eventually(30, "the default ServiceAccount", || s.kubectl(&["get", "sa", "default"]).ok().then_some(()));

    // kubectl create token: a working token (no RBAC yet, so it may list pods).
    let token = s.ok(&["create", "token", "default"]).trim().to_string();
    assert!(lists_pods(&s, &token), "a TokenRequest token lists pods");
    let short = s.ok(&["create", "token", "default", "--duration", "10m"]).trim().to_string();
    assert!(lists_pods(&s, &short));
    let err = s.fails(&["create", "token", "default", "--duration", "1m"]);
    assert!(err.contains("may not specify a duration less than 10 minutes"), "{err}");
    let vault = s.ok(&["create", "token", "default", "--audience", "vault"]).trim().to_string();
    assert_unauthorized(&s, Some(&vault), "a token for another audience");
    assert_unauthorized(&s, Some(&format!("{token}x")), "a tampered signature");
    assert_unauthorized(&s, Some("nonsense"), "an unknown token");
    assert_unauthorized(&s, None, "no credentials");
    assert_eq!(curl(&s, None, "/healthz"), (200, "ok".to_string()), "anonymous may read /healthz");

    // A static token from --token-auth-file and a bootstrap token Secret.
    assert!(lists_pods(&s, "static-e2e-token"));
    s.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-abcdef, namespace: kube-system}\ntype: bootstrap.kubernetes.io/token\nstringData: {token-id: abcdef, token-secret: 0123456789abcdef, usage-bootstrap-authentication: \"true\"}\n");
    assert!(lists_pods(&s, "abcdef.0123456789abcdef"));
    assert_unauthorized(&s, Some("abcdef.0000000000000000"), "a bootstrap token with the wrong secret");

    // OIDC discovery, for an authenticated caller.
    let (code, body) = curl(&s, Some(&token), "/.well-known/openid-configuration");
    let config: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{code}: {body}"));
    assert_eq!(config["issuer"], "https://kubernetes.default.svc.cluster.local");
    assert!(config["jwks_uri"].as_str().unwrap().ends_with("/openid/v1/jwks"), "{config}");
    let (_, body) = curl(&s, Some(&token), "/openid/v1/jwks");
    let jwks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((jwks["keys"][0]["kty"].as_str(), jwks["keys"][0]["alg"].as_str()), (Some("EC"), Some("ES256")), "{jwks}");

    // A pod gets the projected token volume; the token in it works.
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: api-client}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"exec sleep 3600\"]\n"
    ));
    let pod = s.json(&["get", "pod", "api-client"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volume = &pod["spec"]["volumes"][0];
    assert!(volume["name"].as_str().unwrap().starts_with("kube-api-access-"), "{volume}");
    assert_eq!(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
    let mount = &pod["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!((mount["mountPath"].as_str(), mount["readOnly"].as_bool()), (Some(MOUNT), Some(true)), "{mount}");
    s.wait_pod_ready("api-client");
    let in_pod = |file: &str| s.ok(&["exec", "api-client", "--", "cat", &format!("{MOUNT}/{file}")]);
    assert_eq!(in_pod("namespace"), "default");
    let ca = std::fs::read_to_string(s.dir.path().join("server/tls/ca.crt")).unwrap();
    assert_eq!(in_pod("ca.crt").trim(), ca.trim());
    let pod_token = in_pod("token");
    assert!(lists_pods(&s, pod_token.trim()), "the mounted token authenticates");

    // Tokens bound to the pod stop working once it is gone.
    let bound = s.ok(&["create", "token", "default", "--bound-object-kind", "Pod", "--bound-object-name", "api-client"]).trim().to_string();
    assert!(lists_pods(&s, &bound));
    s.ok(&["delete", "pod", "api-client", "--wait=true"]);
    eventually(10, "the bound token refused", || (!lists_pods(&s, &bound)).then_some(()));
    assert_unauthorized(&s, Some(&bound), "a token bound to a deleted pod");
    assert_unauthorized(&s, Some(pod_token.trim()), "the deleted pod's own token");

    // Opting out mounts nothing; a ServiceAccount that does not exist is refused.
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: no-token}}\nspec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: {image}, command: [sleep, \"3600\"]}}\n"
    ));
    let pod = s.json(&["get", "pod", "no-token"]);
    assert!(pod["spec"]["volumes"].is_null() && pod["spec"]["containers"][0]["volumeMounts"].is_null(), "{}", pod["spec"]);
    s.ok(&["delete", "pod", "no-token", "--wait=false"]);
    let out = s.apply_stdin(&["apply", "-f", "-"], &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: ghost}}\nspec:\n  serviceAccountName: ghost\n  containers:\n  - {{name: main, image: {image}}}\n"
    ));
    assert!(out.stderr.contains("pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"), "{}", out.stderr);

    // A legacy token Secret is filled in and works while it exists.
    s.ok(&["create", "serviceaccount", "legacy"]);
    s.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: legacy-token\n  annotations: {kubernetes.io/service-account.name: legacy}\ntype: kubernetes.io/service-account-token\n");
    let legacy = eventually(30, "the legacy token", || {
        let t = s.ok(&["get", "secret", "legacy-token", "-o", "go-template={{if .data.token}}{{.data.token | base64decode}}{{end}}"]);
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(s.ok(&["get", "secret", "legacy-token", "-o", "jsonpath={.data.namespace}"]), "ZGVmYXVsdA==", "namespace: default");
    assert!(lists_pods(&s, &legacy));
    s.ok(&["delete", "secret", "legacy-token"]);
    eventually(10, "the legacy token refused", || (!lists_pods(&s, &legacy)).then_some(()));
    assert_unauthorized(&s, Some(&legacy), "a legacy token whose Secret is gone");
}

#[test]
fn anonymous_auth_false_refuses_even_health_checks() {
    let s = Server::start_with(&["--disable-controllers", "--disable-scheduler", "--anonymous-auth=false"]);
    let (code, body) = curl(&s, None, "/healthz");
    assert_eq!(code, 401, "{body}");
    assert_eq!(s.ok(&["get", "--raw", "/healthz"]), "ok", "client certificates still work");
}
