//! Field errors in upstream's shape (apimachinery `field.Error`): the type,
//! the dotted field path, the offending value and a detail, rendered with the
//! same text upstream's `ErrorBody()` / `Error()` produce, plus the
//! aggregated `Kind "name" is invalid: ...` message of a 422 Status.

use serde_json::Value;

/// Machine-readable kind of a field error (upstream `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
    NotFound,
}

impl ErrorType {
    /// The `StatusCause.reason` string.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    /// The human-readable lead of the message body.
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotFound => "Not found",
        }
    }
}

/// One validation failure.
///
/// `value` is the offending value as JSON; `None` means "do not print a
/// value". Strings print Go-quoted, numbers and booleans plainly, string
/// lists and string maps in Go's `%#v` form. A value built with [`go_repr`]
/// prints verbatim (used where upstream prints a Go struct).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
    /// For `NotSupported`: the supported values, printed in this order.
    pub supported: Vec<String>,
}

/// The key of the marker object that makes a value print verbatim.
const REPR_KEY: &str = "$goRepr";

/// A value that [`FieldError::body`] prints exactly as given.
pub fn go_repr(repr: impl Into<String>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(REPR_KEY.to_string(), Value::String(repr.into()));
    Value::Object(m)
}

impl FieldError {
    fn new(
        error_type: ErrorType,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            error_type,
            field: field.into(),
            value,
            detail: detail.into(),
            supported: Vec::new(),
        }
    }

    /// `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// `Invalid value: <value>[: detail]`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.into()), detail)
    }

    /// `Invalid value: <repr>[: detail]` with the value printed verbatim.
    pub fn invalid_repr(
        field: impl Into<String>,
        repr: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(ErrorType::Invalid, field, Some(go_repr(repr)), detail)
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported<S: AsRef<str>>(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[S],
    ) -> Self {
        let mut e = Self::new(ErrorType::NotSupported, field, Some(value.into()), "");
        e.supported = supported.iter().map(|s| s.as_ref().to_string()).collect();
        e
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value.into()), "")
    }

    /// `Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value.into()), "")
    }

    /// `Forbidden[: detail]`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    /// `Too long: must have at most <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            field,
            None,
            format!("must have at most {max} bytes"),
        )
    }

    /// `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::new(
            ErrorType::TooMany,
            field,
            Some(Value::from(actual as u64)),
            format!("must have at most {max} items"),
        )
    }

    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }

    /// The message without the field (upstream `ErrorBody()`).
    pub fn body(&self) -> String {
        let mut s = match self.error_type {
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong => {
                self.error_type.label().to_string()
            }
            _ => match &self.value {
                None => self.error_type.label().to_string(),
                Some(v) => format!("{}: {}", self.error_type.label(), render_value(v)),
            },
        };
        let mut detail = String::new();
        if self.error_type == ErrorType::NotSupported && !self.supported.is_empty() {
            let quoted: Vec<String> = self.supported.iter().map(|v| go_quote(v)).collect();
            detail = format!("supported values: {}", quoted.join(", "));
        }
        if !self.detail.is_empty() {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&self.detail);
        }
        if !detail.is_empty() {
            s.push_str(": ");
            s.push_str(&detail);
        }
        s
    }

    /// `field: body` (upstream `Error()`).
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FieldError {}

/// Renders a bad value the way Go's `%v`/`%q`/`%#v` would for the types
/// upstream passes.
pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        Value::Array(items) => {
            if items.iter().all(|i| i.is_string()) {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| go_quote(i.as_str().unwrap_or("")))
                    .collect();
                format!("[]string{{{}}}", parts.join(", "))
            } else {
                serde_json::to_string(v).unwrap_or_default()
            }
        }
        Value::Object(m) => {
            if let (1, Some(Value::String(r))) = (m.len(), m.get(REPR_KEY)) {
                return r.clone();
            }
            if m.values().all(|i| i.is_string()) {
                go_string_map(m)
            } else {
                serde_json::to_string(v).unwrap_or_default()
            }
        }
    }
}

/// Go's `%#v` of a `map[string]string` (keys sorted).
pub(crate) fn go_string_map(m: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", go_quote(k), go_quote(m[*k].as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_ascii() => out.push(c),
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let n = c as u32;
                if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `Kind.group` for non-core groups, as upstream names a kind in messages.
pub fn qualified_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// The `Status.message` of an Invalid error: `Pod "web" is invalid: a: b`, or
/// `... is invalid: [a: b, c: d]` for several errors (duplicates dropped, as
/// upstream's aggregate does). `kind` is printed as given; upstream prints
/// the qualified kind (`Deployment.apps`), see [`invalid_message_for`].
pub fn invalid_message(kind: &str, name: &str, errs: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    let head = format!("{kind} {} is invalid", go_quote(name));
    match seen.len() {
        0 => head,
        1 => format!("{head}: {}", seen[0]),
        _ => format!("{head}: [{}]", seen.join(", ")),
    }
}

/// [`invalid_message`] with upstream's qualified kind (`Deployment.apps`).
pub fn invalid_message_for(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> String {
    invalid_message(&qualified_kind(group, kind), name, errs)
}
