//! Environment variables as data: one table per document, each row naming the variable, the
//! YAML path it overrides and how its text lands in the raw document.
//!
//! A table instead of one hand-written `if let Some(v) = get(..)` block per variable, so the list
//! of variables is something code can read: `apply` walks it, the error for a bad value names
//! the variable the operator wrote, `set_by_env` remembers which variable set which path (for
//! errors found later), and a test checks every row is documented in `docs/configuration.md`.
//! Settings that combine several variables (`RATE_LIMIT_REQUESTS` with
//! `RATE_LIMIT_PERIOD_SECONDS`) stay hand-written next to the table that precedes them.

use std::collections::BTreeMap;

use crate::{ConfigError, Source, parse};

/// One environment variable of document `R`.
pub struct EnvVar<R> {
    pub name: &'static str,
    /// The YAML path it overrides (`rate_limit.enabled`).
    pub path: &'static str,
    /// Parses the variable's text (naming the variable in any error) into `R`.
    pub apply: fn(&mut R, &'static str, String) -> Result<(), ConfigError>,
}

/// Applies every variable of `table` that `env` sets, in table order, recording which variable
/// set which YAML path.
pub fn apply<R>(
    raw: &mut R,
    env: &dyn Source,
    table: &[EnvVar<R>],
    set_by_env: &mut BTreeMap<&'static str, &'static str>,
) -> Result<(), ConfigError> {
    for var in table {
        if let Some(v) = env.get(var.name) {
            set_by_env.insert(var.path, var.name);
            (var.apply)(raw, var.name, v)?;
        }
    }
    Ok(())
}

/// A row of an [`EnvVar`] table: `var!("NAME", "yaml.path", field.path = parser)`, where the
/// parser is one of this module's value parsers (`text`, `optional`, `boolean`, `positive`,
/// `count`, `list`, `whole`).
macro_rules! var {
    ($name:literal, $path:literal, $($field:ident).+ = $parse:path) => {
        $crate::env::EnvVar {
            name: $name,
            path: $path,
            apply: |raw, name, v| {
                raw.$($field).+ = $parse(name, v)?;
                Ok(())
            },
        }
    };
}
pub(crate) use var;

// Value parsers, all `fn(&'static str, String) -> Result<T, ConfigError>` so the macro can call
// any of them the same way.

/// The text as given.
pub fn text(_: &'static str, v: String) -> Result<String, ConfigError> {
    Ok(v)
}

/// The text, or `None` when it is empty (an explicit "unset").
pub fn optional(_: &'static str, v: String) -> Result<Option<String>, ConfigError> {
    Ok(Some(v).filter(|s| !s.trim().is_empty()))
}

pub fn boolean(name: &'static str, v: String) -> Result<bool, ConfigError> {
    parse::boolean(name, &v)
}

/// A positive whole number.
pub fn positive(name: &'static str, v: String) -> Result<u64, ConfigError> {
    parse::positive_u64(name, &v)
}

/// A positive whole number of things (bytes, connections).
pub fn count(name: &'static str, v: String) -> Result<usize, ConfigError> {
    let n = parse::positive_u64(name, &v)?;
    usize::try_from(n).map_err(|_| ConfigError::invalid(name, v, "a smaller whole number"))
}

/// A whole number where 0 means "one per CPU" (worker counts).
pub fn whole(name: &'static str, v: String) -> Result<usize, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(name, &v, "a whole number (0 = one per CPU)"))
}

/// A JSON list or a comma-separated one.
pub fn list(name: &'static str, v: String) -> Result<Vec<String>, ConfigError> {
    parse::list(name, &v)
}
