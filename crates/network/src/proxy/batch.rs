//! Rule text -> nft batches: a full batch that replaces the table, and an
//! incremental one that turns what one service port has installed into
//! what it should have, ordered so that nothing is referenced before it
//! exists or deleted while still referenced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::rules::{base, Fragment, Sizes, HAIRPIN, HOOK_CHAINS};

/// Elements to add, per map: key and value (none for a set).
pub type Elements = BTreeMap<String, Vec<(String, Option<String>)>>;

/// One atomic batch that replaces the whole table: the table is created,
/// deleted and created again, so it works whether or not it existed, and
/// conntrack keeps established connections' NAT across it.
/// Also returns the shared chains it creates.
pub fn full<'a>(table: &str, sizes: &Sizes, fragments: impl IntoIterator<Item = &'a Fragment>) -> (String, BTreeSet<String>) {
    let mut s = format!("add table ip {table}\ndelete table ip {table}\nadd table ip {table}\n");
    s.push_str(&base(table, sizes));
    let mut b = Batch::new(table);
    let mut hairpin = BTreeSet::new();
    for f in fragments {
        b.change(None, Some(f));
        hairpin.extend(f.hairpin.iter().copied());
    }
    b.hairpin(hairpin, []);
    let shared = b.shared_chains().clone();
    s.push_str(&b.finish());
    (s, shared)
}

/// A full sync in three steps, for when elements can reach the kernel
/// without nft (`netlink`): `build` makes `table` afresh with everything
/// but the shared maps' elements and the hooks, unattached; then
/// `elements` go in; then `hooks` attaches it. With the removal of the
/// table it replaces in the same batch, `hooks` is the atomic switch.
pub struct Staged {
    pub build: String,
    pub elements: Elements,
    pub hooks: String,
    pub shared: BTreeSet<String>,
}

pub fn staged<'a>(table: &str, sizes: &Sizes, fragments: impl IntoIterator<Item = &'a Fragment>) -> Staged {
    // The hooked chains and their rules wait for the switch.
    let is_hook = |l: &&str| {
        let w: Vec<&str> = l.split_whitespace().collect();
        matches!(w.get(1), Some(&"chain" | &"rule")) && w.get(4).is_some_and(|c| HOOK_CHAINS.contains(c))
    };
    let base = base(table, sizes);
    let (hooks, structure): (Vec<&str>, Vec<&str>) = base.lines().partition(is_hook);
    let mut build = format!("add table ip {table}\ndelete table ip {table}\nadd table ip {table}\n");
    for l in structure {
        let _ = writeln!(build, "{l}");
    }
    let mut b = Batch::new(table);
    let mut hairpin = BTreeSet::new();
    for f in fragments {
        b.change(None, Some(f));
        hairpin.extend(f.hairpin.iter().copied());
    }
    b.hairpin(hairpin, []);
    let elements = std::mem::take(&mut b.link_elements);
    let shared = b.shared_chains().clone();
    build.push_str(&b.finish());
    Staged { build, elements, hooks: hooks.iter().map(|l| format!("{l}\n")).collect(), shared }
}

/// Lines of an incremental batch, kept in phases so that every object
/// exists before it is referenced and is deleted only after nothing points to it.
pub struct Batch {
    t: String,
    /// Shared chains that exist (installed, or declared by this batch).
    shared: BTreeSet<String>,
    declare: String,
    unlink: String,
    /// map -> keys to delete, and map -> elements to add; sent a few thousand to a line.
    unlink_elements: BTreeMap<String, Vec<String>>,
    link_elements: Elements,
    flush: String,
    fill: String,
    link: String,
    empty_old: String,
    delete_maps: String,
    delete_chains: String,
    delete_sets: String,
}

impl Batch {
    pub fn new(table: &str) -> Batch {
        Batch::with_shared(table, BTreeSet::new())
    }

    /// A batch for a table where the shared chains `shared` already exist.
    pub fn with_shared(table: &str, shared: BTreeSet<String>) -> Batch {
        let e = String::new;
        Batch {
            t: format!("ip {table}"),
            shared,
            declare: e(),
            unlink: e(),
            unlink_elements: BTreeMap::new(),
            link_elements: BTreeMap::new(),
            flush: e(),
            fill: e(),
            link: e(),
            empty_old: e(),
            delete_maps: e(),
            delete_chains: e(),
            delete_sets: e(),
        }
    }

    pub fn is_empty(&self) -> bool {
        [&self.declare, &self.unlink, &self.flush, &self.fill, &self.link, &self.delete_chains, &self.delete_sets]
            .iter()
            .all(|s| s.is_empty())
            && self.unlink_elements.is_empty()
            && self.link_elements.is_empty()
    }

    /// The shared chains that exist once this batch is applied.
    pub fn shared_chains(&self) -> &BTreeSet<String> {
        &self.shared
    }

    /// Adds and removes hairpin pairs (the caller counts the service ports using each address).
    pub fn hairpin(&mut self, add: impl IntoIterator<Item = std::net::Ipv4Addr>, delete: impl IntoIterator<Item = std::net::Ipv4Addr>) {
        for ip in add {
            self.link_elements.entry(HAIRPIN.to_string()).or_default().push((format!("{ip} . {ip}"), None));
        }
        for ip in delete {
            self.unlink_elements.entry(HAIRPIN.to_string()).or_default().push(format!("{ip} . {ip}"));
        }
    }

    /// Turns what is installed for one service port (`old`) into `new`,
    /// touching only what differs.
    pub fn change(&mut self, old: Option<&Fragment>, new: Option<&Fragment>) {
        let empty = Fragment::default();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let t = &self.t;
        for (chain, rules) in &new.shared {
            if self.shared.insert(chain.clone()) {
                let _ = writeln!(self.declare, "add chain {t} {chain}");
                for r in rules {
                    let _ = writeln!(self.fill, "add rule {t} {chain} {r}");
                }
            }
        }
        for (set, timeout) in &new.sets {
            // Kept sets keep their entries: clients stay with their endpoint.
            if !old.sets.contains_key(set) {
                let _ = writeln!(self.declare, "add set {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}");
            }
        }
        for (chain, rules) in &new.chains {
            match old.chains.get(chain) {
                Some(old_rules) if old_rules == rules => continue,
                Some(_) => {
                    let _ = writeln!(self.flush, "flush chain {t} {chain}");
                }
                None => {
                    let _ = writeln!(self.declare, "add chain {t} {chain}");
                }
            }
            for r in rules {
                let _ = writeln!(self.fill, "add rule {t} {chain} {r}");
            }
        }
        for (map, elements) in &new.maps {
            match old.maps.get(map) {
                Some(old_elements) if old_elements == elements => continue,
                Some(_) => {
                    let _ = writeln!(self.flush, "flush map {t} {map}");
                }
                None => {
                    let _ = writeln!(self.declare, "add map {t} {map} {{ typeof numgen random mod 1 : verdict; }}");
                }
            }
            if !elements.is_empty() {
                let _ = writeln!(self.fill, "add element {t} {map} {{ {} }}", elements.join(", "));
            }
        }
        for ((map, key), verdict) in &new.elements {
            match old.elements.get(&(*map, key.clone())) {
                Some(v) if v == verdict => continue,
                Some(_) => self.unlink_elements.entry(map.to_string()).or_default().push(key.clone()),
                None => {}
            }
            self.link_elements.entry(map.to_string()).or_default().push((key.clone(), Some(verdict.clone())));
        }
        for (map, key) in old.elements.keys() {
            if !new.elements.contains_key(&(*map, key.clone())) {
                self.unlink_elements.entry(map.to_string()).or_default().push(key.clone());
            }
        }
        for map in old.maps.keys().filter(|m| !new.maps.contains_key(*m)) {
            let _ = writeln!(self.delete_maps, "delete map {t} {map}");
        }
        for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
            // Emptied first: removed chains may jump to each other.
            let _ = writeln!(self.empty_old, "flush chain {t} {chain}");
            let _ = writeln!(self.delete_chains, "delete chain {t} {chain}");
        }
        for set in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
            let _ = writeln!(self.delete_sets, "delete set {t} {set}");
        }
    }

    pub fn finish(mut self) -> String {
        let elements = |verb: &str, groups: &BTreeMap<String, Vec<String>>| {
            let mut s = String::new();
            for (map, items) in groups {
                for chunk in items.chunks(2000) {
                    let _ = writeln!(s, "{verb} element {} {map} {{ {} }}", self.t, chunk.join(", "));
                }
            }
            s
        };
        let added: BTreeMap<String, Vec<String>> = std::mem::take(&mut self.link_elements)
            .into_iter()
            .map(|(map, items)| (map, items.into_iter().map(|(k, v)| v.map_or(k.clone(), |v| format!("{k} : {v}"))).collect()))
            .collect();
        self.unlink.push_str(&elements("delete", &self.unlink_elements));
        self.link.push_str(&elements("add", &added));
        [
            self.declare,
            self.unlink,
            self.flush,
            self.fill,
            self.link,
            self.empty_old,
            self.delete_maps,
            self.delete_chains,
            self.delete_sets,
        ]
        .concat()
    }
}
