//! resource.Quantity: an exact fixed-point number with a unit suffix, parsed
//! and printed the way the Kubernetes API does ("1.5Gi" reads back as
//! "1536Mi", "0.5" as "500m").
//!
//! The value is kept as an arbitrary-length decimal (digits times a power of
//! ten) so every input upstream accepts is held exactly, however large.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use decimal::{divmod_small, Dec, MAX_ALIGN_ZEROS};

mod decimal;

/// How a quantity prints its exponent; remembered from the parsed suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `e3`, `E-6` exponents.
    DecimalExponent,
    /// `Ki`, `Mi`, ... powers of 1024.
    BinarySI,
    /// `n`, `u`, `m`, `k`, `M`, ... powers of 1000.
    DecimalSI,
}

/// The three parse failures upstream distinguishes, with its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantityError {
    FormatWrong,
    Numeric,
    Suffix,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            QuantityError::FormatWrong => {
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            }
            QuantityError::Numeric => "unable to parse numeric part of quantity",
            QuantityError::Suffix => "unable to parse quantity's suffix",
        })
    }
}

impl std::error::Error for QuantityError {}

/// A resource quantity. Equality and ordering are by numeric value
/// ("1" == "1000m"); the format and the original text only affect printing.
#[derive(Clone)]
pub struct Quantity {
    negative: bool,
    magnitude: Dec,
    format: Format,
    /// The parsed text when upstream keeps it verbatim (it was already in a
    /// form upstream would not rewrite, such as "100m" or "+1").
    text: Option<String>,
}

/// The pieces of a quantity string, as upstream's scanner splits it.
struct Scanned<'a> {
    positive: bool,
    /// Sign, digits and point: what the slow path reads as a number.
    value: &'a [u8],
    num: &'a [u8],
    denom: &'a [u8],
    suffix: &'a [u8],
}

fn scan(s: &str) -> Result<Scanned<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut out = Scanned { positive: true, value: b"", num: b"0", denom: b"", suffix: b"" };
    let mut pos = 0;
    match b.first() {
        Some(b'-') => {
            out.positive = false;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        out.value = b"0";
        return Ok(out);
    }
    let digits_from = |start: usize| start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let num_end = digits_from(pos);
    if num_end > pos {
        out.num = &b[pos..num_end];
    }
    pos = num_end;
    if pos < end && b[pos] == b'.' {
        let denom_end = digits_from(pos + 1);
        out.denom = &b[pos + 1..denom_end];
        pos = denom_end;
    }
    out.value = &b[..pos];
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    if digits_from(pos) != end {
        return Err(QuantityError::FormatWrong);
    }
    out.suffix = &b[suffix_start..];
    Ok(out)
}

const DECIMAL_SUFFIXES: [(&str, i32); 10] =
    [("n", -9), ("u", -6), ("m", -3), ("", 0), ("k", 3), ("M", 6), ("G", 9), ("T", 12), ("P", 15), ("E", 18)];
const BINARY_SUFFIXES: [(&str, i32); 6] = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40), ("Pi", 50), ("Ei", 60)];

/// The base (10 or 2), exponent and format a suffix stands for.
fn interpret_suffix(suffix: &[u8]) -> Option<(u32, i32, Format)> {
    let text = std::str::from_utf8(suffix).ok()?;
    if let Some((_, e)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == text) {
        return Some((10, *e, Format::DecimalSI));
    }
    if let Some((_, e)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == text) {
        return Some((2, *e, Format::BinarySI));
    }
    if text.len() > 1 && (text.starts_with('e') || text.starts_with('E')) {
        // Upstream parses 64 bits and then truncates to 32.
        let exponent: i64 = text[1..].parse().ok()?;
        return Some((10, exponent as i32, Format::DecimalExponent));
    }
    None
}

impl Quantity {
    /// Parses the Kubernetes quantity syntax, e.g. "100m", "1.5Gi", "2e3".
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        if s == "0" {
            return Ok(Quantity { text: Some("0".into()), ..Quantity::default() });
        }
        let parts = scan(s)?;
        let (base, exponent, mut format) = interpret_suffix(parts.suffix).ok_or(QuantityError::Suffix)?;
        let shifted: Vec<u8> = parts.num.iter().chain(parts.denom).copied().collect();

        // Upstream has a fast int64 path; whether an input takes it decides
        // whether the text is kept verbatim and whether a digitless number
        // (".e-20") is an error.
        let (fast, keep_text) = match format {
            Format::BinarySI => {
                let precision = 15 - parts.num.len() as i64 - (exponent as i64 * 3 / 10) - 1;
                let fast_value = (parts.denom.is_empty() && precision >= 0)
                    .then(|| std::str::from_utf8(parts.num).ok()?.parse::<i64>().ok())
                    .flatten()
                    .filter(|v| v.checked_mul(1i64 << exponent).is_some());
                match fast_value {
                    Some(v) => (true, exponent % 10 == 0 && v & 7 != 0),
                    None => (false, false),
                }
            }
            _ => {
                let precision = 18 - (parts.num.len() + parts.denom.len()) as i64;
                let scale = exponent as i64 - parts.denom.len() as i64;
                let fast = precision >= 0 && scale >= -9;
                (fast, fast && scale % 3 == 0 && !shifted.ends_with(b"000") && shifted[0] != b'0')
            }
        };
        if !fast && !parts.value.iter().any(u8::is_ascii_digit) {
            return Err(QuantityError::Numeric);
        }

        let mut magnitude = Dec::from_ascii(&shifted, -(parts.denom.len() as i64));
        if base == 10 {
            if !magnitude.is_zero() {
                magnitude.exp += exponent as i64;
            }
        } else {
            magnitude = magnitude.mul_small(1u64 << exponent);
        }
        // Non-zero amounts below a nano round up: asking for some of a
        // resource should give some.
        magnitude = magnitude.round_up_to(-9).0;
        if format == Format::BinarySI {
            let max = Dec::from_u128(i64::MAX as u128, 0);
            if magnitude.cmp(&max) == Ordering::Greater {
                magnitude = max;
            }
            if !magnitude.is_zero() && magnitude.cmp(&Dec::one(0)) == Ordering::Less {
                format = Format::DecimalSI;
            }
        }
        let negative = !parts.positive && !magnitude.is_zero();
        Ok(Quantity { negative, magnitude, format, text: keep_text.then(|| s.to_string()) })
    }

    /// A quantity from a JSON value: a string, or a bare number as clients
    /// sometimes send.
    pub fn from_json(v: &Value) -> Result<Quantity, QuantityError> {
        match v {
            Value::String(s) => Quantity::parse(s.trim()),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => Err(QuantityError::FormatWrong),
        }
    }

    /// `value` whole units in the given format (upstream NewQuantity).
    pub fn new(value: i64, format: Format) -> Quantity {
        Quantity::from_scaled(value, 0, format)
    }

    /// `value` thousandths, DecimalSI (upstream NewMilliQuantity).
    pub fn from_milli(value: i64) -> Quantity {
        Quantity::from_scaled(value, -3, Format::DecimalSI)
    }

    /// `value * 10^scale` in the given format.
    pub fn from_scaled(value: i64, scale: i32, format: Format) -> Quantity {
        let magnitude = Dec::from_u128(value.unsigned_abs() as u128, scale as i64);
        Quantity { negative: value < 0, magnitude, format, text: None }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.magnitude.is_zero()
    }

    /// -1, 0 or 1.
    pub fn sign(&self) -> i32 {
        match (self.is_zero(), self.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }

    /// The value in whole units, rounded away from zero (upstream Value()).
    /// Saturates at the i64 range.
    pub fn value(&self) -> i64 {
        self.scaled_value(0)
    }

    /// The value in thousandths, rounded away from zero (upstream
    /// MilliValue()). Saturates at the i64 range.
    pub fn milli_value(&self) -> i64 {
        self.scaled_value(-3)
    }

    /// The value in units of 10^scale, rounded away from zero.
    pub fn scaled_value(&self, scale: i32) -> i64 {
        let (rounded, _) = self.magnitude.round_up_to(scale as i64);
        if rounded.is_zero() {
            return 0;
        }
        let zeros = rounded.exp - scale as i64;
        let limit = if self.negative { i64::MIN.unsigned_abs() as u128 } else { i64::MAX as u128 };
        let magnitude = if rounded.order() - scale as i64 > 20 {
            limit
        } else {
            let base: u128 = rounded.digit_string().parse().unwrap_or(u128::MAX);
            base.saturating_mul(10u128.pow(zeros as u32)).min(limit)
        };
        if self.negative {
            (magnitude as i128).wrapping_neg() as i64
        } else {
            magnitude as i64
        }
    }

    /// The value as a float, possibly inexact.
    pub fn as_approximate_f64(&self) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}{}e{}", self.magnitude.digit_string(), self.magnitude.exp).parse().unwrap_or(f64::NAN)
    }

    /// Rounds away from zero to a multiple of 10^scale (upstream RoundUp);
    /// false when precision was lost. `round_up(-3)` is what the API does to
    /// every resource list.
    pub fn round_up(&mut self, scale: i32) -> bool {
        let (rounded, exact) = self.magnitude.round_up_to(scale as i64);
        if !exact {
            self.magnitude = rounded;
            self.text = None;
        }
        exact
    }

    pub fn neg(&mut self) {
        self.negative = !self.negative && !self.is_zero();
        self.text = None;
    }

    /// Adds `other`; a zero quantity takes on the other's format.
    pub fn add(&mut self, other: &Quantity) {
        if self.is_zero() {
            self.format = other.format;
        }
        self.add_signed(other.negative, &other.magnitude);
    }

    /// Subtracts `other`; a zero quantity takes on the other's format.
    pub fn sub(&mut self, other: &Quantity) {
        if self.is_zero() {
            self.format = other.format;
        }
        self.add_signed(!other.negative, &other.magnitude);
    }

    fn add_signed(&mut self, negative: bool, magnitude: &Dec) {
        self.text = None;
        if magnitude.is_zero() {
            return;
        }
        if self.is_zero() || self.negative == negative {
            self.magnitude = self.magnitude.add(magnitude);
            self.negative = negative;
        } else if self.magnitude.cmp(magnitude) != Ordering::Less {
            self.magnitude = self.magnitude.sub(magnitude);
        } else {
            self.magnitude = magnitude.sub(&self.magnitude);
            self.negative = negative;
        }
        if self.magnitude.is_zero() {
            self.negative = false;
        }
    }

    /// The canonical text, ignoring any kept original text.
    pub fn canonical(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let below_1024 = self.magnitude.cmp(&Dec::from_u128(1024, 0)) == Ordering::Less;
            // A fraction cannot print in powers of 1024 without rounding.
            if below_1024 || self.magnitude.exp < 0 || self.magnitude.exp > MAX_ALIGN_ZEROS {
                format = Format::DecimalSI;
            }
        }
        let sign = if self.negative { "-" } else { "" };
        if format == Format::BinarySI {
            let mut digits = self.magnitude.digits.clone();
            digits.resize(digits.len() + self.magnitude.exp as usize, 0);
            let mut times = 0;
            loop {
                let (quotient, rem) = divmod_small(&digits, 1024);
                if rem != 0 {
                    break;
                }
                let leading = quotient.iter().take_while(|d| **d == 0).count();
                digits = quotient[leading..].to_vec();
                times += 1;
            }
            let suffix = BINARY_SUFFIXES.iter().find(|(_, e)| *e == times * 10).map_or("", |(s, _)| s);
            let number: String = digits.iter().map(|d| (b'0' + d) as char).collect();
            return format!("{sign}{number}{suffix}");
        }
        let mut number = self.magnitude.digit_string();
        let mut exp = self.magnitude.exp;
        while exp % 3 != 0 {
            number.push('0');
            exp -= 1;
        }
        let suffix = match format {
            Format::DecimalExponent if exp == 0 => String::new(),
            Format::DecimalExponent => format!("e{exp}"),
            // Upstream has no suffix past E or below n and prints the bare
            // digits there; kept as is.
            _ => DECIMAL_SUFFIXES.iter().find(|(_, e)| *e as i64 == exp).map_or("", |(s, _)| s).to_string(),
        };
        format!("{sign}{number}{suffix}")
    }
}

impl Default for Quantity {
    /// Zero, DecimalSI.
    fn default() -> Quantity {
        Quantity { negative: false, magnitude: Dec::default(), format: Format::DecimalSI, text: None }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.text {
            Some(t) => f.write_str(t),
            None => f.write_str(&self.canonical()),
        }
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Quantity({:?}, {:?})", self.to_string(), self.format)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.negative == other.negative && self.magnitude == other.magnitude
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.negative.hash(state);
        self.magnitude.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Quantity) -> Ordering {
        match (self.sign(), other.sign()) {
            (a, b) if a != b => a.cmp(&b),
            (-1, _) => other.magnitude.cmp(&self.magnitude),
            _ => self.magnitude.cmp(&other.magnitude),
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity string such as \"100m\" or \"1Gi\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v.trim()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            // Upstream reads a JSON null as zero.
            fn visit_unit<E: de::Error>(self) -> Result<Quantity, E> {
                Ok(Quantity::default())
            }
        }
        d.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests;
