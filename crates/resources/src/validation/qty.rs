//! A small private resource.Quantity model for validation: parse the wire
//! string, compare values and print upstream's canonical form (the form its
//! messages use, e.g. "must be less than or equal to cpu limit of 500m").
//! Values are kept in nano-units (rounded up past nano precision, as
//! upstream does), which covers every quantity a sane object carries.

use std::cmp::Ordering;

pub(crate) const QUANTITY_FORMAT_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Qty {
    /// The value times 10^9.
    pub nanos: i128,
    pub format: Format,
}

const NANO: i128 = 1_000_000_000;
const CAP: i128 = i128::MAX / 1024;

impl Qty {
    pub fn parse(s: &str) -> Result<Qty, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QUANTITY_FORMAT_ERR.to_string());
        }
        let b = s.as_bytes();
        let mut i = 0;
        let negative = match b[0] {
            b'-' => {
                i = 1;
                true
            }
            b'+' => {
                i = 1;
                false
            }
            _ => false,
        };
        let num_start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let number = &s[num_start..i];
        let suffix = &s[i..];
        if number.is_empty() || number.matches('.').count() > 1 || number == "." {
            return Err(QUANTITY_FORMAT_ERR.to_string());
        }
        // The suffix must fit `[eEinumkKMGTP]*[-+]?[0-9]*`.
        let sb = suffix.as_bytes();
        let mut j = 0;
        while j < sb.len() && b"eEinumkKMGTP".contains(&sb[j]) {
            j += 1;
        }
        if j < sb.len() && (sb[j] == b'-' || sb[j] == b'+') {
            j += 1;
        }
        while j < sb.len() && sb[j].is_ascii_digit() {
            j += 1;
        }
        if j != sb.len() {
            return Err(QUANTITY_FORMAT_ERR.to_string());
        }
        let (base, exp, format) = match suffix {
            "" => (10, 0, Format::DecimalSI),
            "n" => (10, -9, Format::DecimalSI),
            "u" => (10, -6, Format::DecimalSI),
            "m" => (10, -3, Format::DecimalSI),
            "k" => (10, 3, Format::DecimalSI),
            "M" => (10, 6, Format::DecimalSI),
            "G" => (10, 9, Format::DecimalSI),
            "T" => (10, 12, Format::DecimalSI),
            "P" => (10, 15, Format::DecimalSI),
            "E" => (10, 18, Format::DecimalSI),
            "Ki" => (2, 10, Format::BinarySI),
            "Mi" => (2, 20, Format::BinarySI),
            "Gi" => (2, 30, Format::BinarySI),
            "Ti" => (2, 40, Format::BinarySI),
            "Pi" => (2, 50, Format::BinarySI),
            "Ei" => (2, 60, Format::BinarySI),
            s if (s.starts_with('e') || s.starts_with('E')) && s.len() > 1 => {
                let e: i32 = s[1..]
                    .parse()
                    .map_err(|_| "unable to parse quantity's suffix".to_string())?;
                (10, e, Format::DecimalExponent)
            }
            _ => return Err("unable to parse quantity's suffix".to_string()),
        };
        // The number as an integer mantissa and a power-of-ten scale.
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        let mut mantissa: i128 = 0;
        let mut overflow = false;
        for c in digits.bytes() {
            match mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add((c - b'0') as i128))
            {
                Some(m) if m < CAP => mantissa = m,
                _ => overflow = true,
            }
        }
        let mut scale10: i32 = -(frac_part.len() as i32);
        let mut nanos = if overflow {
            CAP
        } else if base == 2 {
            // mantissa * 2^exp * 10^scale10 * 10^9
            scale10 += 9;
            let v = mantissa.saturating_mul(1i128 << exp).min(CAP);
            apply_pow10(v, scale10)
        } else {
            apply_pow10(mantissa, scale10 + exp + 9)
        };
        if negative {
            nanos = -nanos;
        }
        Ok(Qty { nanos, format })
    }

    pub fn cmp(&self, other: &Qty) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_integer(&self) -> bool {
        self.nanos % NANO == 0
    }

    /// The canonical string (`Quantity.String()`).
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let small = self.nanos > -1024 * NANO && self.nanos < 1024 * NANO;
            if small || !self.is_integer() {
                format = Format::DecimalSI;
            }
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        if format == Format::BinarySI {
            let mut v = abs / NANO;
            let mut e = 0;
            while e < 6 && v % 1024 == 0 {
                v /= 1024;
                e += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e];
            return format!("{sign}{v}{suffix}");
        }
        let mut m = abs;
        let mut e: i32 = -9;
        while m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        let r = e.rem_euclid(3);
        for _ in 0..r {
            m *= 10;
        }
        e -= r;
        let suffix = match format {
            Format::DecimalExponent => {
                if e == 0 {
                    String::new()
                } else {
                    format!("e{e}")
                }
            }
            _ => match e {
                -9 => "n".into(),
                -6 => "u".into(),
                -3 => "m".into(),
                0 => String::new(),
                3 => "k".into(),
                6 => "M".into(),
                9 => "G".into(),
                12 => "T".into(),
                15 => "P".into(),
                18 => "E".into(),
                e => format!("e{e}"),
            },
        };
        format!("{sign}{m}{suffix}")
    }
}

/// v * 10^p, rounding up (away from zero) when precision is lost.
fn apply_pow10(v: i128, p: i32) -> i128 {
    if p > 38 {
        if v == 0 {
            0
        } else {
            CAP
        }
    } else if p >= 0 {
        let mut out = v;
        for _ in 0..p {
            out = out.saturating_mul(10).min(CAP);
        }
        out
    } else if -p > 38 {
        i128::from(v != 0)
    } else {
        let d = 10i128.pow((-p) as u32);
        let q = v / d;
        if v % d != 0 {
            q + 1
        } else {
            q
        }
    }
}
