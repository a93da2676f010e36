//! core/v1 PersistentVolume and PersistentVolumeClaim.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn pv_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
        col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
        col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
        col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
        col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
        col("StorageClass", "string", "StorageClass of the pv"),
        col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
        col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        age_col(),
        wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
    ]
}

/// `helper.GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
pub(crate) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|x| x.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The beta annotation wins over spec.storageClassName.
fn storage_class(o: &Value) -> String {
    if let Some(class) = at(o, "metadata.annotations")
        .get(BETA_STORAGE_CLASS)
        .and_then(Value::as_str)
    {
        return class.to_string();
    }
    str_at(o, "spec.storageClassName").to_string()
}

fn unset_or(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "<unset>".into())
}

pub(super) fn pv_cells(pv: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = if present(pv, "spec.claimRef") {
        format!(
            "{}/{}",
            str_at(pv, "spec.claimRef.namespace"),
            str_at(pv, "spec.claimRef.name")
        )
    } else {
        String::new()
    };
    let phase = if present(pv, "metadata.deletionTimestamp") {
        "Terminating"
    } else {
        str_at(pv, "status.phase")
    };
    vec![
        name_cell(pv),
        s(quantity(at(pv, "spec.capacity.storage"))),
        s(access_modes(arr_at(pv, "spec.accessModes"))),
        s(str_at(pv, "spec.persistentVolumeReclaimPolicy")),
        s(phase),
        s(claim),
        s(storage_class(pv)),
        s(unset_or(at(pv, "spec.volumeAttributesClassName"))),
        s(str_at(pv, "status.reason")),
        s(obj_age(pv, now)),
        s(unset_or(at(pv, "spec.volumeMode"))),
    ]
}

pub(super) fn pvc_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Status",
            "string",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        col(
            "Volume",
            "string",
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
        ),
        col(
            "Capacity",
            "string",
            "capacity represents the actual resources of the underlying volume.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains the actual access modes the volume backing the PVC has.",
        ),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        age_col(),
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines what type of volume is required by the claim.",
        ),
    ]
}

pub(super) fn pvc_cells(pvc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if present(pvc, "metadata.deletionTimestamp") {
        "Terminating"
    } else {
        str_at(pvc, "status.phase")
    };
    let volume = str_at(pvc, "spec.volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, "status.capacity.storage")),
            access_modes(arr_at(pvc, "status.accessModes")),
        )
    };
    vec![
        name_cell(pvc),
        s(phase),
        s(volume),
        s(capacity),
        s(modes),
        s(storage_class(pvc)),
        s(unset_or(at(pvc, "spec.volumeAttributesClassName"))),
        s(obj_age(pvc, now)),
        s(unset_or(at(pvc, "spec.volumeMode"))),
    ]
}
