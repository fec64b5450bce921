//! Heap cost of the memory backend per tracked client.
//!
//! This file alone uses `unsafe`, to install a counting global allocator; the
//! library itself forbids it. It holds a single test so nothing else in the
//! process allocates while it measures.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A counting global allocator cannot be written without `unsafe` (GlobalAlloc is an unsafe trait).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infergate_ratelimit::{BucketKey, LimitCheck, ManualClock, MemoryLimiter, RateSpec};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLIENTS: u32 = 1_000_000;
const BUDGET: usize = 256 * 1024 * 1024;

#[test]
fn a_million_ip_buckets_fit_the_budget() {
    let spec = RateSpec::new(100, Duration::from_secs(60)).unwrap();
    let clock = ManualClock::new(19_675 * 86_400_000);

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();

    let limiter = MemoryLimiter::new(Arc::new(clock));
    let mut check = [LimitCheck::new(
        BucketKey::ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        spec,
    )];
    for n in 0..CLIENTS {
        // Reuse the check and change only the address: the measurement is
        // of what the limiter keeps, not of the caller's request objects.
        check[0].key = BucketKey::ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
        assert!(limiter.check_now(&check).allowed);
    }

    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    assert_eq!(limiter.len(), CLIENTS as usize);
    eprintln!(
        "memory backend: {CLIENTS} IP buckets hold {live} bytes live ({:.1} MiB, {:.1} bytes per client); \
         peak while growing {peak} bytes ({:.1} MiB); inserted in {elapsed:?}",
        live as f64 / (1024.0 * 1024.0),
        live as f64 / f64::from(CLIENTS),
        peak as f64 / (1024.0 * 1024.0),
    );
    assert!(live < BUDGET, "{live} bytes for {CLIENTS} clients");

    drop(limiter);
    let after = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert!(after < 1024 * 1024, "{after} bytes still live after drop");
}
