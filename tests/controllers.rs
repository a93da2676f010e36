//! Controllers running inside `skiff server`, driven through the real kubectl.

use e2e::{eventually, Server};

#[test]
fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team-a"]);
    for ns in ["default", "kube-system", "team-a"] {
        eventually(20, &format!("default serviceaccount in {ns}"), || {
            s.kubectl(&["get", "serviceaccount", "default", "-n", ns]).ok().then_some(())
        });
        let ca = eventually(20, &format!("kube-root-ca.crt in {ns}"), || {
            let out = s.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "jsonpath={.data.ca\\.crt}"]);
            out.ok().then_some(out.stdout)
        });
        let served_ca = std::fs::read_to_string(s.dir.path().join("server/tls/ca.crt")).unwrap();
        assert_eq!(ca.trim(), served_ca.trim());
    }
    // Deleting the account brings it back.
    let uid = s.ok(&["get", "sa", "default", "-n", "team-a", "-o", "jsonpath={.metadata.uid}"]);
    s.ok(&["delete", "sa", "default", "-n", "team-a"]);
    eventually(20, "recreated serviceaccount", || {
        let out = s.kubectl(&["get", "sa", "default", "-n", "team-a", "-o", "jsonpath={.metadata.uid}"]);
        (out.ok() && out.stdout != uid).then_some(())
    });
    // The controller-manager holds its leader-election lease.
    let holder = s.ok(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(holder.contains("controller-manager"), "{holder}");
}

#[test]
fn controller_manager_runs_as_a_separate_process() {
    let s = Server::start_api_only();
    let cm = e2e::Component::start(&s, "controller-manager");
    s.ok(&["create", "namespace", "remote"]);
    eventually(30, "default serviceaccount from the remote controller-manager", || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "remote"]).ok().then_some(())
    });
    let holder = s.ok(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(holder.ends_with(&cm.identity_suffix("controller-manager")), "{holder}");
}
