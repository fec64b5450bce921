//! A key store in Redis, shared by every gateway replica, with a pub/sub change feed.
//!
//! # Data layout
//!
//! Every name starts with a hash tag made of the configured prefix, so all data of one store
//! lives in one Redis Cluster slot (the Lua scripts below touch several keys at once, which a
//! cluster only allows within one slot), while stores with different prefixes spread over
//! different slots. With prefix `P`:
//!
//! | name                 | type       | contents                                                  |
//! |----------------------|------------|-----------------------------------------------------------|
//! | `{P:keys}:k:<id>`    | string     | the [`StoredKey`] as JSON                                 |
//! | `{P:keys}:ids`       | sorted set | member = key id, score = `created_at` in Unix millis      |
//! | `{P:keys}:audit`     | list       | [`AuditEntry`] JSON, appended with `RPUSH`, never changed |
//! | `{P:keys}:op:<uuid>` | string     | a write's idempotency token, expires after 60 s           |
//! | `P:keys:changes`     | channel    | the id of each created or updated key                     |
//!
//! [`KeyNames`] computes these names. The default prefix is [`DEFAULT_PREFIX`].
//!
//! # Writes
//!
//! - `create` is one Lua script: set the record if absent, add its id to the sorted set, publish.
//! - `update` is optimistic: read the record, apply the [`KeyPatch`] in Rust, then a Lua
//!   compare-and-set writes the result only if the record is still exactly what was read
//!   (retried up to 50 times under contention). Unlike `WATCH`/`MULTI`, which bind state to one
//!   connection, this works over the shared multiplexed connection.
//! - The id is published by the same script that writes, so a change is never stored without
//!   being announced (no crash window between two round trips).
//! - Each call is bounded by a timeout (default 2 s, [`RedisKeyStore::with_timeout`]), within
//!   which a dropped connection is retried after the connection manager reconnects (the first
//!   call after a Redis restart thus succeeds). Retrying a write is safe: `update` re-applies an
//!   idempotent patch, and `create` and `append_audit` carry a token (`{P:keys}:op:<uuid>`) that
//!   lets a retry recognise a write whose reply was lost. Whatever still fails becomes
//!   [`KeyStoreError::Unavailable`].
//!
//! # Change feed
//!
//! A background task holds a dedicated pub/sub connection subscribed to the channel and turns
//! each message into [`KeyChange::Key`]. Every instance — including the writer itself — learns
//! of a change the same way, through Redis. When the subscription is lost (detected by the
//! stream ending or a failed health `PING`), it resubscribes with backoff (100 ms doubling to
//! 2 s) and then sends [`KeyChange::All`], because messages published meanwhile are lost for
//! good. The task stops when the store is dropped.
//!
//! Errors and logs never contain a secret: the URL's password is masked everywhere.
//!
//! This backend talks to one Redis server (or a primary behind a proxy or Sentinel-managed
//! address); the hash tags keep the layout ready for Redis Cluster.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, RedisResult, RetryMethod, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

mod feed;
mod names;
mod redaction;

use self::feed::{FEED_BACKOFF_MAX, Feed, subscribe};
pub use self::names::KeyNames;
use self::redaction::Redaction;
use crate::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyStoreError, ListQuery,
    Page, StoredKey, page_of,
};

/// The prefix used when the configuration names none.
pub const DEFAULT_PREFIX: &str = "infergate";

/// The default bound on each store call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times `update` re-reads a record that another writer changed under it.
const UPDATE_ATTEMPTS: usize = 50;

/// How long a write's idempotency token lives: far longer than any call's retries.
const OP_TOKEN_TTL_MS: u64 = 60_000;

/// Pause before retrying a call whose connection dropped, so the manager can reconnect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Changes buffered per receiver; a receiver that falls further behind gets `Lagged` and
/// should treat it as [`KeyChange::All`].
const FEED_CAPACITY: usize = 1024;

/// Create if absent. KEYS: record, ids, op token. ARGV: JSON, score, id, channel, token TTL.
/// Returns 1 when created, 2 when this very call (same token) created it before its reply was
/// lost, 0 when the id exists.
static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/create.lua")));

/// Compare and set. KEYS: record. ARGV: the JSON read, the new JSON, channel, id.
/// Returns 1 when written, 0 when the record changed since it was read, -1 when it is gone.
static UPDATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/update.lua")));

/// Append once. KEYS: audit list, op token. ARGV: JSON, token TTL.
/// Returns 1 when appended, 0 when this call's token shows it was appended already.
static APPEND_AUDIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("redis/append_audit.lua")));

/// Add one day's usage. KEYS: the key's usage hash. ARGV: see `redis/usage.lua`. Sent with
/// `EVAL` in a pipeline (a pipelined `EVALSHA` is not reloaded on `NOSCRIPT`); it is short.
const RECORD_USAGE: &str = include_str!("redis/usage.lua");

/// The API keys, their records and the audit log in Redis. See the [module docs](self).
pub struct RedisKeyStore {
    conn: ConnectionManager,
    names: KeyNames,
    timeout: Duration,
    redaction: Redaction,
    changes: broadcast::Sender<KeyChange>,
    /// Carries the call timeout to the feed task; dropping it (with the store) stops the task.
    feed_control: watch::Sender<Duration>,
}

impl fmt::Debug for RedisKeyStore {
    // By hand: the connection manager's own Debug would print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("url", &self.redaction.masked_url)
            .field("prefix", &self.names.prefix())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisKeyStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS
    /// where the redis crate supports it) and subscribes the change feed before returning, so
    /// no change made after this returns is missed.
    ///
    /// Fails with [`KeyStoreError::Invalid`] for a bad URL or prefix, and with
    /// [`KeyStoreError::Unavailable`] when Redis does not answer within [`DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, KeyStoreError> {
        Self::connect_with_timeout(url, prefix, DEFAULT_TIMEOUT).await
    }

    /// [`RedisKeyStore::connect`] with another bound on connecting and on each later call.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, KeyStoreError> {
        let names = KeyNames::new(prefix)?;
        let mut redaction = Redaction::new(url);
        let client = Client::open(url).map_err(|e| KeyStoreError::Invalid {
            origin: "the redis key store configuration".into(),
            name: "url".into(),
            detail: format!(
                "{}: {}",
                redaction.masked_url,
                redaction.scrub(&e.to_string())
            ),
        })?;
        redaction.add_secret(client.get_connection_info().redis_settings().password());

        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            // Each call is bounded by our own timeout, which `with_timeout` can change later;
            // the manager's default (500 ms) would silently cap it.
            .set_response_timeout(None)
            // Few retries inside the manager: `call` already retries until its deadline (each
            // attempt restarting a failed reconnection), and at start-up a refused password
            // should be reported as such, not as a timeout.
            .set_number_of_retries(1)
            .set_max_delay(FEED_BACKOFF_MAX);
        let conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| {
            KeyStoreError::Unavailable(format!(
                "no answer from redis at {} within {timeout:?}",
                redaction.masked_url
            ))
        })?
        .map_err(|e| {
            KeyStoreError::Unavailable(format!(
                "cannot connect to redis at {}: {}",
                redaction.masked_url,
                redaction.scrub(&e.to_string())
            ))
        })?;

        let channel = names.channel();
        let pubsub = subscribe(&client, &channel, timeout).await.map_err(|e| {
            KeyStoreError::Unavailable(format!(
                "cannot subscribe to the key change feed at {}: {}",
                redaction.masked_url,
                redaction.scrub(&e)
            ))
        })?;
        let (changes, _) = broadcast::channel(FEED_CAPACITY);
        let (feed_control, control_rx) = watch::channel(timeout);
        let feed = Feed {
            client,
            channel,
            tx: changes.clone(),
            control: control_rx,
            redaction: redaction.clone(),
        };
        tokio::spawn(feed.run(pubsub));

        Ok(Self {
            conn,
            names,
            timeout,
            redaction,
            changes,
            feed_control,
        })
    }

    /// Bounds each call (including its retries after a dropped connection) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        // The feed's health ping and resubscription use the same bound. If the task is gone
        // there is nothing to tell.
        let _ = self.feed_control.send(timeout);
        self
    }

    /// The names this store uses in Redis.
    pub fn names(&self) -> &KeyNames {
        &self.names
    }

    /// The URL with its password masked, for status pages and logs.
    pub fn masked_url(&self) -> &str {
        &self.redaction.masked_url
    }

    /// Runs one Redis operation under the call timeout, retrying while the failure is a
    /// connection that dropped or could not be made (the manager reconnects meanwhile).
    /// `attempt` must be safe to repeat.
    async fn call<T, F, Fut>(&self, op: &str, mut attempt: F) -> Result<T, KeyStoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, attempt(self.conn.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if is_transient(&e) && Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => {
                    return Err(KeyStoreError::Unavailable(format!(
                        "redis {op} failed: {}",
                        self.redaction.scrub(&e.to_string())
                    )));
                }
                Err(_) => {
                    return Err(KeyStoreError::Unavailable(format!(
                        "redis {op} timed out after {:?}",
                        self.timeout
                    )));
                }
            }
        }
    }
}

/// Errors worth another attempt: the connection dropped or could not be made (the manager
/// reconnects meanwhile), or the server asked to wait (still loading, failing over). A refused
/// password or a script error would only fail again.
fn is_transient(e: &RedisError) -> bool {
    match e.retry_method() {
        RetryMethod::Reconnect => e.kind() != ErrorKind::AuthenticationFailed,
        RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry => true,
        _ => false,
    }
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, KeyStoreError> {
    serde_json::to_string(value).map_err(|e| KeyStoreError::Invalid {
        origin: "the redis key store".into(),
        name: what.to_string(),
        detail: format!("cannot be serialized: {e}"),
    })
}

/// Parses a value read from Redis. The error names the Redis key, never the contents.
fn from_json<T: DeserializeOwned>(raw: &str, redis_key: &str) -> Result<T, KeyStoreError> {
    serde_json::from_str(raw).map_err(|e| KeyStoreError::Parse {
        path: format!("redis:{redis_key}"),
        detail: e.to_string(),
    })
}

fn op_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait]
impl KeyStore for RedisKeyStore {
    async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        let key = self.names.record(id);
        let raw: Option<String> = self
            .call("get", |mut c| {
                let cmd = redis::cmd("GET").arg(&key).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let stored: StoredKey = from_json(&raw, &key)?;
        // A record filed under the wrong name must not answer for another key.
        if &*stored.record.id != id {
            return Err(KeyStoreError::Parse {
                path: format!("redis:{key}"),
                detail: format!("holds the record of key {:?}", stored.record.id),
            });
        }
        Ok(Some(stored))
    }

    async fn create(&self, key: StoredKey) -> Result<(), KeyStoreError> {
        let id = key.record.id.to_string();
        let json = to_json(&key, &id)?;
        let record_key = self.names.record(&id);
        let ids_key = self.names.ids();
        let token_key = self.names.op_token(&op_token());
        let channel = self.names.channel();
        let score = key.record.created_at.timestamp_millis();
        let outcome: i64 = self
            .call("create", |mut c| {
                let mut invocation = CREATE.prepare_invoke();
                invocation
                    .key(&record_key)
                    .key(&ids_key)
                    .key(&token_key)
                    .arg(&json)
                    .arg(score)
                    .arg(&id)
                    .arg(&channel)
                    .arg(OP_TOKEN_TTL_MS);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        match outcome {
            1 | 2 => Ok(()),
            _ => Err(KeyStoreError::Conflict(id)),
        }
    }

    async fn update(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, KeyStoreError> {
        let key = self.names.record(id);
        let channel = self.names.channel();
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(read) = self
                .call("update", |mut c| {
                    let cmd = redis::cmd("GET").arg(&key).clone();
                    async move { cmd.query_async::<Option<String>>(&mut c).await }
                })
                .await?
            else {
                return Err(KeyStoreError::NotFound(id.to_string()));
            };
            let mut stored: StoredKey = from_json(&read, &key)?;
            patch.apply(&mut stored.record);
            let written = to_json(&stored, id)?;
            let outcome: i64 = self
                .call("update", |mut c| {
                    let mut invocation = UPDATE.prepare_invoke();
                    invocation
                        .key(&key)
                        .arg(&read)
                        .arg(&written)
                        .arg(&channel)
                        .arg(id);
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            match outcome {
                1 => return Ok(stored.record),
                -1 => return Err(KeyStoreError::NotFound(id.to_string())),
                // Another writer got in between: read again and re-apply the patch.
                _ => tokio::task::yield_now().await,
            }
        }
        Err(KeyStoreError::Unavailable(format!(
            "update of key {id} gave up after {UPDATE_ATTEMPTS} concurrent modifications"
        )))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, KeyStoreError> {
        let ids_key = self.names.ids();
        let ids: Vec<String> = self
            .call("list", |mut c| {
                let cmd = redis::cmd("ZRANGE").arg(&ids_key).arg(0).arg(-1).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        if ids.is_empty() {
            return Ok(page_of(Vec::new(), query));
        }
        let keys: Vec<String> = ids.iter().map(|id| self.names.record(id)).collect();
        let raws: Vec<Option<String>> = self
            .call("list", |mut c| {
                let cmd = redis::cmd("MGET").arg(&keys).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut records = Vec::with_capacity(raws.len());
        for (raw, key) in raws.iter().zip(&keys) {
            // An id whose record is missing (removed by hand) is not a key any more.
            if let Some(raw) = raw {
                records.push(from_json::<StoredKey>(raw, key)?.record);
            }
        }
        Ok(page_of(records, query))
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), KeyStoreError> {
        let json = to_json(&entry, &entry.id)?;
        let audit_key = self.names.audit();
        let token_key = self.names.op_token(&op_token());
        // Whether 1 (appended) or 0 (an earlier attempt of this call did), it is in the log.
        let _: i64 = self
            .call("append_audit", |mut c| {
                let mut invocation = APPEND_AUDIT.prepare_invoke();
                invocation
                    .key(&audit_key)
                    .key(&token_key)
                    .arg(&json)
                    .arg(OP_TOKEN_TTL_MS);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, KeyStoreError> {
        let audit_key = self.names.audit();
        let raws: Vec<String> = self
            .call("audit", |mut c| {
                let cmd = redis::cmd("LRANGE").arg(&audit_key).arg(0).arg(-1).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let mut out = Vec::new();
        let mut skipped = 0;
        for raw in &raws {
            let entry: AuditEntry = from_json(raw, &audit_key)?;
            if !query.matches(&entry) {
                continue;
            }
            if skipped < query.offset {
                skipped += 1;
                continue;
            }
            out.push(entry);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// One pipeline of scripts per flush: one round trip whatever the batch holds. A retried
    /// flush may count a batch twice if only its reply was lost; usage is for reading, not
    /// for limits, so that is preferred over losing it.
    async fn record_usage(&self, batch: &[crate::UsageDelta]) -> Result<(), KeyStoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let today = chrono::Utc::now().date_naive();
        let keep = crate::usage::first_kept(today).to_string();
        let ttl_ms = (crate::usage::RETAINED_DAYS + 1) * 86_400_000;
        let mut pipe = redis::pipe();
        for d in batch {
            pipe.cmd("EVAL")
                .arg(RECORD_USAGE)
                .arg(1)
                .arg(self.names.usage(&d.id))
                .arg(d.last_used_at.timestamp_millis())
                .arg(d.date.to_string())
                .arg(d.requests)
                .arg(d.input_tokens)
                .arg(d.output_tokens)
                .arg(&keep)
                .arg(ttl_ms)
                .arg(d.refused.rate_limited)
                .arg(d.refused.token_limited)
                .arg(d.refused.concurrency_limited)
                .arg(d.refused.forbidden)
                .arg(d.minute)
                .ignore();
        }
        self.call("record_usage", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn usage(
        &self,
        id: &str,
        today: chrono::NaiveDate,
        days: u64,
    ) -> Result<crate::KeyUsage, KeyStoreError> {
        let key = self.names.usage(id);
        let fields: std::collections::HashMap<String, String> = self
            .call("usage", |mut c| {
                let cmd = redis::cmd("HGETALL").arg(&key).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut book = crate::usage::UsageBook::default();
        for (field, value) in &fields {
            let n: u64 = value.parse().unwrap_or(0);
            if field == "last" {
                book.last_used_at = i64::try_from(n)
                    .ok()
                    .and_then(chrono::DateTime::from_timestamp_millis);
                continue;
            }
            let Some((date, kind)) = field.split_once(':') else {
                continue;
            };
            // `m<minute>:r|i|o`: the last two minutes.
            if let Some(minute) = date.strip_prefix('m').and_then(|m| m.parse::<u64>().ok()) {
                let t = book.minutes.entry(minute).or_default();
                match kind {
                    "r" => t.requests = n,
                    "i" => t.input_tokens = n,
                    "o" => t.output_tokens = n,
                    _ => {}
                }
                continue;
            }
            let Ok(date) = date.parse::<chrono::NaiveDate>() else {
                continue;
            };
            let day = book.days.entry(date).or_default();
            match kind {
                "r" => day.requests = n,
                "i" => day.input_tokens = n,
                "o" => day.output_tokens = n,
                "rl" => day.refused.rate_limited = n,
                "tl" => day.refused.token_limited = n,
                "cl" => day.refused.concurrency_limited = n,
                "fb" => day.refused.forbidden = n,
                _ => {}
            }
        }
        Ok(book.report(today, days, crate::usage::minute_of(chrono::Utc::now())))
    }

    fn changes(&self) -> broadcast::Receiver<KeyChange> {
        self.changes.subscribe()
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_one_hash_tag() {
        let n = KeyNames::new("igw").unwrap();
        assert_eq!(n.hash_tag(), "{igw:keys}");
        assert_eq!(n.record("abc123"), "{igw:keys}:k:abc123");
        assert_eq!(n.ids(), "{igw:keys}:ids");
        assert_eq!(n.audit(), "{igw:keys}:audit");
        assert_eq!(n.op_token("t0"), "{igw:keys}:op:t0");
        assert_eq!(n.channel(), "igw:keys:changes");
        // Redis Cluster hashes the part between the first '{' and the next '}': even an id
        // with braces cannot move its record to another slot.
        let tag_of = |k: &str| {
            let open = k.find('{').unwrap();
            let close = open + k[open..].find('}').unwrap();
            k[open + 1..close].to_string()
        };
        for k in [n.record("x}{y"), n.ids(), n.audit(), n.op_token("t")] {
            assert_eq!(tag_of(&k), "igw:keys", "{k}");
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "a{b", "a}b", "a b", "a\nb", &"x".repeat(65)] {
            assert!(KeyNames::new(bad).is_err(), "{bad:?}");
        }
        for good in ["igw", "prod:eu-1", "a", &"x".repeat(64)] {
            assert!(KeyNames::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn urls_are_masked() {
        let r = Redaction::new("redis://user:p%40ss@cache.internal:6380/2");
        assert_eq!(r.masked_url, "redis://user:***@cache.internal:6380/2");
        assert_eq!(r.scrub("auth p%40ss failed"), "auth *** failed");

        let r = Redaction::new("rediss://:s3cr@t@host/0?protocol=resp3");
        assert_eq!(r.masked_url, "rediss://:***@host/0?protocol=resp3");
        assert!(!r.scrub("echo s3cr@t").contains("s3cr@t"));

        let r = Redaction::new("redis://tokenonly@host");
        assert_eq!(r.masked_url, "redis://***@host");

        let r = Redaction::new("redis://127.0.0.1:6379");
        assert_eq!(r.masked_url, "redis://127.0.0.1:6379");
        assert_eq!(r.scrub("unchanged"), "unchanged");
    }
}
