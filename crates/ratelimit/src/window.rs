//! Arithmetic of the sliding-window counter, independent of storage.
//!
//! The algorithm and its accuracy are described in [`crate::memory`]. Kept
//! apart from the map so that any backend computing from the same counts and
//! the same clock reaches the same decision, to the millisecond.
//!
//! All products are taken in `u128`: counts and limits are `u64` and periods
//! are at most a year of milliseconds, so `count * period` cannot overflow and
//! every comparison is exact (no floating point, hence deterministic).

use std::time::Duration;

use crate::RateSpec;
use crate::decision::LimitStatus;
use crate::key::Dimension;

/// What a bucket stores: counts of the epoch-aligned window starting at
/// `start_ms` and of the window just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start_ms: u64,
    pub(crate) current: u64,
    pub(crate) previous: u64,
}

/// Start of the epoch-aligned window containing `now_ms`.
fn window_start(now_ms: u64, period_ms: u64) -> u64 {
    now_ms - now_ms % period_ms
}

impl Window {
    /// True once the bucket's counts can no longer contribute to any estimate:
    /// its current window is two or more windows back, so even its "current"
    /// count would have rolled out of the previous-window slot.
    pub(crate) fn is_expired(&self, now_ms: u64, period_ms: u64) -> bool {
        window_start(now_ms, period_ms) >= self.start_ms.saturating_add(period_ms.saturating_mul(2))
    }
}

/// A bucket's counts rolled forward to a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct View {
    period_ms: u64,
    start_ms: u64,
    /// Milliseconds since `start_ms`; always `< period_ms`.
    elapsed_ms: u64,
    /// How far the clock reads behind `start_ms + elapsed_ms`. Non-zero only
    /// when the clock went backwards past the stored window; the bucket is
    /// then judged at its own window start (the most conservative instant)
    /// and waits are lengthened by the gap.
    lag_ms: u64,
    current: u64,
    previous: u64,
}

impl View {
    /// An empty bucket at `now_ms`.
    pub(crate) fn fresh(now_ms: u64, period_ms: u64) -> Self {
        let start_ms = window_start(now_ms, period_ms);
        Self {
            period_ms,
            start_ms,
            elapsed_ms: now_ms - start_ms,
            lag_ms: 0,
            current: 0,
            previous: 0,
        }
    }

    /// `stored` as it stands at `now_ms`, rolling whole windows forward.
    pub(crate) fn of(stored: &Window, now_ms: u64, period_ms: u64) -> Self {
        let start_now = window_start(now_ms, period_ms);
        if start_now < stored.start_ms {
            return Self {
                period_ms,
                start_ms: stored.start_ms,
                elapsed_ms: 0,
                lag_ms: stored.start_ms - now_ms,
                current: stored.current,
                previous: stored.previous,
            };
        }
        let mut view = Self::fresh(now_ms, period_ms);
        if start_now == stored.start_ms {
            view.current = stored.current;
            view.previous = stored.previous;
        } else if start_now == stored.start_ms.saturating_add(period_ms) {
            view.previous = stored.current;
        }
        view
    }

    /// The same instant after one more request was counted.
    pub(crate) fn consumed(self) -> Self {
        Self {
            current: self.current.saturating_add(1),
            ..self
        }
    }

    /// What to store for this view.
    pub(crate) fn window(&self) -> Window {
        Window {
            start_ms: self.start_ms,
            current: self.current,
            previous: self.previous,
        }
    }

    /// `floor(limit - estimate)`, saturating at 0, where
    /// `estimate = previous * (period - elapsed) / period + current`.
    /// A request is allowed exactly when this is at least 1.
    pub(crate) fn remaining(&self, limit: u64) -> u64 {
        let p = u128::from(self.period_ms);
        let cap = u128::from(limit) * p;
        let used = u128::from(self.previous) * (p - u128::from(self.elapsed_ms))
            + u128::from(self.current) * p;
        if used >= cap {
            0
        } else {
            // (cap - used) / p <= limit, so this always fits.
            u64::try_from((cap - used) / p).unwrap_or(limit)
        }
    }

    /// Smallest whole number of milliseconds after which one request would be
    /// allowed, assuming no other request arrives. Only meaningful when
    /// `remaining(limit) == 0`; never zero.
    ///
    /// The estimate only decays with time and is continuous across a window
    /// boundary (at the boundary the previous weight reaches 0 just as the
    /// current count moves into the previous slot with weight 1), so the
    /// first instant that satisfies `estimate + 1 <= limit` can be solved for
    /// directly, in whichever of the next two windows it falls.
    pub(crate) fn retry_after_ms(&self, limit: u64) -> u64 {
        let p = u128::from(self.period_ms);
        let to_boundary = p - u128::from(self.elapsed_ms);
        let (c, prev, l) = (
            u128::from(self.current),
            u128::from(self.previous),
            u128::from(limit),
        );
        let wait = if l == 0 {
            // Only a hand-built spec has limit 0; nothing will ever be allowed,
            // so point at the window reset rather than invent a time.
            to_boundary
        } else if c < l && prev > 0 {
            // Still within this window: need prev * (to_boundary - t) <= (l - c - 1) * p.
            // `slack / prev < to_boundary` because the request was refused, so t >= 1;
            // t == to_boundary exactly when only the boundary itself suffices.
            let slack = (l - c - 1) * p;
            to_boundary - (slack / prev).min(to_boundary)
        } else {
            // The current count alone fills the limit: wait into the next
            // window, where it becomes `previous` and decays: need
            // c * (p - u) <= (l - 1) * p.
            match ((l - 1) * p).checked_div(c) {
                Some(keep) => to_boundary + (p - keep.min(p)),
                // c == 0 cannot be refused with limit >= 1; kept total for safety.
                None => 1,
            }
        };
        let wait = wait.max(1) + u128::from(self.lag_ms);
        u64::try_from(wait).unwrap_or(u64::MAX)
    }

    /// The status reported for this view. `refused` selects whether a wait
    /// is computed: a request that was allowed reports no wait even when it
    /// used the last unit.
    pub(crate) fn status(
        &self,
        dimension: Dimension,
        spec: &RateSpec,
        refused: bool,
    ) -> LimitStatus {
        let remaining = self.remaining(spec.limit);
        let retry_after = if refused && remaining == 0 {
            Duration::from_millis(self.retry_after_ms(spec.limit))
        } else {
            Duration::ZERO
        };
        LimitStatus {
            dimension,
            limit: spec.limit,
            remaining,
            window: spec.period,
            reset_at_millis: self.start_ms.saturating_add(self.period_ms),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 60_000;

    fn view(elapsed: u64, current: u64, previous: u64) -> View {
        View {
            period_ms: P,
            start_ms: 10 * P,
            elapsed_ms: elapsed,
            lag_ms: 0,
            current,
            previous,
        }
    }

    #[test]
    fn remaining_is_floor_of_limit_minus_estimate() {
        // estimate = 10 * 0.5 + 2 = 7
        assert_eq!(view(P / 2, 2, 10).remaining(10), 3);
        // estimate = 10 * (1 - 1/60000) + 0 -> 9.99983 -> floor(0.00016) = 0
        assert_eq!(view(1, 0, 10).remaining(10), 0);
        assert_eq!(view(0, 0, 0).remaining(10), 10);
        assert_eq!(view(0, 12, 0).remaining(10), 0);
    }

    #[test]
    fn retry_after_within_window_is_exact() {
        // limit 10, prev 10, cur 5 at elapsed 30s: estimate 10; need
        // 10 * (30000 - t) <= 4 * 60000 -> t >= 6000.
        assert_eq!(view(P / 2, 5, 10).retry_after_ms(10), 6_000);
    }

    #[test]
    fn retry_after_into_next_window() {
        // cur = limit = 4 at elapsed 0: next window starts in 60s, then
        // 4 * (60000 - u) <= 3 * 60000 -> u >= 15000.
        assert_eq!(view(0, 4, 0).retry_after_ms(4), 75_000);
        // limit 1: the single request must fully decay.
        assert_eq!(view(0, 1, 0).retry_after_ms(1), 120_000);
    }

    #[test]
    fn clock_behind_stored_window_is_judged_at_window_start() {
        let stored = Window {
            start_ms: 10 * P,
            current: 3,
            previous: 0,
        };
        let v = View::of(&stored, 10 * P - 500, P);
        assert_eq!(v.remaining(3), 0);
        assert_eq!(v.retry_after_ms(3), 500 + P + P / 3);
    }

    #[test]
    fn expiry_after_two_windows() {
        let w = Window {
            start_ms: 10 * P,
            current: 1,
            previous: 0,
        };
        assert!(!w.is_expired(12 * P - 1, P));
        assert!(w.is_expired(12 * P, P));
        assert!(!w.is_expired(0, P));
    }
}
