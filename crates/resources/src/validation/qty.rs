//! The few quantity operations validation needs, over the crate's
//! `resource.Quantity` model: parse the wire string (with upstream's error
//! texts), compare, and print the way upstream's `Quantity.String()` does
//! (the form its messages use, e.g. "must be less than or equal to cpu
//! limit of 500m").

use std::cmp::Ordering;

use crate::quantity::{Format, Quantity};

pub(crate) const QUANTITY_FORMAT_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Clone, Debug)]
pub(crate) struct Qty(Quantity);

impl Qty {
    pub fn parse(s: &str) -> Result<Qty, String> {
        Quantity::parse(s.trim())
            .map(Qty)
            .map_err(|e| e.to_string())
    }

    pub fn cmp(&self, other: &Qty) -> Ordering {
        self.0.cmp(&other.0)
    }

    pub fn is_negative(&self) -> bool {
        self.0.sign() < 0
    }

    pub fn is_positive(&self) -> bool {
        self.0.sign() > 0
    }

    /// Whole units (upstream checks `MilliValue() % 1000 == 0`).
    pub fn is_integer(&self) -> bool {
        self.0.milli_value() % 1000 == 0
    }

    pub fn is_below_one(&self) -> bool {
        self.0 < Quantity::new(1, Format::DecimalSI)
    }

    /// Upstream's `String()`.
    pub fn canonical(&self) -> String {
        self.0.to_string()
    }
}
