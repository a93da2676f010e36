//! The resource catalog and everything per-kind that both the server and
//! clients need: defaults, validation, table printers, quantities, selectors.

pub mod catalog;
pub mod conversion;
pub mod defaults;
pub mod local_path;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod selectors;
pub mod strategy;
pub mod validation;
