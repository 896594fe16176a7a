//! How a report reaches stdout: one JSON object or a table, and the JSON stand-ins for values
//! JSON cannot hold.

use anyhow::{Context, Result};
use serde::Serialize;

/// Prints `report` as pretty JSON with `json`, else as `table` prints it.
pub(super) fn emit<T: Serialize>(report: &T, json: bool, table: fn(&T)) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("serialising the report")?
        );
    } else {
        table(report);
    }
    Ok(())
}

/// `v` when finite, else null (JSON has no NaN or infinity).
pub(super) fn finite_or_null(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A table cell: "inf" when infinite, "-" when there is no value, else `digits` decimals.
pub(super) fn fmt_value(v: Option<f64>, infinite: bool, digits: usize) -> String {
    match (v, infinite) {
        (_, true) => "inf".into(),
        (Some(v), _) => format!("{v:.digits$}"),
        (None, _) => "-".into(),
    }
}
