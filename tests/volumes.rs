//! PersistentVolume binding inside `skiff server`, through the real kubectl:
//! claims bind to the smallest volume that fits, to the volume they name,
//! wait when nothing fits, and volumes are Released or deleted after their
//! claim goes, by reclaim policy.

use e2e::{eventually, Server};

fn volume(s: &Server, name: &str, size: &str, policy: &str) {
    s.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: {policy}\n  hostPath: {{path: /tmp/{name}}}\n"
    ));
}

fn claim(s: &Server, name: &str, size: &str, extra: &str) {
    s.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  storageClassName: \"\"\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n{extra}"
    ));
}

fn get(s: &Server, what: &str, path: &str) -> String {
    s.ok(&["get", what, "-o", &format!("jsonpath={path}")])
}

#[test]
fn claims_bind_wait_and_release_volumes() {
    let s = Server::start();
    volume(&s, "small", "1Gi", "Retain");
    volume(&s, "large", "10Gi", "Retain");
    volume(&s, "medium", "3Gi", "Delete");
    volume(&s, "named", "1Gi", "Retain");
    eventually(30, "volumes Available", || (get(&s, "pv/small", "{.status.phase}") == "Available").then_some(()));

    // The smallest volume that fits.
    claim(&s, "data", "2Gi", "");
    eventually(30, "data bound", || (get(&s, "pvc/data", "{.status.phase}") == "Bound").then_some(()));
    assert_eq!(get(&s, "pvc/data", "{.spec.volumeName}/{.status.capacity.storage}/{.status.accessModes[0]}"), "medium/3Gi/ReadWriteOnce");
    assert_eq!(get(&s, "pv/medium", "{.status.phase}/{.spec.claimRef.namespace}/{.spec.claimRef.name}"), "Bound/default/data");
    let table = s.ok(&["get", "pvc", "data"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("Bound") && l.contains("medium") && l.contains("3Gi")), "{table}");

    // The volume a claim names, even when a smaller one would fit.
    claim(&s, "pinned", "500Mi", "  volumeName: large\n");
    eventually(30, "pinned bound", || (get(&s, "pvc/pinned", "{.status.phase}") == "Bound").then_some(()));
    assert_eq!(get(&s, "pv/large", "{.spec.claimRef.name}"), "pinned");

    // Nothing fits: Pending, and an event says why.
    claim(&s, "huge", "100Gi", "");
    eventually(30, "FailedBinding event", || {
        let reasons = s.ok(&["get", "events", "--field-selector", "involvedObject.name=huge", "-o", "jsonpath={.items[*].message}"]);
        reasons.contains("no persistent volumes available for this claim").then_some(())
    });
    assert_eq!(get(&s, "pvc/huge", "{.status.phase}"), "Pending");
    // A volume that fits arrives: the waiting claim takes it.
    volume(&s, "extra", "200Gi", "Retain");
    eventually(30, "huge bound", || (get(&s, "pvc/huge", "{.spec.volumeName}") == "extra").then_some(()));

    // Deleting claims: Retain keeps the volume Released, Delete removes it.
    s.ok(&["delete", "pvc", "pinned", "data"]);
    eventually(30, "large Released", || (get(&s, "pv/large", "{.status.phase}") == "Released").then_some(()));
    eventually(30, "medium deleted", || (!s.kubectl(&["get", "pv", "medium"]).ok()).then_some(()));
    assert_eq!(get(&s, "pv/small", "{.status.phase}"), "Available");
}
