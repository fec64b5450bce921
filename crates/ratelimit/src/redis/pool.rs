//! The Redis limiter's connection pool: deadpool's pool with our own recycling (a connection is
//! trusted until a call through it fails, instead of deadpool-redis's `PING` per checkout, which
//! would double the round trips of every decision), and the background warm-up that lets a slow
//! connect finish after a call gave up on it.
//!
//! A call does not hold its connection exclusively: it clones the multiplexed handle and puts the
//! connection straight back, so concurrent calls share the most recently used one (the pool is
//! LIFO) and their commands leave in one write and come back in one read. Holding a connection
//! per call made every decision its own `writev` and `recv` and its own wake-up of redis-server,
//! which cost more of the gateway's core than the decision itself (docs/performance.md).
//!
//! A call takes the connection the thread used last without going through deadpool at all, while
//! that one is still sound: deadpool's checkout (its semaphore, hooks, recycling and the timer
//! around it) cost more instructions than the rate limiting it carried, and its future, with the
//! connect inline, made every decision's future two kilobytes larger, copied at every `await`
//! that moved it. deadpool makes and replaces connections; that path is boxed, so only a call
//! that needs it carries its state.
//!
//! Each thread that calls the limiter has its own pool. A multiplexed connection is driven by a
//! task on the runtime that made it; one pool shared by all of actix's single-threaded workers
//! would put every worker's commands through the one worker that happened to make the shared
//! connection, a cross-thread wake-up per call each way.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::redis::ConnectionInfo;
use deadpool::Runtime;
use deadpool::managed::{
    self, Metrics, Object, Pool, PoolError, QueueMode, RecycleError, RecycleResult,
};
use tokio::time::{Instant, timeout_at};

use super::conn::{self, Conn, ConnError};
use super::{RedisLimiter, SpawnDriver, timeout_error, unavailable};
use crate::RateLimitError;

/// A connection as the pool holds it (and as a thread keeps the one its calls share: a clone is
/// another handle onto the same connection and flag).
#[derive(Clone)]
pub(super) struct Pooled {
    pub(super) conn: Conn,
    /// Set when a call through it failed or was abandoned; the pool then
    /// discards it instead of handing it out again. Shared with the calls
    /// using it, which may end after it went back to the pool.
    pub(super) broken: Arc<AtomicBool>,
}

impl Pooled {
    /// A handle for one call; `reused`: the connection served a call before.
    fn checkout(&self, reused: bool) -> Checkout {
        Checkout {
            conn: self.conn.clone(),
            broken: Arc::clone(&self.broken),
            reused,
            healthy: false,
        }
    }
}

/// A connection used by one call, shared with the other calls in flight.
/// Unless the call marks it healthy, it is flagged broken when dropped, which
/// also covers a call abandoned at its deadline or cancelled by its caller: a
/// connection whose reply never came may be wedged (a silent network
/// partition), and a multiplexed connection has no other way of noticing.
pub(super) struct Checkout {
    conn: Conn,
    broken: Arc<AtomicBool>,
    reused: bool,
    pub(super) healthy: bool,
}

impl Checkout {
    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Whether the connection had served a call before this one.
    pub(super) fn reused(&self) -> bool {
        self.reused
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.healthy {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

/// Makes the connections (redis/conn.rs), and trusts one until a call through it fails (see
/// [`Checkout`]) or its driver ended. deadpool-redis's manager checks each connection with
/// `UNWATCH` + `PING` whenever it leaves the pool, a second round trip per rate-limit decision.
#[derive(Clone)]
pub(super) struct Manager {
    pub(super) info: ConnectionInfo,
    pub(super) connect_timeout: std::time::Duration,
    pub(super) spawn_driver: Option<SpawnDriver>,
}

impl Manager {
    /// Runs a new connection's driver where [`SpawnDriver`] says.
    fn spawn(&self, driver: super::DriverTask) {
        match &self.spawn_driver {
            Some(spawn) => (spawn.0)(driver),
            None => {
                tokio::spawn(driver);
            }
        }
    }
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = ConnError;

    async fn create(&self) -> Result<Pooled, ConnError> {
        let spawn = |driver| self.spawn(driver);
        let deadline = Instant::now() + self.connect_timeout;
        let conn = timeout_at(deadline, conn::connect(&self.info, &spawn, deadline))
            .await
            .map_err(|_| ConnError::Io("connecting to Redis timed out".into()))??;
        Ok(Pooled {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn recycle(&self, conn: &mut Pooled, _: &Metrics) -> RecycleResult<ConnError> {
        if conn.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message(
                "a call through this connection failed",
            ));
        }
        if conn.conn.is_closed() {
            return Err(RecycleError::message("the connection has closed"));
        }
        Ok(())
    }
}

/// One thread's pool.
pub(super) struct ThreadPool {
    pool: Pool<Manager>,
    /// The connection this thread's calls share, until one of them finds it broken (see the
    /// module doc).
    current: RefCell<Option<Pooled>>,
    /// Set while a background task finishes a connection (see `warm_up`).
    warming: Arc<AtomicBool>,
}

impl ThreadPool {
    /// The shared connection, if it is still sound. One that is not is let go at once (the
    /// pool discards its own handle at the next checkout), so its driver and socket end even
    /// while no new connection can be made.
    fn current(&self) -> Option<Checkout> {
        let mut slot = self.current.borrow_mut();
        let current = slot.as_ref()?;
        if current.broken.load(Ordering::Relaxed) || current.conn.is_closed() {
            *slot = None;
            return None;
        }
        // It served a call before (the one that made it current, at least): a failure may be a
        // server restarted since, worth one more try on a new connection.
        Some(current.checkout(true))
    }
}

/// A pool of at most `size` connections.
pub(super) fn build(manager: Manager, size: usize) -> Result<ThreadPool, RateLimitError> {
    let pool = Pool::builder(manager)
        .max_size(size)
        // The connection used last is the one shared (see the module doc).
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| unavailable(format!("cannot build the Redis pool: {e}")))?;
    Ok(ThreadPool {
        pool,
        current: RefCell::new(None),
        warming: Arc::new(AtomicBool::new(false)),
    })
}

impl RedisLimiter {
    /// This thread's pool, made on its first call.
    fn thread_pool(&self) -> Result<&ThreadPool, RateLimitError> {
        self.pools
            .get_or_try(|| build(self.manager.clone(), self.pool_size))
    }

    /// A pooled connection, within `deadline`: the thread's shared one while it is sound, else
    /// one from the pool, which gets it back at once (see the module doc) and discards a broken
    /// one at its next checkout.
    pub(super) async fn take_connection(
        &self,
        deadline: Instant,
    ) -> Result<Checkout, RateLimitError> {
        let shard = self.thread_pool()?;
        if let Some(checkout) = shard.current() {
            return Ok(checkout);
        }
        // Boxed: the checkout's state (deadpool's, the connect's, the timer's) is carried only
        // by the calls that take this path.
        Box::pin(self.checkout(deadline)).await
    }

    /// A connection from this thread's pool (made if needed), which becomes the thread's shared
    /// one. The pool is looked up again after the wait: a `&ThreadPool` held across it would
    /// make the future `!Send` (its shared connection sits in a `RefCell`).
    async fn checkout(&self, deadline: Instant) -> Result<Checkout, RateLimitError> {
        let pool = self.thread_pool()?.pool.clone();
        match timeout_at(deadline, pool.get()).await {
            Ok(Ok(obj)) => {
                *self.thread_pool()?.current.borrow_mut() = Some(Pooled::clone(&obj));
                Ok(obj.checkout(Object::metrics(&obj).recycle_count > 0))
            }
            Ok(Err(PoolError::Backend(e))) => Err(unavailable(e.to_string())),
            Ok(Err(e)) => Err(unavailable(format!("Redis pool: {e}"))),
            Err(_) => {
                warm_up(self.thread_pool()?, self.connect_timeout);
                Err(timeout_error())
            }
        }
    }
}

/// Finishes making a connection in the background after a call gave up
/// waiting for one. Without this, a connection that takes longer than
/// one call's budget to establish (a TLS handshake to a distant server)
/// would be abandoned by every call and the pool would never recover.
fn warm_up(shard: &ThreadPool, limit: std::time::Duration) {
    if shard.warming.swap(true, Ordering::AcqRel) {
        return;
    }
    let pool = shard.pool.clone();
    let warming = Arc::clone(&shard.warming);
    tokio::spawn(async move {
        // Dropping the connection returns it to the pool for the next call.
        let _ = tokio::time::timeout(limit, pool.get()).await;
        warming.store(false, Ordering::Release);
    });
}
