//! Redis's clock as one replica estimates it, for the counters layout.
//!
//! A counters check names its window keys before it is sent, so its instant cannot come from a
//! `TIME` inside the call the way the scripts read it. Each replica instead keeps the offset
//! between its own wall clock and the server's, refreshed by a `TIME` riding along with a check
//! at most once a second, and reads "now" as its clock plus that offset: replicas whose clocks
//! disagree still name the same windows (to within half a round trip), at the cost of a
//! `TIME` a second instead of one per check.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::wire::{Value, decimal};

use crate::{Clock, SystemClock};

/// How often a check carries a `TIME` to refresh the offset.
const SYNC_EVERY_MS: u64 = 1_000;

pub(super) struct ServerClock {
    /// Server minus local, in ms.
    offset_ms: AtomicI64,
    /// Local wall-clock ms after which the next call carries a `TIME`.
    next_sync_ms: AtomicU64,
}

impl ServerClock {
    pub(super) fn new() -> Self {
        Self {
            offset_ms: AtomicI64::new(0),
            next_sync_ms: AtomicU64::new(0),
        }
    }

    /// The local wall clock, in Unix ms.
    pub(super) fn local_ms() -> u64 {
        SystemClock.now_millis()
    }

    /// The server's time now as estimated, and whether the caller should send a `TIME` along
    /// (and hand its reply to [`observe`](Self::observe)): true for one call a second.
    pub(super) fn read(&self) -> (u64, bool) {
        let local = Self::local_ms();
        let next = self.next_sync_ms.load(Ordering::Relaxed);
        let sync = local >= next
            && self
                .next_sync_ms
                .compare_exchange(
                    next,
                    local.saturating_add(SYNC_EVERY_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        let now = local.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed));
        (now, sync)
    }

    /// Takes a `TIME` reply received between local instants `sent` and `received`: the server
    /// read its clock somewhere in between, so the middle is the best guess (off by at most
    /// half the round trip). Anything but a `TIME` reply is ignored; the next call retries.
    pub(super) fn observe(&self, sent: u64, received: u64, time: &Value) {
        if let Some(server) = time_ms(time) {
            let middle = sent + received.saturating_sub(sent) / 2;
            let offset = i128::from(server) - i128::from(middle);
            if let Ok(offset) = i64::try_from(offset) {
                self.offset_ms.store(offset, Ordering::Relaxed);
            }
        }
    }
}

/// A `TIME` reply (seconds and microseconds, as two bulk strings) in Unix ms.
fn time_ms(time: &Value) -> Option<u64> {
    let Value::Array(parts) = time else {
        return None;
    };
    let number = |v: &Value| match v {
        Value::Bulk(b) => decimal(b).and_then(|n| u64::try_from(n).ok()),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    match parts.as_slice() {
        [secs, micros] => number(secs)?
            .checked_mul(1_000)?
            .checked_add(number(micros)? / 1_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: &str, micros: &str) -> Value {
        Value::Array(vec![
            Value::Bulk(secs.as_bytes().to_vec()),
            Value::Bulk(micros.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn the_offset_is_the_server_time_at_the_middle_of_the_round_trip() {
        let clock = ServerClock::new();
        // Sent at 1,000 ms, answered at 1,010: the server read 5,000,123 ms.
        clock.observe(1_000, 1_010, &time("5000", "123999"));
        assert_eq!(clock.offset_ms.load(Ordering::Relaxed), 5_000_123 - 1_005);
        // A server behind the replica gives a negative offset.
        clock.observe(10_000, 10_000, &time("9", "0"));
        assert_eq!(clock.offset_ms.load(Ordering::Relaxed), -1_000);
        // Not a TIME reply: the offset stays.
        for bad in [
            Value::Nil,
            time("x", "1"),
            Value::Array(vec![]),
            time("18446744073709551615", "0"),
        ] {
            clock.observe(0, 0, &bad);
            assert_eq!(clock.offset_ms.load(Ordering::Relaxed), -1_000);
        }
    }

    #[test]
    fn one_call_a_second_carries_a_time() {
        let clock = ServerClock::new();
        let (_, first) = clock.read();
        let (_, second) = clock.read();
        assert!(first, "the first call syncs");
        assert!(!second, "the next ones within the second do not");
        clock.next_sync_ms.store(0, Ordering::Relaxed);
        assert!(clock.read().1, "due again");
    }
}
