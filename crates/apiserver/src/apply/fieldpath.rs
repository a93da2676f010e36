//! Field paths and sets of them, as structured-merge-diff has them, and
//! their FieldsV1 form (the `fieldsV1` of a managedFields entry).
//!
//! A path is a list of elements: a field name (`f:spec`), the key of an
//! item of a list-map (`k:{"name":"c"}`, the key fields sorted by name),
//! the value of an item of a set (`v:"x"`) or, where nothing better
//! identifies an item, its index (`i:0`). A set is a trie: at each level
//! the elements that are members (owned themselves) and the children
//! (elements with owned paths below them). In FieldsV1 every element is an
//! object key; a member without children maps to `{}`, one with children
//! says so with a `".": {}` entry.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One element of a path. The variant order is upstream's sort order:
/// fields, then keys, then values, then indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    Field(String),
    /// The key fields of a list-map item as compact JSON, fields sorted.
    Key(String),
    /// A set item as compact JSON.
    Value(String),
    Index(usize),
}

pub type Path = Vec<Pe>;

/// Compact JSON as Go's encoder writes it (HTML characters escaped), so
/// that keys and values compare equal to upstream's.
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return s;
    }
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

impl Pe {
    /// A key element from its fields (sorted here).
    pub fn key(fields: Vec<(String, Value)>) -> Pe {
        let sorted: BTreeMap<String, Value> = fields.into_iter().collect();
        let obj: Map<String, Value> = sorted.into_iter().collect();
        Pe::Key(go_json(&Value::Object(obj)))
    }

    pub fn value(v: &Value) -> Pe {
        Pe::Value(go_json(v))
    }

    /// The FieldsV1 form: `f:name`, `k:{...}`, `v:...`, `i:0`.
    pub fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    pub fn decode(s: &str) -> Option<Pe> {
        let (kind, rest) = s.split_at_checked(2)?;
        match kind {
            "f:" => Some(Pe::Field(rest.to_string())),
            "k:" => {
                let Ok(Value::Object(m)) = serde_json::from_str::<Value>(rest) else { return None };
                Some(Pe::key(m.into_iter().collect()))
            }
            "v:" => serde_json::from_str::<Value>(rest).ok().map(|v| Pe::value(&v)),
            "i:" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }
}

/// A value as upstream's `value.ToString` prints it in paths: strings
/// quoted, other scalars plain, maps and lists as JSON.
fn value_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{}", value_string(v))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(value_string).collect::<Vec<_>>().join(",")),
    }
}

/// A path as upstream prints it in conflicts: `.spec.containers[name="c"].image`.
pub fn path_string(path: &[Pe]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Pe::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", value_string(v))).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Value(v) => {
                let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
                out.push_str(&format!("[={}]", value_string(&v)));
            }
            Pe::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A set of paths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Set {
    members: BTreeSet<Pe>,
    children: BTreeMap<Pe, Set>,
}

impl Set {
    pub fn new() -> Set {
        Set::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    pub fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether the element at this level is a member.
    pub fn has_member(&self, pe: &Pe) -> bool {
        self.members.contains(pe)
    }

    /// The paths below `pe` (relative to it).
    pub fn child(&self, pe: &Pe) -> Option<&Set> {
        self.children.get(pe).filter(|c| !c.is_empty())
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub fn difference(&self, other: &Set) -> Set {
        let members = self.members.iter().filter(|m| !other.members.contains(m)).cloned().collect();
        let children = self
            .children
            .iter()
            .map(|(pe, c)| (pe.clone(), other.children.get(pe).map_or_else(|| c.clone(), |o| c.difference(o))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        Set { members, children }
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let members = self.members.iter().filter(|m| other.members.contains(m)).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| other.children.get(pe).map(|o| (pe.clone(), c.intersection(o))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        Set { members, children }
    }

    /// The set with every field element that has paths below it made a
    /// member too (upstream's EnsureNamedFieldsAreMembers: a struct field
    /// counts as owned when something inside it is).
    pub fn with_field_members(&self) -> Set {
        let mut out = Set { members: self.members.clone(), children: BTreeMap::new() };
        for (pe, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            if matches!(pe, Pe::Field(_)) {
                out.members.insert(pe.clone());
            }
            out.children.insert(pe.clone(), c.with_field_members());
        }
        out
    }

    /// Drops the given top-level paths and everything below them.
    pub fn without_prefixes(&self, prefixes: &[Path]) -> Set {
        let mut out = self.clone();
        for p in prefixes {
            out.remove_prefix(p);
        }
        out
    }

    fn remove_prefix(&mut self, path: &[Pe]) {
        match path {
            [] => *self = Set::new(),
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove_prefix(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Only the paths under the given prefixes (the prefixes included).
    pub fn only_prefixes(&self, prefixes: &[Path]) -> Set {
        let mut out = Set::new();
        for p in prefixes {
            out = out.union(&self.under(p));
        }
        out
    }

    /// The paths of the set at or below `path`.
    fn under(&self, path: &[Pe]) -> Set {
        let mut kept = Set::new();
        match path {
            [] => return self.clone(),
            [last] => {
                if self.members.contains(last) {
                    kept.members.insert(last.clone());
                }
                if let Some(c) = self.children.get(last) {
                    kept.children.insert(last.clone(), c.clone());
                }
            }
            [first, rest @ ..] => {
                let Some(c) = self.children.get(first) else { return kept };
                let sub = c.under(rest);
                if !sub.is_empty() {
                    kept.children.insert(first.clone(), sub);
                }
            }
        }
        kept
    }

    /// Every member path: this level's members first, then the children's
    /// paths, each in element order (upstream's iteration order).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        let mut elements: BTreeSet<&Pe> = self.members.iter().collect();
        elements.extend(self.children.iter().filter(|(_, c)| !c.is_empty()).map(|(pe, _)| pe));
        for pe in elements {
            let member = self.members.contains(pe);
            let value = match self.children.get(pe).filter(|c| !c.is_empty()) {
                Some(c) => c.encode(member),
                None => Map::new(),
            };
            out.insert(pe.encode(), Value::Object(value));
        }
        out
    }

    /// Parses FieldsV1 JSON.
    pub fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let Value::Object(m) = v else { return Err("expected a FieldsV1 object".into()) };
        let mut out = Set::new();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let pe = Pe::decode(k).ok_or_else(|| format!("invalid path element {k:?}"))?;
            let Value::Object(cm) = child else { return Err(format!("expected an object at {k:?}")) };
            if cm.is_empty() || cm.contains_key(".") {
                out.members.insert(pe.clone());
            }
            let sub = Set::from_fields_v1(child)?;
            if !sub.is_empty() {
                out.children.insert(pe, sub);
            }
        }
        Ok(out)
    }
}

/// A path from field names, for tests and fixed paths.
pub fn fields(names: &[&str]) -> Path {
    names.iter().map(|n| Pe::Field(n.to_string())).collect()
}
