//! The outcome of a rate-limit check, shaped for response headers.

use std::time::Duration;

use crate::key::Dimension;

/// The state of one bucket as seen by one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    /// Which configured limit this is.
    pub dimension: Dimension,
    /// The spec's limit.
    pub limit: u64,
    /// Whole requests still allowed right now (after this request, if it was allowed).
    pub remaining: u64,
    /// The spec's period.
    pub window: Duration,
    /// Unix milliseconds at which the current epoch-aligned window ends.
    pub reset_at_millis: u64,
    /// How long until one more request would be allowed; zero unless this
    /// bucket is what refused the request.
    pub retry_after: Duration,
}

impl LimitStatus {
    /// Whether this bucket refuses a request now. A refusing status always
    /// has a non-zero `retry_after`, which is what this tests.
    pub fn is_exceeded(&self) -> bool {
        !self.retry_after.is_zero()
    }
}

/// The outcome of checking every limit that applies to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// True when every limit allowed the request (and one unit was consumed from each).
    pub allowed: bool,
    /// One status per check, in the order the checks were given.
    pub statuses: Vec<LimitStatus>,
}

impl Decision {
    /// The status to advertise in response headers.
    ///
    /// When denied: the refusing status with the longest `retry_after`, since
    /// waiting any less would be refused again. When allowed: the status with
    /// the fewest remaining requests (ties go to the smaller limit), since
    /// that is the one the client will hit first.
    pub fn tightest(&self) -> Option<&LimitStatus> {
        if self.allowed {
            self.statuses.iter().min_by_key(|s| (s.remaining, s.limit))
        } else {
            // max_by_key returns the last maximum; reversing keeps the first
            // check in configuration order on ties.
            self.statuses
                .iter()
                .rev()
                .filter(|s| s.is_exceeded())
                .max_by_key(|s| s.retry_after)
        }
    }

    /// The dimension that refused the request, if it was refused.
    pub fn denied_by(&self) -> Option<Dimension> {
        if self.allowed {
            None
        } else {
            self.tightest().map(|s| s.dimension)
        }
    }

    /// How long the client must wait before every refusing limit would allow
    /// it again; zero when allowed.
    pub fn retry_after(&self) -> Duration {
        self.statuses
            .iter()
            .map(|s| s.retry_after)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}
