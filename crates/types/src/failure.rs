//! What a limiter shared through a backend does while that backend is unreachable.

use std::fmt;
use std::str::FromStr;

/// The failure mode of a shared limiter (`rate_limit.failure_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Each replica goes on limiting alone, with its share of the limit.
    Local,
    /// Requests are let through unlimited (fail open: availability over the limit).
    Open,
    /// Limited requests are refused (fail closed: the limit over availability).
    Closed,
}

impl FailureMode {
    /// What the parser accepts, phrased for configuration error messages.
    pub const ACCEPTED: &'static str = "local, open or closed";

    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

impl fmt::Display for FailureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Not one of [`FailureMode::ACCEPTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected {}", FailureMode::ACCEPTED)]
pub struct UnknownFailureMode;

impl FromStr for FailureMode {
    type Err = UnknownFailureMode;

    /// Case and surrounding whitespace are forgiven, as for every enum-valued setting.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [FailureMode::Local, FailureMode::Open, FailureMode::Closed]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownFailureMode)
    }
}

impl serde::Serialize for FailureMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_names_forgiving_case_and_space() {
        for m in [FailureMode::Local, FailureMode::Open, FailureMode::Closed] {
            assert_eq!(m.as_str().parse(), Ok(m));
            assert_eq!(format!(" {} ", m.as_str().to_uppercase()).parse(), Ok(m));
        }
        for bad in ["", "fail-open", "opened", "loc al"] {
            assert_eq!(
                bad.parse::<FailureMode>(),
                Err(UnknownFailureMode),
                "{bad:?}"
            );
        }
    }
}
