//! The exact unsigned decimal behind a quantity.

use std::cmp::Ordering;

/// Beyond this many padding zeros an operand is too far below the other to
/// matter; it keeps absurd exponents ("1e2000000000") from exhausting memory.
pub(super) const MAX_ALIGN_ZEROS: i64 = 100_000;

/// An unsigned decimal `digits * 10^exp`, normalized: no leading or trailing
/// zero digits, and zero is no digits with exponent 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Dec {
    pub(super) digits: Vec<u8>,
    pub(super) exp: i64,
}

impl Dec {
    pub(super) fn new(mut digits: Vec<u8>, mut exp: i64) -> Dec {
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            exp = 0;
        }
        Dec { digits, exp }
    }

    pub(super) fn from_ascii(digits: &[u8], exp: i64) -> Dec {
        Dec::new(digits.iter().map(|b| b - b'0').collect(), exp)
    }

    pub(super) fn from_u128(v: u128, exp: i64) -> Dec {
        Dec::from_ascii(v.to_string().as_bytes(), exp)
    }

    pub(super) fn one(exp: i64) -> Dec {
        Dec { digits: vec![1], exp }
    }

    pub(super) fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// One past the power of ten of the leading digit.
    pub(super) fn order(&self) -> i64 {
        self.digits.len() as i64 + self.exp
    }

    pub(super) fn cmp(&self, other: &Dec) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        self.order().cmp(&other.order()).then_with(|| {
            let n = self.digits.len().max(other.digits.len());
            (0..n)
                .map(|i| self.digits.get(i).unwrap_or(&0).cmp(other.digits.get(i).unwrap_or(&0)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        })
    }

    /// Both operands' digits at their common (lowest) exponent, or None when
    /// one is too small to register next to the other.
    pub(super) fn align(&self, other: &Dec) -> Option<(Vec<u8>, Vec<u8>, i64)> {
        let exp = self.exp.min(other.exp);
        let pad = |d: &Dec| {
            let mut v = d.digits.clone();
            v.resize(v.len() + (d.exp - exp) as usize, 0);
            v
        };
        if (self.exp - other.exp).abs() > MAX_ALIGN_ZEROS {
            return None;
        }
        Some((pad(self), pad(other), exp))
    }

    pub(super) fn add(&self, other: &Dec) -> Dec {
        if self.is_zero() || other.is_zero() {
            return if self.is_zero() { other.clone() } else { self.clone() };
        }
        let Some((a, b, exp)) = self.align(other) else {
            return if self.cmp(other) == Ordering::Less { other.clone() } else { self.clone() };
        };
        let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
        let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
        while i > 0 || j > 0 || carry > 0 {
            let mut sum = carry;
            if i > 0 {
                i -= 1;
                sum += a[i];
            }
            if j > 0 {
                j -= 1;
                sum += b[j];
            }
            out.push(sum % 10);
            carry = sum / 10;
        }
        out.reverse();
        Dec::new(out, exp)
    }

    /// `self - other`; the caller makes sure `self >= other`.
    pub(super) fn sub(&self, other: &Dec) -> Dec {
        if other.is_zero() {
            return self.clone();
        }
        let Some((a, b, exp)) = self.align(other) else {
            return self.clone();
        };
        let mut out = Vec::with_capacity(a.len());
        let (mut j, mut borrow) = (b.len(), 0i8);
        for i in (0..a.len()).rev() {
            let mut d = a[i] as i8 - borrow;
            if j > 0 {
                j -= 1;
                d -= b[j] as i8;
            }
            borrow = if d < 0 { 1 } else { 0 };
            out.push((d + borrow * 10) as u8);
        }
        out.reverse();
        Dec::new(out, exp)
    }

    pub(super) fn mul_small(&self, m: u64) -> Dec {
        let mut out = Vec::with_capacity(self.digits.len() + 20);
        let mut carry: u128 = 0;
        for d in self.digits.iter().rev() {
            let v = *d as u128 * m as u128 + carry;
            out.push((v % 10) as u8);
            carry = v / 10;
        }
        while carry > 0 {
            out.push((carry % 10) as u8);
            carry /= 10;
        }
        out.reverse();
        Dec::new(out, self.exp)
    }

    /// Rounds away from zero to a multiple of 10^exp; false when that lost
    /// precision.
    pub(super) fn round_up_to(&self, exp: i64) -> (Dec, bool) {
        if self.is_zero() || self.exp >= exp {
            return (self.clone(), true);
        }
        // Digits at or above 10^exp; normalized, so something below is non-zero.
        let keep = self.digits.len() as i64 - (exp - self.exp);
        if keep <= 0 {
            return (Dec::one(exp), false);
        }
        let truncated = Dec::new(self.digits[..keep as usize].to_vec(), exp);
        (truncated.add(&Dec::one(exp)), false)
    }

    pub(super) fn digit_string(&self) -> String {
        self.digits.iter().map(|d| (b'0' + d) as char).collect()
    }
}

/// Divides a big-endian digit string by `d`, returning quotient and remainder.
pub(super) fn divmod_small(digits: &[u8], d: u64) -> (Vec<u8>, u64) {
    let mut rem = 0u64;
    let quotient = digits
        .iter()
        .map(|x| {
            let cur = rem * 10 + *x as u64;
            rem = cur % d;
            (cur / d) as u8
        })
        .collect();
    (quotient, rem)
}
