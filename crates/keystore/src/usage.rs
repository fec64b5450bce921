//! Per-key usage: requests and tokens per UTC day for the last [`RETAINED_DAYS`] days, and when a
//! key was last used. Gateways count in memory and flush coalesced batches
//! ([`crate::KeyStore::record_usage`], every few seconds, never a write per request); key-admin
//! reads them ([`crate::KeyStore::usage`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Days of usage a store keeps (and `GET /v1/keys/{id}/usage` reports at most).
pub const RETAINED_DAYS: u64 = 31;

/// What one gateway counted for one key on one day since its last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub id: String,
    pub date: NaiveDate,
    /// The minute (Unix minutes: ms / 60,000) the counts fell in, for the current windows.
    pub minute: u64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests the gateway refused, by reason.
    pub refused: Refusals,
    pub last_used_at: DateTime<Utc>,
}

/// A key's refused requests by reason: a request limit, a token limit, a concurrency cap, or its
/// role or model allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Refusals {
    pub rate_limited: u64,
    pub token_limited: u64,
    pub concurrency_limited: u64,
    pub forbidden: u64,
}

impl Refusals {
    pub fn add(&mut self, o: &Refusals) {
        self.rate_limited = self.rate_limited.saturating_add(o.rate_limited);
        self.token_limited = self.token_limited.saturating_add(o.token_limited);
        self.concurrency_limited = self
            .concurrency_limited
            .saturating_add(o.concurrency_limited);
        self.forbidden = self.forbidden.saturating_add(o.forbidden);
    }
}

/// One day's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DayTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub refused: Refusals,
}

impl DayTotals {
    fn add(&mut self, d: &UsageDelta) {
        self.requests = self.requests.saturating_add(d.requests);
        self.input_tokens = self.input_tokens.saturating_add(d.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(d.output_tokens);
        self.refused.add(&d.refused);
    }

    /// Adds another day's totals (for sums over days).
    pub fn sum(&mut self, o: &DayTotals) {
        self.requests = self.requests.saturating_add(o.requests);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.refused.add(&o.refused);
    }
}

/// One day of a key's usage, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub totals: DayTotals,
}

/// A key's usage as a store reports it: days with any use, oldest first, and the current and
/// previous minute (the windows a per-minute limit slides over), as of the last flush.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KeyUsage {
    pub last_used_at: Option<DateTime<Utc>>,
    pub days: Vec<DayUsage>,
    pub current_minute: DayTotals,
    pub previous_minute: DayTotals,
}

/// The Unix minute of `t`.
pub fn minute_of(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0) / 60
}

/// One key's usage as a store that keeps it in process (memory, file) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageBook {
    pub last_used_at: Option<DateTime<Utc>>,
    pub days: BTreeMap<NaiveDate, DayTotals>,
    /// The last two minutes with use (Unix minute → totals).
    #[serde(default)]
    pub minutes: BTreeMap<u64, DayTotals>,
}

/// The first day still kept on `today`.
pub fn first_kept(today: NaiveDate) -> NaiveDate {
    today
        .checked_sub_days(Days::new(RETAINED_DAYS - 1))
        .unwrap_or(NaiveDate::MIN)
}

impl UsageBook {
    /// Adds a delta and drops days past retention and minutes that can no longer be a current
    /// window, both judged at `now` (a delta dated after `now`'s day counts as today).
    pub fn add(&mut self, d: &UsageDelta, now: DateTime<Utc>) {
        let today = now.date_naive().max(d.date);
        self.days.entry(d.date).or_default().add(d);
        if self.last_used_at.is_none_or(|t| t < d.last_used_at) {
            self.last_used_at = Some(d.last_used_at);
        }
        let keep = first_kept(today);
        self.days.retain(|date, _| *date >= keep);
        self.minutes.entry(d.minute).or_default().add(d);
        // Only this minute and the one before can be a current window.
        let now = minute_of(now);
        self.minutes.retain(|m, _| *m + 1 >= now);
    }

    /// The last `days` days up to `today`, and the minute `now_minute` and the one before.
    pub fn report(&self, today: NaiveDate, days: u64, now_minute: u64) -> KeyUsage {
        let from = today
            .checked_sub_days(Days::new(days.clamp(1, RETAINED_DAYS) - 1))
            .unwrap_or(NaiveDate::MIN);
        KeyUsage {
            last_used_at: self.last_used_at,
            days: self
                .days
                .range(from..=today)
                .map(|(date, totals)| DayUsage {
                    date: *date,
                    totals: *totals,
                })
                .collect(),
            current_minute: self.minutes.get(&now_minute).copied().unwrap_or_default(),
            previous_minute: self
                .minutes
                .get(&now_minute.saturating_sub(1))
                .copied()
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(date: NaiveDate, requests: u64, at: &str) -> UsageDelta {
        UsageDelta {
            id: "k".into(),
            date,
            minute: minute_of(at.parse().unwrap()),
            requests,
            input_tokens: 10 * requests,
            output_tokens: 1,
            refused: Refusals::default(),
            last_used_at: at.parse().unwrap(),
        }
    }

    #[test]
    fn deltas_add_up_per_day_and_old_days_fall_out() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let old = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let mut book = UsageBook::default();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        book.add(
            &delta(old, 5, "2026-11-01T10:00:00Z"),
            at("2026-11-01T10:00:00Z"),
        );
        book.add(
            &delta(today, 2, "2026-12-03T10:00:00Z"),
            at("2026-12-03T10:00:00Z"),
        );
        book.add(
            &delta(today, 3, "2026-12-03T09:00:00Z"),
            at("2026-12-03T10:00:10Z"),
        );
        let r = book.report(
            today,
            30,
            minute_of("2026-12-03T10:00:30Z".parse().unwrap()),
        );
        assert_eq!(r.days.len(), 1, "the 1 November is past retention");
        assert_eq!(r.days[0].totals.requests, 5);
        assert_eq!(r.days[0].totals.input_tokens, 50);
        assert_eq!(
            r.last_used_at.unwrap().to_rfc3339(),
            "2026-12-03T10:00:00+00:00"
        );
        let _ = r;
        // The current windows: this minute and the one before.
        let now = at("2026-12-03T23:30:20Z");
        let mut book = UsageBook::default();
        let old = now - chrono::Duration::minutes(90);
        book.add(&delta(old.date_naive(), 9, &old.to_rfc3339()), old);
        book.add(&delta(now.date_naive(), 4, &now.to_rfc3339()), now);
        let r = book.report(now.date_naive(), 30, minute_of(now));
        assert_eq!(r.current_minute.requests, 4);
        assert_eq!(r.previous_minute.requests, 0);
        assert_eq!(book.minutes.len(), 1, "an hour-old minute is not kept");
        assert_eq!(book.report(today, 1, 0).days.len(), 1);
    }
}
