//! The shape of a value as server-side apply sees it, read from the kind's
//! OpenAPI schema: scalars, structs (maps with declared fields), maps,
//! lists of the `x-kubernetes-list-type` given (`atomic`, `set`, or `map`
//! keyed by `x-kubernetes-list-map-keys`; without a list type a list with
//! `x-kubernetes-patch-strategy: merge` is a map keyed by its patch merge
//! key, or a set without one, as upstream's schema conversion has it; other
//! lists are atomic) and maps marked `x-kubernetes-map-type: atomic`.
//! Where the schema says nothing (unknown fields, RawExtension) the shape
//! is deduced from the value: objects are granular maps, lists atomic.

use serde_json::Value;

use crate::openapi;

/// A place in the schema.
#[derive(Clone, Copy, Debug)]
pub struct Ty {
    /// The resolved schema, None where it is not known.
    schema: Option<&'static Value>,
    /// The schema of the property that led here (it carries the list and
    /// map extensions when the definition does not).
    prop: Option<&'static Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

#[derive(Clone, Debug)]
pub enum Shape {
    Scalar,
    /// A struct (see [`Ty::declares`]) or a map with keys of any name;
    /// `atomic` ones are owned as a whole.
    Map { atomic: bool },
    List(ListKind),
}


/// Default values of list-map key fields upstream's schema declares (a
/// port's protocol), used when an item leaves the key field out.
pub fn key_default(key: &str) -> Option<Value> {
    match key {
        "protocol" => Some(Value::String("TCP".into())),
        _ => None,
    }
}

impl Ty {
    /// The type of a kind's objects.
    pub fn root(group: &str, version: &str, kind: &str) -> Ty {
        Ty { schema: openapi::kind_schema(group, version, kind), prop: None }
    }

    /// The type of what the schema does not describe.
    pub fn deduced() -> Ty {
        Ty { schema: None, prop: None }
    }

    fn ext(&self, name: &str) -> Option<&'static Value> {
        self.prop.and_then(|p| p.get(name)).or_else(|| self.schema.and_then(|s| s.get(name)))
    }

    /// The shape of `v` at this type: the schema's, or, where the schema is
    /// silent or disagrees with the value, one deduced from the value.
    pub fn shape(&self, v: &Value) -> Shape {
        let deduced = match v {
            Value::Object(_) => Shape::Map { atomic: false },
            Value::Array(_) => Shape::List(ListKind::Atomic),
            _ => Shape::Scalar,
        };
        let Some(s) = self.schema else { return deduced };
        let is_map = s.get("properties").is_some() || s.get("additionalProperties").is_some_and(Value::is_object);
        let is_list = s.get("type").and_then(Value::as_str) == Some("array");
        match v {
            Value::Object(_) | Value::Null if is_map => {
                let atomic = self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
                Shape::Map { atomic }
            }
            Value::Array(_) | Value::Null if is_list => Shape::List(self.list_kind()),
            _ => deduced,
        }
    }

    fn list_kind(&self) -> ListKind {
        let strs = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(a) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        match self.ext("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => return ListKind::Set,
            Some("map") => return ListKind::Map(self.ext("x-kubernetes-list-map-keys").map(strs).unwrap_or_default()),
            Some(_) => return ListKind::Atomic,
            None => {}
        }
        let merge = self
            .ext("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .is_some_and(|s| s.split(',').any(|p| p == "merge"));
        if !merge {
            return ListKind::Atomic;
        }
        match self.ext("x-kubernetes-patch-merge-key").and_then(Value::as_str) {
            Some(k) => ListKind::Map(vec![k.to_string()]),
            None => ListKind::Set,
        }
    }

    /// Whether `key` is a declared field of this struct (upstream does not
    /// count a struct field as owned by itself, only what is inside it; the
    /// keys of a map are owned as such).
    pub fn declares(&self, key: &str) -> bool {
        self.schema.and_then(|s| s.get("properties")).is_some_and(|p| p.get(key).is_some())
    }

    /// The type of the field or map entry `key`.
    pub fn field(&self, key: &str) -> Ty {
        let Some(s) = self.schema else { return Ty::deduced() };
        let prop = s
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()));
        match prop {
            Some(p) => Ty { schema: openapi::resolve(p), prop: Some(p) },
            None => Ty::deduced(),
        }
    }

    /// The type of a list's items.
    pub fn items(&self) -> Ty {
        match self.schema.and_then(|s| s.get("items")) {
            Some(i) => Ty { schema: openapi::resolve(i), prop: None },
            None => Ty::deduced(),
        }
    }
}
