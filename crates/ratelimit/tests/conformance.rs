//! The conformance suite on the memory backend: the reference must pass its
//! own suite, and its absolute promises (100 of 150, exact waits) hold.
//! The Redis backend runs the same suite in `tests/redis.rs`.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use infergate_ratelimit::{ManualClock, MemoryLimiter, RateLimiter, conformance};

fn memory(clock: ManualClock) -> std::future::Ready<Arc<dyn RateLimiter>> {
    std::future::ready(Arc::new(MemoryLimiter::new(Arc::new(clock))) as Arc<dyn RateLimiter>)
}

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run_all(memory).await;
}

#[tokio::test]
async fn memory_backend_differential_with_other_seeds() {
    for seed in [1, 2, 3] {
        conformance::differential(&memory, seed, 2_000).await;
    }
}
