//! `metadata.managedFields`: its entries decoded into field sets, and
//! written back the way upstream writes them.

use chrono::DateTime;
use serde_json::{Map, Value};

use super::fieldpath::Set;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: Set,
}

impl Entry {
    pub fn new(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation,
            api_version: api_version.to_string(),
            time: None,
            subresource: subresource.to_string(),
            set: Set::new(),
        }
    }

    /// Whether two entries belong to the same manager as upstream identifies
    /// them: by name, operation and subresource, and for updaters also by
    /// apiVersion (an applier keeps one entry whatever version it applies).
    pub fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.as_str().into()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), Value::String(self.subresource.clone()));
        }
        Value::Object(m)
    }

    fn unix_time(&self) -> i64 {
        self.time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map_or(0, |t| t.timestamp())
    }
}

/// Whether a request's managedFields ask for them to be cleared: an empty
/// list, or a list of one empty entry.
pub fn is_reset(v: &Value) -> bool {
    match v {
        Value::Array(a) if a.is_empty() => true,
        Value::Array(a) if a.len() == 1 => a[0].as_object().is_some_and(|m| m.values().all(Value::is_null)),
        _ => false,
    }
}

/// The entries of an object's managedFields; an error (upstream's message)
/// for an entry that is not valid.
pub fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    let list = match &obj["metadata"]["managedFields"] {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("managedFields must be a list".into()),
    };
    let mut out: Vec<Entry> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let operation = match e["operation"].as_str() {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if s("apiVersion").is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match e["fieldsType"].as_str() {
            Some("FieldsV1") => {}
            None | Some("") => return Err(format!("missing fieldsType in managed fields entry {i}")),
            Some(t) => return Err(format!("invalid fieldsType \"{t}\" in managed fields entry {i}")),
        }
        let set = match &e["fieldsV1"] {
            Value::Null => Set::new(),
            f => Set::from_fields_v1(f).map_err(|err| format!("error decoding set: {err}"))?,
        };
        let entry = Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: e["time"].as_str().map(String::from),
            subresource: s("subresource"),
            set,
        };
        // A repeated manager: the later entry wins, as when upstream decodes into a map.
        out.retain(|o| !o.same_manager(&entry));
        out.push(entry);
    }
    Ok(out)
}

/// Writes the entries into the object's managedFields: the server-owned
/// paths taken out, empty entries dropped, sorted like upstream (Apply
/// before Update, then by time, manager, apiVersion, subresource). No
/// entries: no managedFields.
pub fn store(obj: &mut Value, entries: Vec<Entry>, stripped: &Set) {
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .map(|mut e| {
            e.set = e.set.difference(stripped);
            e
        })
        .filter(|e| !e.set.is_empty())
        .collect();
    entries.sort_by(|p, q| {
        (p.operation, p.unix_time(), &p.manager, &p.api_version, &p.subresource).cmp(&(
            q.operation,
            q.unix_time(),
            &q.manager,
            &q.api_version,
            &q.subresource,
        ))
    });
    if !obj["metadata"].is_object() {
        if entries.is_empty() {
            return;
        }
        obj["metadata"] = Value::Object(Map::new());
    }
    let Some(meta) = obj["metadata"].as_object_mut() else { return };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::encode).collect()));
    }
}
