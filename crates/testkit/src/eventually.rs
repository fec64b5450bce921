//! Waiting for a condition that another task or process makes true.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it returns true and returns how long that took; fails the test, naming
/// `what`, after `limit`. Give `limit` room for a loaded 2-core machine: it bounds a failure's
/// wait, it does not measure speed.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}
