//! The protobuf wire format (proto2, as Go's gogo-generated marshallers write
//! it) read into JSON values following the generated schema table.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{self, Kind, Message, REP, ZERO};

/// Nesting deeper than this is refused (the deepest built-in kinds are ~15).
const MAX_DEPTH: usize = 64;

/// One field as read off the wire.
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(#[allow(dead_code)] u32),
}

/// Iterates over the (field number, value) pairs of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err("truncated varint".into());
            };
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("field of {n} bytes runs past the end of its message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or None at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range".to_string())?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length out of range".to_string())?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            t => return Err(format!("unsupported wire type {t} (field {tag})")),
        };
        Ok(Some((tag, value)))
    }
}

/// Decodes the message `name` into its JSON form.
pub fn message(name: &str, buf: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("objects nested too deeply".into());
    }
    if let Some(v) = special(name, buf, depth)? {
        return Ok(v);
    }
    let msg = schema::message(name).ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut obj = Map::new();
    fill(msg, buf, depth, &mut obj)?;
    Ok(Value::Object(obj))
}

/// Reads the fields of `msg` from `buf` into `obj` (embedded structs too).
fn fill(msg: &Message, buf: &[u8], depth: usize, obj: &mut Map<String, Value>) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.next_field()? {
        let Some(&(_, json, kind, flags)) = msg.field(tag) else { continue };
        let ctx = |e: String| format!("{}.{}: {e}", short(msg.name), if json.is_empty() { "(inline)" } else { json });
        if json.is_empty() {
            let Kind::Msg(sub) = kind else { unreachable!("only messages are embedded") };
            let Wire::Bytes(b) = wire else { return Err(ctx("expected a length-delimited field".into())) };
            let sub = schema::message(sub).ok_or_else(|| ctx(format!("no protobuf schema for {sub}")))?;
            fill(sub, b, depth + 1, obj).map_err(ctx)?;
            continue;
        }
        match kind {
            Kind::MapStr | Kind::MapBytes | Kind::MapMsg(_) => {
                let Wire::Bytes(b) = wire else { return Err(ctx("expected a map entry".into())) };
                let (k, v) = map_entry(kind, b, depth).map_err(ctx)?;
                let slot = obj.entry(json).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert(k, v);
                }
            }
            _ if flags & REP != 0 => {
                let mut vals = Vec::new();
                match (wire, packable(kind)) {
                    (Wire::Bytes(b), true) => {
                        let mut pr = Reader { buf: b };
                        while !pr.buf.is_empty() {
                            let w = match kind {
                                Kind::F64 => Wire::Fixed64(u64::from_le_bytes(pr.take(8).map_err(ctx)?.try_into().unwrap())),
                                _ => Wire::Varint(pr.varint().map_err(ctx)?),
                            };
                            vals.push(scalar(kind, w, depth).map_err(ctx)?);
                        }
                    }
                    (w, _) => vals.push(scalar(kind, w, depth).map_err(ctx)?),
                }
                let slot = obj.entry(json).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = slot {
                    a.extend(vals.into_iter().map(|v| v.unwrap_or(Value::Null)));
                }
            }
            _ => match scalar(kind, wire, depth).map_err(ctx)? {
                None => {
                    obj.remove(json);
                }
                Some(v) if flags & ZERO != 0 && is_zero(&v) => {
                    obj.remove(json);
                }
                Some(Value::Object(new)) => match obj.get_mut(json) {
                    // A message field repeated on the wire: proto merges them.
                    Some(Value::Object(old)) => old.extend(new),
                    _ => {
                        obj.insert(json.to_string(), Value::Object(new));
                    }
                },
                Some(v) => {
                    obj.insert(json.to_string(), v);
                }
            },
        }
    }
    Ok(())
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn packable(kind: Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64)
}

/// One value of a non-map field; None for values with no JSON form (a zero Time).
fn scalar(kind: Kind, wire: Wire, depth: usize) -> Result<Option<Value>, String> {
    Ok(Some(match (kind, wire) {
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Kind::I32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Kind::I64, Wire::Varint(v)) => Value::from(v as i64),
        (Kind::F64, Wire::Fixed64(v)) => float(f64::from_bits(v))?,
        (Kind::Str, Wire::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Kind::Bytes, Wire::Bytes(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Kind::Msg(name), Wire::Bytes(b)) => {
            let v = message(name, b, depth + 1)?;
            if v.is_null() {
                return Ok(None);
            }
            v
        }
        (kind, _) => return Err(format!("wire type doesn't match the field's type {kind:?}")),
    }))
}

fn float(v: f64) -> Result<Value, String> {
    Number::from_f64(v).map(Value::Number).ok_or_else(|| format!("{v} is not a JSON number"))
}

/// A map entry: a message of {1: key, 2: value}.
fn map_entry(kind: Kind, buf: &[u8], depth: usize) -> Result<(String, Value), String> {
    let (mut key, mut val) = (String::new(), None);
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.next_field()? {
        match (tag, wire) {
            (1, Wire::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, w) => {
                let k = match kind {
                    Kind::MapStr => Kind::Str,
                    Kind::MapBytes => Kind::Bytes,
                    Kind::MapMsg(m) => Kind::Msg(m),
                    _ => unreachable!(),
                };
                val = Some(scalar(k, w, depth)?.unwrap_or(Value::Null));
            }
            _ => {}
        }
    }
    let val = match (val, kind) {
        (Some(v), _) => v,
        (None, Kind::MapMsg(m)) => message(m, &[], depth + 1)?,
        (None, _) => Value::String(String::new()),
    };
    Ok((key, val))
}

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";

/// Messages whose JSON form isn't an object of their fields.
fn special(name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, String> {
    let fields = || -> Result<Vec<(u32, Wire)>, String> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some(f) = r.next_field()? {
            out.push(f);
        }
        Ok(out)
    };
    let varint = |tag: u32| -> Result<u64, String> {
        Ok(fields()?.into_iter().rev().find_map(|(t, w)| match w {
            Wire::Varint(v) if t == tag => Some(v),
            _ => None,
        }).unwrap_or(0))
    };
    let bytes = |tag: u32| -> Result<Option<&[u8]>, String> {
        Ok(fields()?.into_iter().rev().find_map(|(t, w)| match w {
            Wire::Bytes(b) if t == tag => Some(b),
            _ => None,
        }))
    };
    let string = |tag: u32| -> Result<String, String> {
        Ok(bytes(tag)?.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default())
    };
    let v = match name.strip_prefix(META).unwrap_or(name) {
        // metav1.Time marshals the zero time as an empty message.
        "Time" | "MicroTime" if buf.is_empty() => Value::Null,
        "Time" => Value::String(time(varint(1)? as i64, varint(2)? as i64 as i32, false)?),
        "MicroTime" => Value::String(time(varint(1)? as i64, varint(2)? as i64 as i32, true)?),
        "Duration" => Value::String(go_duration(varint(1)? as i64)),
        "FieldsV1" => match bytes(1)? {
            Some(raw) if !raw.is_empty() => embedded_json(raw, depth)?,
            _ => Value::Null,
        },
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => match bytes(1)? {
            Some(raw) if !raw.is_empty() => embedded_json(raw, depth)?,
            _ => Value::Null,
        },
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            let s = string(1)?;
            Value::String(if s.is_empty() { "0".into() } else { s })
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => match varint(1)? {
            1 => Value::String(string(3)?),
            _ => Value::from(varint(2)? as i64 as i32),
        },
        "k8s.io.apimachinery.pkg.runtime.TypeMeta" => {
            let mut m = Map::new();
            for (k, tag) in [("apiVersion", 1), ("kind", 2)] {
                let s = string(tag)?;
                if !s.is_empty() {
                    m.insert(k.into(), Value::String(s));
                }
            }
            Value::Object(m)
        }
        n if n == "Verbs" || n.ends_with(".ExtraValue") => {
            let mut items = Vec::new();
            for (t, w) in fields()? {
                if let (1, Wire::Bytes(b)) = (t, w) {
                    items.push(Value::String(String::from_utf8_lossy(b).into_owned()));
                }
            }
            Value::Array(items)
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// The bytes of a RawExtension or FieldsV1: JSON, or a nested protobuf object.
fn embedded_json(raw: &[u8], depth: usize) -> Result<Value, String> {
    if raw.starts_with(super::MAGIC) {
        return super::decode_at(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| format!("embedded object is not JSON: {e}"))
}

/// RFC 3339 in UTC, as metav1.Time (seconds) and MicroTime (microseconds) print.
fn time(secs: i64, nanos: i32, micro: bool) -> Result<String, String> {
    let t = chrono::DateTime::from_timestamp(secs, nanos.max(0) as u32)
        .ok_or_else(|| format!("time out of range: {secs}s"))?;
    Ok(if micro {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// Go's `time.Duration.String()`: "1h2m3.5s", "1m0s", "150ms", "0s".
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    // Fractional digits without trailing zeros.
    let frac = |v: u64, digits: u32| -> String {
        let p = 10u64.pow(digits);
        let (int, rem) = (v / p, v % p);
        if rem == 0 {
            return int.to_string();
        }
        let f = format!("{rem:0width$}", width = digits as usize);
        format!("{int}.{}", f.trim_end_matches('0'))
    };
    if u < 1_000_000_000 {
        let (v, unit) = match u {
            0..=999 => (u.to_string(), "ns"),
            1_000..=999_999 => (frac(u, 3), "µs"),
            _ => (frac(u, 6), "ms"),
        };
        return format!("{neg}{v}{unit}");
    }
    let secs = u / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = frac(u % 60_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{neg}{s}s"),
        (0, m) => format!("{neg}{m}m{s}s"),
        (h, m) => format!("{neg}{h}h{m}m{s}s"),
    }
}

/// `k8s.io.api.core.v1.Pod` -> `Pod`, for error messages.
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}
