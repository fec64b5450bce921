//! Rate specifications such as `100/minute`.
//!
//! A [`RateSpec`] is what operators write in configuration, so parsing is
//! forgiving about case and whitespace but strict about the count: anything
//! that is not a plain positive integer is refused rather than guessed at.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What [`RateSpec`]'s parser accepts, phrased for configuration error messages.
pub const RATE_SPEC_ACCEPTED: &str =
    "N/second, N/minute, N/hour or N/day (also N/s, N/m, N/h, N/d) with N a positive integer";

const SECOND: u64 = 1;
const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Longest period a spec may have. Bounding it keeps all window arithmetic in
/// milliseconds far away from `u64` overflow, and no gateway limit is
/// meaningful over more than a year.
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * DAY);

/// A number of requests allowed per period, e.g. `100/minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateSpec {
    /// Requests allowed per period; at least 1 when built by [`RateSpec::new`] or parsing.
    pub limit: u64,
    /// Length of the window; a whole number of seconds from 1s to [`MAX_PERIOD`]
    /// when built by [`RateSpec::new`] or parsing.
    pub period: Duration,
}

/// Why a rate spec was refused. Messages are short on purpose: the
/// configuration layer adds the setting name, the value and [`RATE_SPEC_ACCEPTED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateSpecError {
    /// Nothing but whitespace.
    #[error("empty rate")]
    Empty,
    /// No `/unit` part, e.g. `10` or `10/`.
    #[error("missing unit")]
    MissingUnit,
    /// The count is zero, negative, not a number or too large.
    #[error("N must be a positive integer")]
    InvalidLimit,
    /// The part after `/` names no known unit.
    #[error("unknown unit")]
    UnknownUnit,
    /// A programmatic period shorter than 1s, longer than [`MAX_PERIOD`] or
    /// not a whole number of seconds.
    #[error("period must be a whole number of seconds between 1s and 365 days")]
    InvalidPeriod,
}

impl RateSpec {
    /// Builds a spec, enforcing the same bounds as the parser.
    pub fn new(limit: u64, period: Duration) -> Result<Self, RateSpecError> {
        if limit == 0 {
            return Err(RateSpecError::InvalidLimit);
        }
        // Whole seconds keep `Display` lossless, so a spec always survives a
        // serialize/deserialize round trip.
        if period < Duration::from_secs(1) || period > MAX_PERIOD || period.subsec_nanos() != 0 {
            return Err(RateSpecError::InvalidPeriod);
        }
        Ok(Self { limit, period })
    }

    /// Period in milliseconds, clamped to `1..=MAX_PERIOD` so that a spec
    /// built with a struct literal (bypassing [`RateSpec::new`]) can neither
    /// divide by zero nor overflow window arithmetic.
    pub fn period_ms(&self) -> u64 {
        let max = MAX_PERIOD.as_millis();
        let ms = self.period.as_millis().clamp(1, max);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

fn unit_seconds(unit: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 14] = [
        ("s", SECOND),
        ("sec", SECOND),
        ("second", SECOND),
        ("seconds", SECOND),
        ("m", MINUTE),
        ("min", MINUTE),
        ("minute", MINUTE),
        ("minutes", MINUTE),
        ("h", HOUR),
        ("hour", HOUR),
        ("hours", HOUR),
        ("d", DAY),
        ("day", DAY),
        ("days", DAY),
    ];
    if let Some((_, secs)) = UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
    {
        return Some(*secs);
    }
    // `N/<M>s` is what `Display` prints for periods without a unit name; it is
    // accepted so that every spec round-trips through its string form.
    let digits = unit.strip_suffix('s').or_else(|| unit.strip_suffix('S'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RateSpecError::Empty);
        }
        let Some((count, unit)) = s.split_once('/') else {
            return Err(RateSpecError::MissingUnit);
        };
        let (count, unit) = (count.trim(), unit.trim());
        // `u64::from_str` would accept a leading `+`; configuration should not.
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RateSpecError::InvalidLimit);
        }
        let limit: u64 = count.parse().map_err(|_| RateSpecError::InvalidLimit)?;
        if unit.is_empty() {
            return Err(RateSpecError::MissingUnit);
        }
        let secs = unit_seconds(unit).ok_or(RateSpecError::UnknownUnit)?;
        Self::new(limit, Duration::from_secs(secs))
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.period.subsec_nanos() != 0 {
            None
        } else {
            match self.period.as_secs() {
                SECOND => Some("second"),
                MINUTE => Some("minute"),
                HOUR => Some("hour"),
                DAY => Some("day"),
                _ => None,
            }
        };
        match name {
            Some(name) => write!(f, "{}/{}", self.limit, name),
            None if self.period.subsec_nanos() == 0 => {
                write!(f, "{}/{}s", self.limit, self.period.as_secs())
            }
            // Only reachable through a struct literal; shown for debugging, not parsable.
            None => write!(f, "{}/{}ms", self.limit, self.period.as_millis()),
        }
    }
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;

        impl Visitor<'_> for SpecVisitor {
            type Value = RateSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a rate: {RATE_SPEC_ACCEPTED}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateSpec, E> {
                v.parse().map_err(|e: RateSpecError| {
                    E::custom(format_args!(
                        "invalid rate `{v}`: {e}; accepted: {RATE_SPEC_ACCEPTED}"
                    ))
                })
            }
        }

        deserializer.deserialize_str(SpecVisitor)
    }
}
