//! Decoding only part of a JSON document: the values at a few dotted paths,
//! in a tree of the same shape, while everything else is scanned past
//! without being built. The watch cache reads labels and selectable fields
//! this way on every write, several times faster than decoding the object.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The paths to keep, as a tree of their segments.
#[derive(Debug, Default)]
pub struct Paths {
    children: Vec<(&'static str, Paths)>,
    /// The whole value here is kept.
    whole: bool,
}

impl Paths {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a &'static str>) -> Paths {
        let mut root = Paths::default();
        for p in paths {
            let mut node = &mut root;
            for seg in p.split('.') {
                let i = match node.children.iter().position(|(s, _)| *s == seg) {
                    Some(i) => i,
                    None => {
                        node.children.push((seg, Paths::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[i].1;
            }
            node.whole = true;
        }
        root
    }

    /// The kept parts of a JSON document (objects along the paths; Null
    /// where the document has something else).
    pub fn decode(&self, json: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let v = self.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    fn child(&self, key: &str) -> Option<&Paths> {
        self.children.iter().find(|(s, _)| *s == key).map(|(_, p)| p)
    }
}

impl<'de> DeserializeSeed<'de> for &Paths {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.whole {
            Value::deserialize(d)
        } else {
            d.deserialize_any(Project(self))
        }
    }
}

struct Project<'p>(&'p Paths);

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for Project<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(k)) = map.next_key::<Key>()? {
            match self.0.child(&k) {
                Some(p) => {
                    let v = map.next_value_seed(p)?;
                    out.insert(k.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_the_paths() {
        let doc = json!({"metadata": {"name": "a", "labels": {"app": "web", "x": "1"}, "managedFields": [{"big": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "escaped\"key": 1}, "status": "not an object"});
        let paths = Paths::new(&["metadata.labels", "metadata.name", "spec.nodeName", "status.phase", "reason"]);
        let got = paths.decode(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(got, json!({"metadata": {"name": "a", "labels": {"app": "web", "x": "1"}}, "spec": {"nodeName": "n1"}, "status": null}));
        assert!(paths.decode(b"{\"metadata\": {").is_err(), "malformed input is an error");
    }
}
