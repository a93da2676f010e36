//! Replacing the whole table (a full sync) without a moment in which
//! Services are missing or half there.
//!
//! With netlink at hand (`Runner::has_netlink`), the next table is built
//! beside the live one under the other of two names (`<table>` and
//! `<table>_b`): its chains, rules and maps through nft, with no hooked
//! chain, so it sees no packet; then its bulk elements over netlink; then
//! one nft batch hooks it and deletes the old table, which is the atomic
//! switch (conntrack keeps established connections' NAT across it). nft
//! never parses the 100,000 elements of a large cluster, which is most of
//! a full sync's cost.
//!
//! Without it, or when that fails, one nft batch deletes and re-creates
//! the live table with everything in it.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{anyhow, Context};

use super::apply::Applied;
use super::netlink;
use super::rules::{self, Fragment, Sizes};
use super::runner::Runner;

/// The other name a table alternates with.
pub fn alternate(table: &str) -> String {
    format!("{table}_b")
}

/// What a replacement left: the live table's name and its shared chains.
pub struct Replaced {
    pub live: String,
    pub shared: BTreeSet<String>,
    pub applied: Applied,
}

/// Replaces whichever of `table` and its alternate is live (`live`, when
/// known) with `fragments`, and removes the other.
pub async fn replace(runner: &Runner, table: &str, live: Option<&str>, sizes: &Sizes, fragments: &[&Fragment]) -> anyhow::Result<Replaced> {
    if runner.has_netlink() {
        match staged(runner, table, live, sizes, fragments).await {
            Ok(r) => return Ok(r),
            Err(e) => tracing::warn!("service proxy: building the next table failed ({e:#}); replacing it in one nft batch instead"),
        }
    }
    in_one_batch(runner, table, live, sizes, fragments).await
}

async fn in_one_batch(runner: &Runner, table: &str, live: Option<&str>, sizes: &Sizes, fragments: &[&Fragment]) -> anyhow::Result<Replaced> {
    let started = Instant::now();
    let live = live.unwrap_or(table).to_string();
    let (mut script, shared) = rules::full(&live, sizes, fragments.iter().copied());
    script.push_str(&drop_tables(table, &live));
    runner.run(&script).await?;
    let applied = Applied { lines: script.lines().count(), elements: 0, elapsed: started.elapsed() };
    Ok(Replaced { live, shared, applied })
}

async fn staged(runner: &Runner, table: &str, live: Option<&str>, sizes: &Sizes, fragments: &[&Fragment]) -> anyhow::Result<Replaced> {
    let started = Instant::now();
    let next = match live {
        Some(live) => other(table, live),
        None => unhooked(runner, table).await.context("finding the live table")?,
    };
    let plan = rules::staged(&next, sizes, fragments.iter().copied());
    let mut elements = netlink::Elements::new();
    let mut count = 0;
    for (map, items) in &plan.elements {
        for (key, value) in items {
            let (key, data) = netlink::encode(map, key, value.as_deref()).ok_or_else(|| anyhow!("no netlink form for an element of {map}: {key}"))?;
            elements.add(&next, map, &key, &data);
            count += 1;
        }
    }
    let switch = format!("{}{}", plan.hooks, drop_tables(table, &next));
    let result = async {
        runner.run(&plan.build).await.context("building the next table")?;
        runner.add_elements(elements).await.context("filling the next table")?;
        runner.run(&switch).await.context("switching to the next table")
    }
    .await;
    if let Err(e) = result {
        // The live table was not touched; the half-built one goes.
        let _ = runner.run(&drop_tables(table, live.unwrap_or(&other(table, &next)))).await;
        return Err(e);
    }
    let lines = plan.build.lines().count() + switch.lines().count();
    Ok(Replaced { live: next, shared: plan.shared, applied: Applied { lines, elements: count, elapsed: started.elapsed() } })
}

fn other(table: &str, name: &str) -> String {
    if name == table { alternate(table) } else { table.to_string() }
}

/// Deletes both names but `keep` (whether or not they exist).
fn drop_tables(table: &str, keep: &str) -> String {
    [table.to_string(), alternate(table)]
        .iter()
        .filter(|t| *t != keep)
        .map(|t| format!("add table ip {t}\ndelete table ip {t}\n"))
        .collect()
}

/// The name to build the next table under when which one is live is not
/// known (a restarted proxy): one that does not exist, else the one with no
/// hooked chain.
async fn unhooked(runner: &Runner, table: &str) -> anyhow::Result<String> {
    let listing = runner.output("list tables ip\n").await?;
    let exists = |name: &str| listing.lines().any(|l| l.trim() == format!("table ip {name}"));
    let alt = alternate(table);
    if !exists(table) {
        return Ok(table.to_string());
    }
    if !exists(&alt) {
        return Ok(alt);
    }
    let hooked = runner.output(&format!("list chain ip {table} {}\n", rules::HOOK_CHAINS[0])).await.is_ok();
    Ok(if hooked { alt } else { table.to_string() })
}
