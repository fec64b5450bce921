//! The Redis limiter's connection pool: deadpool's pool with our own recycling (a connection is
//! trusted until a call through it fails, instead of deadpool-redis's `PING` per checkout, which
//! would double the round trips of every decision), and the background warm-up that lets a slow
//! connect finish after a call gave up on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redis::RedisError;
use ::redis::aio::MultiplexedConnection;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use tokio::time::{Instant, timeout_at};

use super::{RedisLimiter, describe, timeout_error, unavailable};
use crate::RateLimitError;

/// A connection as the pool holds it.
pub(super) struct Pooled {
    pub(super) conn: MultiplexedConnection,
    /// Set when a call through it failed or was abandoned; the pool then
    /// discards it instead of handing it out again.
    pub(super) broken: bool,
}

/// A connection taken from the pool for one call. Unless the call marks it
/// healthy, it is flagged broken when dropped, which also covers a call
/// abandoned at its deadline or cancelled by its caller: a connection whose
/// reply never came may be wedged (a silent network partition), and a
/// multiplexed connection has no other way of noticing.
pub(super) struct Checkout {
    pub(super) obj: Object<Manager>,
    pub(super) healthy: bool,
}

impl Checkout {
    pub(super) fn conn(&mut self) -> &mut MultiplexedConnection {
        &mut self.obj.conn
    }

    /// Whether the connection had served a call before this one.
    pub(super) fn reused(&self) -> bool {
        Object::metrics(&self.obj).recycle_count > 0
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.healthy {
            self.obj.broken = true;
        }
    }
}

/// deadpool-redis's manager makes the connections; recycling is ours.
/// deadpool-redis checks each connection with `UNWATCH` + `PING` whenever it
/// leaves the pool, a second round trip per rate-limit decision. Here a
/// connection is trusted until a call through it fails (see [`Checkout`]).
pub(super) struct Manager {
    pub(super) inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        let conn = managed::Manager::create(&self.inner).await?;
        Ok(Pooled {
            conn,
            broken: false,
        })
    }

    async fn recycle(&self, conn: &mut Pooled, _: &Metrics) -> RecycleResult<RedisError> {
        if conn.broken {
            return Err(RecycleError::message(
                "a call through this connection failed",
            ));
        }
        Ok(())
    }
}

impl RedisLimiter {
    /// A pooled connection, within `deadline`.
    pub(super) async fn take_connection(
        &self,
        deadline: Instant,
    ) -> Result<Checkout, RateLimitError> {
        match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(obj)) => Ok(Checkout {
                obj,
                healthy: false,
            }),
            Ok(Err(PoolError::Backend(e))) => Err(unavailable(describe(&e))),
            Ok(Err(e)) => Err(unavailable(format!("Redis pool: {e}"))),
            Err(_) => {
                self.warm_up();
                Err(timeout_error())
            }
        }
    }

    /// Finishes making a connection in the background after a call gave up
    /// waiting for one. Without this, a connection that takes longer than
    /// one call's budget to establish (a TLS handshake to a distant server)
    /// would be abandoned by every call and the pool would never recover.
    fn warm_up(&self) {
        if self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let warming = Arc::clone(&self.warming);
        let limit = self.connect_timeout;
        tokio::spawn(async move {
            // Dropping the connection returns it to the pool for the next call.
            let _ = tokio::time::timeout(limit, pool.get()).await;
            warming.store(false, Ordering::Release);
        });
    }
}
