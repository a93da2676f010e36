//! The few fields benchmarks read of listed objects: a list's items, and
//! whether an object's status conditions say it is Ready.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::client::Client;

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

/// How many nodes report Ready.
pub async fn ready_nodes(client: &Client) -> Result<usize> {
    let list: List<NodeHead> = client.get_as("/api/v1/nodes", &[]).await.context("listing nodes")?;
    Ok(list.items.iter().filter(|n| n.status.ready()).count())
}

#[derive(Deserialize)]
struct NodeHead {
    #[serde(default)]
    status: ConditionsHead,
}

#[derive(Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}
