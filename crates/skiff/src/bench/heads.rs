//! The few fields benchmarks read of listed objects: a list's items, and
//! whether an object's status conditions say it is Ready.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// A `status` with conditions (a Pod's or a Node's).
#[derive(Deserialize, Default)]
pub struct ConditionsHead {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl ConditionsHead {
    pub fn ready(&self) -> bool {
        self.conditions.iter().any(|c| c.kind == "Ready" && c.status == "True")
    }
}

#[derive(Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}
