//! The shape of the generated table (`table.rs`): per protobuf message, its
//! fields as (tag, JSON name, kind, flags).

/// How a field is encoded on the wire and shown in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    I32,
    I64,
    #[allow(dead_code)] // no double fields in the packages included today
    F64,
    /// `bytes`: a base64 string in JSON.
    Bytes,
    /// An embedded message, by proto full name.
    Msg(&'static str),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`: values as base64 strings.
    MapBytes,
    /// `map<string, Message>`.
    MapMsg(&'static str),
}

/// `repeated`: a JSON array.
pub const REP: u8 = 1;
/// Optional in the API (k8s-openapi's `Option`, Go's `omitempty`).
pub const OPT: u8 = 2;
/// A Go value field with omitempty: its zero value ("", 0, false), which Go's
/// protobuf marshaller writes anyway, means unset and is left out of the JSON.
pub const ZERO: u8 = 4;

/// (tag, JSON name, kind, flags). An empty JSON name marks a Go struct
/// embedded with `json:",inline"`: its fields belong to the parent object.
pub type Field = (u32, &'static str, Kind, u8);

pub struct Message {
    pub name: &'static str,
    /// In Go struct order (what Go's JSON writes), not tag order.
    pub fields: &'static [Field],
}

/// The message with this proto full name (`k8s.io.api.core.v1.Pod`).
pub fn message(name: &str) -> Option<&'static Message> {
    let all = super::table::MESSAGES;
    all.binary_search_by(|m| m.name.cmp(name)).ok().map(|i| &all[i])
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&'static Field> {
        // A few dozen fields at most: a scan is as fast as a search.
        self.fields.iter().find(|f| f.0 == tag)
    }
}

/// Messages whose JSON is not an object of their proto fields: times,
/// durations, quantities, int-or-strings, raw extensions, managed field
/// sets and string lists.
pub fn has_own_json_form(name: &str) -> bool {
    const OWN: &[&str] = &[
        ".Time", ".MicroTime", ".Duration", ".FieldsV1", ".Quantity", ".IntOrString",
        ".RawExtension", ".Unknown", ".TypeMeta", ".ExtraValue", ".Verbs",
    ];
    OWN.iter().any(|s| name.ends_with(s))
}
