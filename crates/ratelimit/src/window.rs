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

use crate::decision::LimitStatus;
use crate::key::LimitCheck;

/// What a bucket stores: counts of the epoch-aligned window starting at
/// `start_ms` and of the window just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start_ms: u64,
    pub(crate) current: u64,
    pub(crate) previous: u64,
}

/// How a bucket's time is cut into windows: the period, and for a fixed-window quota (a daily
/// token budget resetting at a configured hour) the offset of its boundaries from the epoch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Grid {
    pub(crate) period_ms: u64,
    /// `Some`: a fixed window (the previous window never counts), its boundaries this many
    /// milliseconds after the epoch-aligned ones (always below the period).
    pub(crate) fixed_offset_ms: Option<u64>,
}

impl Grid {
    /// The sliding window of `period_ms`, epoch-aligned.
    #[cfg(test)]
    pub(crate) const fn sliding(period_ms: u64) -> Self {
        Self {
            period_ms,
            fixed_offset_ms: None,
        }
    }

    fn offset(&self) -> u64 {
        self.fixed_offset_ms.unwrap_or(0) % self.period_ms.max(1)
    }

    /// Start of the window containing `now_ms`.
    pub(crate) fn start(&self, now_ms: u64) -> u64 {
        let offset = self.offset();
        if now_ms < offset {
            // Before the first boundary after the epoch: only a test clock reads this.
            return 0;
        }
        now_ms - (now_ms - offset) % self.period_ms
    }

    /// Whether `start_ms` is a boundary of this grid (anything else was written by another
    /// program and is read as an empty bucket).
    pub(crate) fn on_grid(&self, start_ms: u64) -> bool {
        start_ms == 0
            || start_ms
                .checked_sub(self.offset())
                .is_some_and(|s| s % self.period_ms == 0)
    }
}

impl Window {
    /// True once the bucket's counts can no longer contribute to any estimate:
    /// its current window is two or more windows back, so even its "current"
    /// count would have rolled out of the previous-window slot.
    ///
    /// `start + 2 * period` is a boundary of the bucket's grid whatever its offset, so comparing
    /// the instant itself needs no more than the period.
    pub(crate) fn is_expired(&self, now_ms: u64, period_ms: u64) -> bool {
        now_ms >= self.start_ms.saturating_add(period_ms.saturating_mul(2))
    }

    /// Settles a charge made at `charged_at_ms` by `delta` units (negative: given back), in
    /// whichever of the stored windows took it; a charge whose window has rolled out of the
    /// estimate changes nothing. Counts never go below zero.
    pub(crate) fn adjust(&mut self, grid: Grid, charged_at_ms: u64, delta: i64) {
        let charged = grid.start(charged_at_ms);
        if self.start_ms == charged {
            self.current = self.current.saturating_add_signed(delta);
        } else if grid.fixed_offset_ms.is_none()
            && self.start_ms == charged.saturating_add(grid.period_ms)
        {
            self.previous = self.previous.saturating_add_signed(delta);
        }
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
    pub(crate) fn fresh(now_ms: u64, grid: Grid) -> Self {
        let start_ms = grid.start(now_ms);
        Self {
            period_ms: grid.period_ms,
            start_ms,
            elapsed_ms: now_ms - start_ms,
            lag_ms: 0,
            current: 0,
            previous: 0,
        }
    }

    /// `stored` as it stands at `now_ms`, rolling whole windows forward. A fixed window keeps
    /// no previous count: its quota resets whole at each boundary.
    pub(crate) fn of(stored: &Window, now_ms: u64, grid: Grid) -> Self {
        let period_ms = grid.period_ms;
        let fixed = grid.fixed_offset_ms.is_some();
        let start_now = grid.start(now_ms);
        if start_now < stored.start_ms {
            return Self {
                period_ms,
                start_ms: stored.start_ms,
                elapsed_ms: 0,
                lag_ms: stored.start_ms - now_ms,
                current: stored.current,
                previous: if fixed { 0 } else { stored.previous },
            };
        }
        let mut view = Self::fresh(now_ms, grid);
        if start_now == stored.start_ms {
            view.current = stored.current;
            view.previous = if fixed { 0 } else { stored.previous };
        } else if !fixed && start_now == stored.start_ms.saturating_add(period_ms) {
            view.previous = stored.current;
        }
        view
    }

    /// The same instant after `cost` more units (one request, or a token reservation) were
    /// counted.
    pub(crate) fn consumed(self, cost: u64) -> Self {
        Self {
            current: self.current.saturating_add(cost),
            ..self
        }
    }

    /// Whether `cost` more units fit: `estimate + cost <= limit`, exactly.
    pub(crate) fn admits(&self, limit: u64, cost: u64) -> bool {
        self.remaining(limit) >= cost
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

    /// Smallest whole number of milliseconds after which `cost` more units
    /// would be allowed, assuming no other request arrives. Only meaningful when
    /// `remaining(limit) < cost`; never zero. A cost above the limit never fits:
    /// the wait then reported is until the bucket is empty again.
    ///
    /// The estimate only decays with time and is continuous across a window
    /// boundary (at the boundary the previous weight reaches 0 just as the
    /// current count moves into the previous slot with weight 1), so the
    /// first instant that satisfies `estimate + cost <= limit` can be solved for
    /// directly, in whichever of the next two windows it falls. A fixed window
    /// admits again only at its boundary.
    pub(crate) fn retry_after_ms(&self, limit: u64, cost: u64, fixed: bool) -> u64 {
        let p = u128::from(self.period_ms);
        let to_boundary = p - u128::from(self.elapsed_ms);
        let (c, prev, l, k) = (
            u128::from(self.current),
            u128::from(self.previous),
            u128::from(limit),
            u128::from(cost.max(1)),
        );
        let wait = if l == 0 || fixed {
            // A fixed window frees its quota at the boundary. Only a hand-built spec has
            // limit 0; nothing will ever be allowed, so point at the window reset rather than
            // invent a time.
            to_boundary
        } else if k > l {
            // Never fits; the bucket is empty once both windows have rolled out.
            to_boundary + p
        } else if c + k <= l && prev > 0 {
            // Still within this window: need prev * (to_boundary - t) <= (l - c - k) * p.
            // `slack / prev < to_boundary` because the request was refused, so t >= 1;
            // t == to_boundary exactly when only the boundary itself suffices.
            let slack = (l - c - k) * p;
            to_boundary - (slack / prev).min(to_boundary)
        } else {
            // The current count alone leaves no room: wait into the next
            // window, where it becomes `previous` and decays: need
            // c * (p - u) <= (l - k) * p.
            match ((l - k) * p).checked_div(c) {
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
    pub(crate) fn status(&self, check: &LimitCheck, refused: bool) -> LimitStatus {
        let spec = &check.spec;
        let remaining = self.remaining(spec.limit);
        let retry_after = if refused && remaining < check.cost.max(1) {
            Duration::from_millis(self.retry_after_ms(
                spec.limit,
                check.cost,
                check.fixed_offset_ms.is_some(),
            ))
        } else {
            Duration::ZERO
        };
        LimitStatus {
            dimension: check.key.dimension,
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
        assert_eq!(view(P / 2, 5, 10).retry_after_ms(10, 1, false), 6_000);
    }

    #[test]
    fn retry_after_into_next_window() {
        // cur = limit = 4 at elapsed 0: next window starts in 60s, then
        // 4 * (60000 - u) <= 3 * 60000 -> u >= 15000.
        assert_eq!(view(0, 4, 0).retry_after_ms(4, 1, false), 75_000);
        // limit 1: the single request must fully decay.
        assert_eq!(view(0, 1, 0).retry_after_ms(1, 1, false), 120_000);
    }

    #[test]
    fn clock_behind_stored_window_is_judged_at_window_start() {
        let stored = Window {
            start_ms: 10 * P,
            current: 3,
            previous: 0,
        };
        let v = View::of(&stored, 10 * P - 500, Grid::sliding(P));
        assert_eq!(v.remaining(3), 0);
        assert_eq!(v.retry_after_ms(3, 1, false), 500 + P + P / 3);
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

    #[test]
    fn a_cost_is_admitted_only_when_it_fits_whole() {
        // estimate 7 of 10: 3 fit, 4 do not.
        let v = view(P / 2, 2, 10);
        assert!(v.admits(10, 3));
        assert!(!v.admits(10, 4));
        assert_eq!(v.consumed(3).remaining(10), 0);
        // Need 10 * (30000 - t) <= (10 - 2 - 4) * 60000 -> t >= 6000.
        assert_eq!(v.retry_after_ms(10, 4, false), 6_000);
        // A cost above the limit never fits: wait until the bucket is empty.
        assert_eq!(v.retry_after_ms(10, 11, false), P / 2 + P);
    }

    #[test]
    fn a_fixed_window_resets_whole_at_its_offset_boundary() {
        const DAY: u64 = 86_400_000;
        let grid = Grid {
            period_ms: DAY,
            fixed_offset_ms: Some(6 * 3_600_000),
        };
        let t = 20_000 * DAY + 5 * 3_600_000; // 05:00 UTC: still yesterday's quota day
        assert_eq!(grid.start(t), 19_999 * DAY + 6 * 3_600_000);
        assert!(grid.on_grid(grid.start(t)));
        assert!(!grid.on_grid(20_000 * DAY));
        let stored = Window {
            start_ms: grid.start(t),
            current: 900,
            previous: 0,
        };
        let v = View::of(&stored, t, grid);
        assert_eq!(v.remaining(1_000), 100);
        assert_eq!(v.retry_after_ms(1_000, 200, true), 3_600_000);
        // After 06:00 the day is fresh, and yesterday's use does not decay into it.
        let v = View::of(&stored, t + 3_600_000, grid);
        assert_eq!(v.remaining(1_000), 1_000);
    }

    #[test]
    fn settlement_lands_in_the_window_that_was_charged() {
        let grid = Grid::sliding(P);
        let mut w = Window {
            start_ms: 10 * P,
            current: 500,
            previous: 300,
        };
        w.adjust(grid, 10 * P + 5, -200);
        assert_eq!((w.current, w.previous), (300, 300));
        w.adjust(grid, 9 * P + 5, -400);
        assert_eq!((w.current, w.previous), (300, 0), "never below zero");
        w.adjust(grid, 8 * P, 50);
        assert_eq!(
            (w.current, w.previous),
            (300, 0),
            "rolled out: nothing to settle"
        );
        w.adjust(grid, 10 * P, 25);
        assert_eq!(w.current, 325, "an overrun is charged");
    }
}
