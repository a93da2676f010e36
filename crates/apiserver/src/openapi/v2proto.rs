//! The protobuf form of `/openapi/v2`: the Swagger 2.0 JSON document written
//! as gnostic's `openapi.v2.Document` message
//! (github.com/google/gnostic-models/openapiv2/OpenAPIv2.proto), which is
//! what client-go's `DiscoveryClient.OpenAPISchema()` asks for (`Accept:
//! application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) and reads
//! with no JSON fallback: kubectl's client-side validation and `kubectl
//! explain --output=plaintext-openapiv2` go through it.
//!
//! The mapping follows gnostic's compiler (`openapi_v2.NewDocument`):
//! objects keyed by name (paths, definitions, properties, responses, ...)
//! become repeated `Named*` messages in document order; `x-*` keys become
//! `NamedAny {name, Any {yaml}}` vendor extensions. kube-openapi's proto
//! models (`VendorExtensionToMap`) `yaml.Unmarshal` that text, so it holds
//! the value's JSON, which is YAML too.

use std::sync::LazyLock;

use serde_json::{Map, Value};

/// The Content-Type of the protobuf form. kube-openapi answers with this
/// spelling whichever one was asked for: client-go runs the response's
/// Content-Type through Go's `mime.ParseMediaType`, which refuses the `@`
/// of the spelling client-go itself sends ("mime: unexpected content after
/// media subtype", an InternalError).
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The media types of the protobuf form a client may ask for: the one
/// client-go sends (kube-openapi calls it deprecated) and the current one.
pub const MEDIA_TYPES: [&str; 2] = ["application/com.github.proto-openapi.spec.v2@v1.0+protobuf", CONTENT_TYPE];

/// Encodes a Swagger 2.0 document as an `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    document(doc).0
}

/// A message being written: length-delimited fields, varints, fixed64.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A `string` field (proto3: left out when empty).
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// An embedded message: always written, its presence is meaningful.
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// A `bool` member of a oneof: written even when false.
    fn bool_always(&mut self, field: u32, b: bool) {
        self.key(field, 0);
        self.varint(u64::from(b));
    }
}

/// Writes the fields of one JSON object into a message.
struct Enc<'a> {
    o: &'a Map<String, Value>,
    m: Msg,
}

static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

impl<'a> Enc<'a> {
    fn new(v: &'a Value) -> Self {
        Enc { o: v.as_object().unwrap_or(&*EMPTY), m: Msg::default() }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.o.get(key)
    }

    fn str(&mut self, key: &str, field: u32) -> &mut Self {
        if let Some(s) = self.get(key).and_then(Value::as_str) {
            self.m.string(field, s);
        }
        self
    }

    /// `repeated string`: a JSON array of strings, or one string.
    fn strs(&mut self, key: &str, field: u32) -> &mut Self {
        match self.get(key) {
            Some(Value::String(s)) => self.m.bytes(field, s.as_bytes()),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(|s| self.m.bytes(field, s.as_bytes())),
            _ => {}
        }
        self
    }

    fn bool(&mut self, key: &str, field: u32) -> &mut Self {
        if self.get(key).and_then(Value::as_bool) == Some(true) {
            self.m.bool_always(field, true);
        }
        self
    }

    /// `int64` (varint; negative numbers as ten-byte two's complement).
    fn int(&mut self, key: &str, field: u32) -> &mut Self {
        let v = self.get(key).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
        if let Some(v) = v.filter(|v| *v != 0) {
            self.m.key(field, 0);
            self.m.varint(v as u64);
        }
        self
    }

    /// `double` (fixed64, little endian).
    fn double(&mut self, key: &str, field: u32) -> &mut Self {
        if let Some(v) = self.get(key).and_then(Value::as_f64).filter(|v| *v != 0.0) {
            self.m.key(field, 1);
            self.m.0.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        self
    }

    /// An `Any` field: the value as YAML (JSON) text.
    fn any(&mut self, key: &str, field: u32) -> &mut Self {
        if let Some(v) = self.get(key) {
            self.m.msg(field, any(v));
        }
        self
    }

    /// `repeated Any` from a JSON array.
    fn anys(&mut self, key: &str, field: u32) -> &mut Self {
        for v in self.get(key).and_then(Value::as_array).into_iter().flatten() {
            self.m.msg(field, any(v));
        }
        self
    }

    /// An embedded message built from the value at `key`, when present.
    fn sub(&mut self, key: &str, field: u32, f: fn(&Value) -> Msg) -> &mut Self {
        if let Some(v) = self.get(key) {
            self.m.msg(field, f(v));
        }
        self
    }

    /// A repeated message, one per element of the JSON array at `key`.
    fn each(&mut self, key: &str, field: u32, f: fn(&Value) -> Msg) -> &mut Self {
        for v in self.get(key).and_then(Value::as_array).into_iter().flatten() {
            self.m.msg(field, f(v));
        }
        self
    }

    /// A map object at `key` as a message of `repeated Named* field = 1`
    /// (`Definitions`, `Properties`, `Headers`, ...).
    fn named_map(&mut self, key: &str, field: u32, f: fn(&Value) -> Msg) -> &mut Self {
        if let Some(v) = self.get(key) {
            let mut inner = Msg::default();
            named(&mut inner, 1, v, false, f);
            self.m.msg(field, inner);
        }
        self
    }

    /// The object's `x-*` keys as `repeated NamedAny`.
    fn ext(&mut self, field: u32) -> &mut Self {
        vendor_extensions(&mut self.m, field, self.o);
        self
    }

    fn done(&mut self) -> Msg {
        std::mem::take(&mut self.m)
    }
}

/// Writes each entry of the JSON object `v` as `Named* {name = 1, value =
/// 2}` at `field`, skipping `x-*` keys when `skip_ext`.
fn named(m: &mut Msg, field: u32, v: &Value, skip_ext: bool, f: fn(&Value) -> Msg) {
    for (name, value) in v.as_object().into_iter().flatten() {
        if skip_ext && name.starts_with("x-") {
            continue;
        }
        let mut entry = Msg::default();
        entry.string(1, name);
        entry.msg(2, f(value));
        m.msg(field, entry);
    }
}

fn vendor_extensions(m: &mut Msg, field: u32, o: &Map<String, Value>) {
    for (name, value) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut entry = Msg::default();
        entry.string(1, name);
        entry.msg(2, any(value));
        m.msg(field, entry);
    }
}

/// `Any {value = 1 (google.protobuf.Any, unused), yaml = 2}`.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &serde_json::to_string(v).unwrap_or_default());
    m
}

fn string_value(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, v.as_str().unwrap_or_default());
    m
}

fn document(v: &Value) -> Msg {
    Enc::new(v)
        .str("swagger", 1)
        .sub("info", 2, info)
        .str("host", 3)
        .str("basePath", 4)
        .strs("schemes", 5)
        .strs("consumes", 6)
        .strs("produces", 7)
        .sub("paths", 8, paths)
        .named_map("definitions", 9, schema)
        .named_map("parameters", 10, parameter)
        .named_map("responses", 11, response)
        .each("security", 12, security_requirement)
        .named_map("securityDefinitions", 13, security_definition)
        .each("tags", 14, tag)
        .sub("externalDocs", 15, external_docs)
        .ext(16)
        .done()
}

fn info(v: &Value) -> Msg {
    Enc::new(v)
        .str("title", 1)
        .str("version", 2)
        .str("description", 3)
        .str("termsOfService", 4)
        .sub("contact", 5, |v| Enc::new(v).str("name", 1).str("url", 2).str("email", 3).ext(4).done())
        .sub("license", 6, |v| Enc::new(v).str("name", 1).str("url", 2).ext(3).done())
        .ext(7)
        .done()
}

fn external_docs(v: &Value) -> Msg {
    Enc::new(v).str("description", 1).str("url", 2).ext(3).done()
}

fn tag(v: &Value) -> Msg {
    Enc::new(v).str("name", 1).str("description", 2).sub("externalDocs", 3, external_docs).ext(4).done()
}

/// `Paths {vendor_extension = 1, path = 2 (NamedPathItem)}`.
fn paths(v: &Value) -> Msg {
    let mut m = Msg::default();
    vendor_extensions(&mut m, 1, v.as_object().unwrap_or(&*EMPTY));
    named(&mut m, 2, v, true, path_item);
    m
}

fn path_item(v: &Value) -> Msg {
    Enc::new(v)
        .str("$ref", 1)
        .sub("get", 2, operation)
        .sub("put", 3, operation)
        .sub("post", 4, operation)
        .sub("delete", 5, operation)
        .sub("options", 6, operation)
        .sub("head", 7, operation)
        .sub("patch", 8, operation)
        .each("parameters", 9, parameters_item)
        .ext(10)
        .done()
}

fn operation(v: &Value) -> Msg {
    Enc::new(v)
        .strs("tags", 1)
        .str("summary", 2)
        .str("description", 3)
        .sub("externalDocs", 4, external_docs)
        .str("operationId", 5)
        .strs("produces", 6)
        .strs("consumes", 7)
        .each("parameters", 8, parameters_item)
        .sub("responses", 9, responses)
        .strs("schemes", 10)
        .bool("deprecated", 11)
        .each("security", 12, security_requirement)
        .ext(13)
        .done()
}

/// `JsonReference {_ref = 1, description = 2}`.
fn json_reference(v: &Value) -> Msg {
    Enc::new(v).str("$ref", 1).str("description", 2).done()
}

/// `ParametersItem` oneof: `parameter = 1 | json_reference = 2`.
fn parameters_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    if v.get("$ref").is_some() {
        m.msg(2, json_reference(v));
    } else {
        m.msg(1, parameter(v));
    }
    m
}

/// `Parameter` oneof: `body_parameter = 1 | non_body_parameter = 2`, the
/// latter a `NonBodyParameter` oneof by `in`: header 1, formData 2, query 3,
/// path 4.
fn parameter(v: &Value) -> Msg {
    let mut m = Msg::default();
    let location = v.get("in").and_then(Value::as_str).unwrap_or_default();
    if location == "body" {
        let body = Enc::new(v)
            .str("description", 1)
            .str("name", 2)
            .str("in", 3)
            .bool("required", 4)
            .sub("schema", 5, schema)
            .ext(6)
            .done();
        m.msg(1, body);
        return m;
    }
    // Query and formData sub-schemas carry `allowEmptyValue = 5`, which
    // shifts their later fields by one against header and path.
    let (which, first) = match location {
        "header" => (1, 5),
        "formData" => (2, 6),
        "path" => (4, 5),
        _ => (3, 6),
    };
    let mut e = Enc::new(v);
    e.bool("required", 1).str("in", 2).str("description", 3).str("name", 4);
    if first == 6 {
        e.bool("allowEmptyValue", 5);
    }
    primitive_fields(&mut e, first);
    let sub = e.ext(first + 17).done();
    let mut non_body = Msg::default();
    non_body.msg(which, sub);
    m.msg(2, non_body);
    m
}

/// The run of fields `type, format, items, collectionFormat, default,
/// maximum, exclusiveMaximum, minimum, exclusiveMinimum, maxLength,
/// minLength, pattern, maxItems, minItems, uniqueItems, enum, multipleOf`
/// numbered from `first`, shared by the parameter sub-schemas,
/// `PrimitivesItems` and `Header`.
fn primitive_fields(e: &mut Enc, first: u32) {
    e.str("type", first)
        .str("format", first + 1)
        .sub("items", first + 2, primitives_items)
        .str("collectionFormat", first + 3)
        .any("default", first + 4)
        .double("maximum", first + 5)
        .bool("exclusiveMaximum", first + 6)
        .double("minimum", first + 7)
        .bool("exclusiveMinimum", first + 8)
        .int("maxLength", first + 9)
        .int("minLength", first + 10)
        .str("pattern", first + 11)
        .int("maxItems", first + 12)
        .int("minItems", first + 13)
        .bool("uniqueItems", first + 14)
        .anys("enum", first + 15)
        .double("multipleOf", first + 16);
}

fn primitives_items(v: &Value) -> Msg {
    let mut e = Enc::new(v);
    primitive_fields(&mut e, 1);
    e.ext(18).done()
}

fn header(v: &Value) -> Msg {
    let mut e = Enc::new(v);
    primitive_fields(&mut e, 1);
    e.str("description", 18).ext(19).done()
}

/// `Responses {response_code = 1 (NamedResponseValue), vendor_extension =
/// 2}`; each value a `ResponseValue` oneof `response = 1 | json_reference = 2`.
fn responses(v: &Value) -> Msg {
    let mut m = Msg::default();
    named(&mut m, 1, v, true, |r| {
        let mut value = Msg::default();
        if r.get("$ref").is_some() {
            value.msg(2, json_reference(r));
        } else {
            value.msg(1, response(r));
        }
        value
    });
    vendor_extensions(&mut m, 2, v.as_object().unwrap_or(&*EMPTY));
    m
}

fn response(v: &Value) -> Msg {
    Enc::new(v)
        .str("description", 1)
        .sub("schema", 2, schema_item)
        .named_map("headers", 3, header)
        .sub("examples", 4, |v| {
            // `Examples {repeated NamedAny additional_properties = 1}`.
            let mut m = Msg::default();
            named(&mut m, 1, v, false, any);
            m
        })
        .ext(5)
        .done()
}

/// `SchemaItem` oneof: `schema = 1 | file_schema = 2` (`type: file`).
fn schema_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    if v.get("type").and_then(Value::as_str) == Some("file") {
        let file = Enc::new(v)
            .str("format", 1)
            .str("title", 2)
            .str("description", 3)
            .any("default", 4)
            .strs("required", 5)
            .str("type", 6)
            .bool("readOnly", 7)
            .sub("externalDocs", 8, external_docs)
            .any("example", 9)
            .ext(10)
            .done();
        m.msg(2, file);
    } else {
        m.msg(1, schema(v));
    }
    m
}

fn schema(v: &Value) -> Msg {
    let mut e = Enc::new(v);
    e.str("$ref", 1)
        .str("format", 2)
        .str("title", 3)
        .str("description", 4)
        .any("default", 5)
        .double("multipleOf", 6)
        .double("maximum", 7)
        .bool("exclusiveMaximum", 8)
        .double("minimum", 9)
        .bool("exclusiveMinimum", 10)
        .int("maxLength", 11)
        .int("minLength", 12)
        .str("pattern", 13)
        .int("maxItems", 14)
        .int("minItems", 15)
        .bool("uniqueItems", 16)
        .int("maxProperties", 17)
        .int("minProperties", 18)
        .strs("required", 19)
        .anys("enum", 20);
    // AdditionalPropertiesItem oneof: schema = 1 | boolean = 2.
    match e.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Msg::default();
            item.bool_always(2, *b);
            e.m.msg(21, item);
        }
        Some(s) => {
            let mut item = Msg::default();
            item.msg(1, schema(s));
            e.m.msg(21, item);
        }
        None => {}
    }
    // TypeItem {repeated string value = 1}.
    if e.get("type").is_some() {
        let t = Enc::new(v).strs("type", 1).done();
        e.m.msg(22, t);
    }
    // ItemsItem {repeated Schema schema = 1}: one schema or a tuple.
    match e.get("items") {
        Some(Value::Array(items)) => {
            let mut item = Msg::default();
            items.iter().for_each(|s| item.msg(1, schema(s)));
            e.m.msg(23, item);
        }
        Some(s) => {
            let mut item = Msg::default();
            item.msg(1, schema(s));
            e.m.msg(23, item);
        }
        None => {}
    }
    e.each("allOf", 24, schema)
        .named_map("properties", 25, schema)
        .str("discriminator", 26)
        .bool("readOnly", 27)
        .sub("xml", 28, |v| {
            Enc::new(v).str("name", 1).str("namespace", 2).str("prefix", 3).bool("attribute", 4).bool("wrapped", 5).ext(6).done()
        })
        .sub("externalDocs", 29, external_docs)
        .any("example", 30)
        .ext(31)
        .done()
}

/// `SecurityRequirement {repeated NamedStringArray additional_properties =
/// 1}`, each value a `StringArray {repeated string value = 1}`.
fn security_requirement(v: &Value) -> Msg {
    let mut m = Msg::default();
    named(&mut m, 1, v, false, |scopes| {
        let mut a = Msg::default();
        scopes.as_array().into_iter().flatten().filter_map(Value::as_str).for_each(|s| a.bytes(1, s.as_bytes()));
        a
    });
    m
}

/// `SecurityDefinitionsItem` oneof by `type` (and `flow` for oauth2).
fn security_definition(v: &Value) -> Msg {
    let scopes = |v: &Value| {
        // Oauth2Scopes {repeated NamedString additional_properties = 1}.
        let mut m = Msg::default();
        named(&mut m, 1, v, false, string_value);
        m
    };
    let mut e = Enc::new(v);
    let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
    let flow = e.get("flow").and_then(Value::as_str).unwrap_or_default();
    let (which, inner) = match (kind, flow) {
        ("basic", _) => (1, e.str("type", 1).str("description", 2).ext(3).done()),
        ("oauth2", "implicit") => (
            3,
            e.str("type", 1).str("flow", 2).sub("scopes", 3, scopes).str("authorizationUrl", 4).str("description", 5).ext(6).done(),
        ),
        ("oauth2", "password") => {
            (4, e.str("type", 1).str("flow", 2).sub("scopes", 3, scopes).str("tokenUrl", 4).str("description", 5).ext(6).done())
        }
        ("oauth2", "application") => {
            (5, e.str("type", 1).str("flow", 2).sub("scopes", 3, scopes).str("tokenUrl", 4).str("description", 5).ext(6).done())
        }
        ("oauth2", _) => (
            6,
            e.str("type", 1)
                .str("flow", 2)
                .sub("scopes", 3, scopes)
                .str("authorizationUrl", 4)
                .str("tokenUrl", 5)
                .str("description", 6)
                .ext(7)
                .done(),
        ),
        _ => (2, e.str("type", 1).str("name", 2).str("in", 3).str("description", 4).ext(5).done()),
    };
    let mut m = Msg::default();
    m.msg(which, inner);
    m
}

#[cfg(test)]
#[path = "v2proto_tests.rs"]
mod tests;
