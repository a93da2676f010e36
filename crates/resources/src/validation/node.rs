//! RuntimeClasses (node.k8s.io), as upstream's `pkg/apis/node/validation`.

use serde_json::{json, Value};

use super::meta::validate_labels;
use super::names::*;
use super::resource::validate_requirements;
use super::scheduling::validate_tolerations;
use super::util::*;
use super::workloads::meta_for;

pub(crate) fn validate_runtime_class(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    if let Some(old) = old {
        // An update may change nothing but metadata: the handler is fixed.
        immutable(errs, get(obj, "handler"), get(old, "handler"), "handler");
        return;
    }
    dns_label(errs, "handler", s(obj, "handler"));
    if let Some(fixed) = at(obj, &["overhead", "podFixed"]) {
        // Upstream reuses the resource requirements check with podFixed as limits.
        validate_requirements(errs, Some(&json!({"limits": fixed})), "overhead");
    }
    if let Some(sched) = get(obj, "scheduling") {
        validate_labels(errs, get(sched, "nodeSelector"), "scheduling.nodeSelector");
        validate_tolerations(errs, arr(sched, "tolerations"), "scheduling.tolerations");
    }
}
