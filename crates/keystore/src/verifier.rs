//! Verifying presented keys on the hot path.
//!
//! argon2 is deliberately slow, so the gateway runs it once per key per process, not per request:
//!
//! 1. The presented string is hashed with a per-process random key (SHA-256 over key ‖ value) —
//!    the cache never holds anything that could be replayed elsewhere or reversed.
//! 2. A hit in the verified cache (bounded, TTL) answers at once; the record's expiry and
//!    revocation are still judged against `now`, so an expired key stops working on time.
//!    Cache ages are read from an injected [`Clock`] (`with_clock`), so tests move time.
//! 3. A hit in the failure cache (short TTL) answers "unknown" at once.
//! 4. Otherwise: the key format is checked offline (a mistyped key costs nothing), the record is
//!    fetched by id (an unknown id costs one store read, no hashing), and only then does argon2
//!    run — on the blocking pool, at most `max_concurrent` at a time, with a bounded queue, so a
//!    flood of well-formed wrong keys cannot take the async workers or grow without limit.
//!
//! The store's change feed drops cached entries of changed keys, so a revocation is seen within
//! the feed's latency; the TTL is the safety net if a change is missed.
//!
//! The verified caches (by digest, and by id for JWTs) have two levels. Each worker thread keeps
//! its own copies of the entries it has used (`Local`, up to `LOCAL_ENTRIES` a cache): a hit
//! there takes no lock and clones a reference count no other thread touches, so workers on many
//! cores serving one busy key do not meet. The shared maps behind it are what every change acts
//! on; a change also bumps a generation, and a thread whose copies are of an older generation
//! drops them at its next lookup (refilling from the shared maps, not with Argon2). A copy keeps
//! the shared entry's cache time, so it goes stale when that entry does.
//!
//! Keys that are not in the infergate format (`API_KEY`, `API_KEYS`, the seed file's plaintext
//! keys) are looked up in the [`StaticKeyStore`], by SHA-256 digest.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use infergate_types::{Clock, SystemClock};
use sha2::{Digest, Sha256};
use thread_local::ThreadLocal;
use tokio::sync::Semaphore;

use crate::{
    KeyChange, KeyRecord, KeyStore, KeyStoreError, StaticKeyStore, Verification, format, hash,
};

type CacheKey = [u8; 32];

/// Tuning for [`KeyVerifier`].
#[derive(Debug, Clone, Copy)]
pub struct VerifierConfig {
    pub cache_size: usize,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_concurrent: usize,
    /// Verifications allowed to wait for a slot; beyond it requests are refused at once.
    pub max_waiting: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            cache_size: 10_000,
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_concurrent: 2,
            max_waiting: 256,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct VerifierStats {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub negative_hits: AtomicU64,
    pub argon2_verifications: AtomicU64,
    pub rejected_busy: AtomicU64,
}

#[derive(Debug, Clone)]
struct Cached {
    record: Arc<KeyRecord>,
    /// When it was cached, by the verifier's clock (milliseconds).
    at: u64,
    /// The stored hash this presented key was verified against: when the entry goes stale and the
    /// store still holds the same hash, it is refreshed without running argon2 again.
    hash: Option<Arc<str>>,
}

impl Cached {
    /// This thread's own copy: the record (its id too) in allocations no other thread's clones
    /// and drops touch. The hash is not needed there (refreshing goes through the shared entry).
    fn private_copy(&self) -> Self {
        let mut record = (*self.record).clone();
        record.id = Arc::from(&*record.id);
        Cached {
            record: Arc::new(record),
            at: self.at,
            hash: None,
        }
    }
}

/// Entries a thread keeps copies of, per cache. The copies are for the keys busy enough for
/// workers to meet on; a bound well under the shared cache's (10,000) keeps a worker's copies
/// of the long tail from costing memory per worker (1,024 records of a few hundred bytes each).
const LOCAL_ENTRIES: usize = 1024;

/// A thread's first level of the verified caches (see the module doc).
#[derive(Debug, Default)]
struct Local {
    /// The [`KeyVerifier::generation`] these copies were made in.
    generation: u64,
    verified: HashMap<CacheKey, Cached>,
    by_id: HashMap<Arc<str>, Cached>,
}

#[derive(Debug)]
pub struct KeyVerifier {
    store: Option<Arc<dyn KeyStore>>,
    legacy: RwLock<Arc<StaticKeyStore>>,
    cache_key: [u8; 32],
    verified: Mutex<HashMap<CacheKey, Cached>>,
    failed: Mutex<HashMap<CacheKey, u64>>,
    by_id: Mutex<HashMap<Arc<str>, Cached>>,
    /// Each thread's copies of `verified` and `by_id` entries.
    local: ThreadLocal<RefCell<Local>>,
    /// Bumped after every change to the shared caches: older copies are dropped where found.
    generation: AtomicU64,
    slots: Semaphore,
    waiting: AtomicUsize,
    cfg: VerifierConfig,
    /// Cache ages only; a key's expiry is judged against the `now` each call is given.
    clock: Arc<dyn Clock>,
    pub stats: VerifierStats,
}

/// Was something stored `at` still younger than `ttl` at `now`? A clock that went backwards
/// makes the entry stale, never immortal.
fn fresh(now: u64, at: u64, ttl: Duration) -> bool {
    now.checked_sub(at)
        .is_some_and(|age| u128::from(age) < ttl.as_millis())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent (each operation is a
    // single insert/remove), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn judge(record: Arc<KeyRecord>, now: DateTime<Utc>) -> Verification {
    match record.state(now) {
        crate::KeyState::Active => Verification::Valid(record),
        crate::KeyState::Expired => Verification::Expired(record),
        crate::KeyState::Revoked => Verification::Revoked(record),
    }
}

impl KeyVerifier {
    pub fn new(
        store: Option<Arc<dyn KeyStore>>,
        legacy: StaticKeyStore,
        cfg: VerifierConfig,
    ) -> Result<Self, KeyStoreError> {
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key)
            .map_err(|e| KeyStoreError::Unavailable(format!("OS random generator: {e}")))?;
        Ok(Self {
            store,
            legacy: RwLock::new(Arc::new(legacy)),
            cache_key,
            verified: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            by_id: Mutex::new(HashMap::new()),
            local: ThreadLocal::new(),
            generation: AtomicU64::new(0),
            slots: Semaphore::new(cfg.max_concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            cfg,
            clock: Arc::new(SystemClock),
            stats: VerifierStats::default(),
        })
    }

    /// Ages the caches by `clock` instead of the system's (tests move a `ManualClock`).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> Option<&Arc<dyn KeyStore>> {
        self.store.as_ref()
    }

    /// Replaces the plaintext (legacy) keys, e.g. after the keys file changed.
    pub fn set_legacy(&self, legacy: StaticKeyStore) {
        *self.legacy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(legacy);
        lock(&self.verified).clear();
        lock(&self.failed).clear();
        self.outdate_copies();
    }

    /// After a change to the shared caches (made first, so a thread that sees the new generation
    /// finds them changed): every thread's copies are dropped at its next lookup.
    fn outdate_copies(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A fresh entry's record: this thread's copy, else the shared entry (copied here for the
    /// next lookup). `local` and `shared` are the same cache's two levels.
    fn two_level<K, Q>(
        &self,
        key: &Q,
        age_now: u64,
        local: impl Fn(&mut Local) -> &mut HashMap<K, Cached>,
        shared: &Mutex<HashMap<K, Cached>>,
    ) -> Option<Arc<KeyRecord>>
    where
        K: Borrow<Q> + Hash + Eq + Clone,
        Q: Hash + Eq + ?Sized,
    {
        let ttl = self.cfg.cache_ttl;
        // Read before the shared map: a copy made from a map a change has not reached yet is
        // then of the older generation, and dropped at the next lookup.
        let generation = self.generation.load(Ordering::Acquire);
        let cell = self.local.get_or_default();
        // Never borrowed twice (nothing here re-enters); a failed borrow only skips the copies.
        let mut mine = cell.try_borrow_mut().ok();
        if let Some(l) = mine.as_deref_mut() {
            if l.generation != generation {
                l.verified.clear();
                l.by_id.clear();
                l.generation = generation;
            }
            if let Some(c) = local(l).get(key)
                && fresh(age_now, c.at, ttl)
            {
                return Some(c.record.clone());
            }
        }
        let (k, entry) = {
            let map = lock(shared);
            let (k, c) = map.get_key_value(key)?;
            if !fresh(age_now, c.at, ttl) {
                return None;
            }
            (k.clone(), c.clone())
        };
        if let Some(l) = mine.as_deref_mut() {
            let copies = local(l);
            if copies.len() >= LOCAL_ENTRIES.min(self.cfg.cache_size) {
                copies.clear();
            }
            copies.insert(k, entry.private_copy());
        }
        Some(entry.record)
    }

    pub fn legacy_count(&self) -> usize {
        self.legacy.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn digest(&self, presented: &str) -> CacheKey {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(presented.as_bytes());
        h.finalize().into()
    }

    /// Drops what a change made stale.
    pub fn invalidate(&self, change: &KeyChange) {
        match change {
            KeyChange::All => {
                lock(&self.verified).clear();
                lock(&self.failed).clear();
                lock(&self.by_id).clear();
            }
            KeyChange::Key(id) => {
                lock(&self.verified).retain(|_, c| &*c.record.id != id.as_str());
                lock(&self.by_id).remove(id.as_str());
                // A failure may have been a key that now exists (created after the miss).
                lock(&self.failed).clear();
            }
        }
        self.outdate_copies();
    }

    /// Follows the store's change feed until the verifier is dropped. Call from inside a tokio
    /// runtime that outlives the work (the gateway uses its main system runtime).
    pub fn spawn_invalidator(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = self.store.as_ref()?.changes();
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                let change = match rx.recv().await {
                    Ok(c) => c,
                    // Missed events: drop everything rather than serve a revoked key.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => KeyChange::All,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(v) = weak.upgrade() else { return };
                v.invalidate(&change);
            }
        }))
    }

    fn remember(&self, key: CacheKey, record: Arc<KeyRecord>, hash: Option<Arc<str>>) {
        let mut cache = lock(&self.verified);
        if cache.len() >= self.cfg.cache_size {
            // Evict the stale first; if none, any one (bounded size matters more than recency).
            let now = self.clock.now_millis();
            let ttl = self.cfg.cache_ttl;
            cache.retain(|_, c| fresh(now, c.at, ttl));
            if cache.len() >= self.cfg.cache_size
                && let Some(k) = cache.keys().next().copied()
            {
                cache.remove(&k);
            }
        }
        cache.insert(
            key,
            Cached {
                record,
                at: self.clock.now_millis(),
                hash,
            },
        );
    }

    fn remember_failure(&self, key: CacheKey) {
        let mut failed = lock(&self.failed);
        if failed.len() >= self.cfg.cache_size {
            let now = self.clock.now_millis();
            let ttl = self.cfg.negative_ttl;
            failed.retain(|_, at| fresh(now, *at, ttl));
            if failed.len() >= self.cfg.cache_size {
                failed.clear();
            }
        }
        failed.insert(key, self.clock.now_millis());
    }

    /// The cached path alone (for benchmarks and the fast path): `None` on a miss.
    pub fn verify_cached(&self, presented: &str, now: DateTime<Utc>) -> Option<Verification> {
        let key = self.digest(presented);
        self.cached(&key, now)
    }

    fn cached(&self, key: &CacheKey, now: DateTime<Utc>) -> Option<Verification> {
        let age_now = self.clock.now_millis();
        if let Some(record) = self.two_level(key, age_now, |l| &mut l.verified, &self.verified) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Some(judge(record, now));
        }
        if let Some(at) = lock(&self.failed).get(key)
            && fresh(age_now, *at, self.cfg.negative_ttl)
        {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Some(Verification::Unknown);
        }
        None
    }

    /// What is this presented credential?
    pub async fn verify(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Verification, KeyStoreError> {
        let key = self.digest(presented);
        if let Some(v) = self.cached(&key, now) {
            return Ok(v);
        }
        // Boxed: the miss holds a stored record across the store's and Argon2's awaits (1.2 KiB),
        // and an unboxed future that size would be moved with every caller's on every request.
        Box::pin(self.verify_uncached(key, presented, now)).await
    }

    async fn verify_uncached(
        &self,
        key: CacheKey,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Verification, KeyStoreError> {
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        if let (Some(store), Ok(parsed)) = (&self.store, format::parse(presented))
            && let Some(stored) = store.get(parsed.id).await?
        {
            let verified_before = lock(&self.verified)
                .get(&key)
                .and_then(|c| c.hash.clone())
                .is_some_and(|h| *h == *stored.secret_hash);
            if verified_before || self.argon2(parsed.secret, &stored.secret_hash).await? {
                let record = Arc::new(stored.record);
                self.remember(key, record.clone(), Some(Arc::from(stored.secret_hash)));
                return Ok(judge(record, now));
            }
            self.remember_failure(key);
            return Ok(Verification::Unknown);
        }
        let legacy = self
            .legacy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let v = legacy.verify_now(presented, now);
        match &v {
            Verification::Unknown => self.remember_failure(key),
            // Cached too, so every credential takes the same fast path (`set_legacy` clears it).
            Verification::Valid(r) | Verification::Expired(r) | Verification::Revoked(r) => {
                self.remember(key, r.clone(), None)
            }
        }
        Ok(v)
    }

    async fn argon2(&self, secret: &str, phc: &str) -> Result<bool, KeyStoreError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            return Err(KeyStoreError::Unavailable(
                "too many key verifications in progress".into(),
            ));
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| KeyStoreError::Unavailable("verifier closed".into()))?;
        self.stats
            .argon2_verifications
            .fetch_add(1, Ordering::Relaxed);
        let (secret, phc) = (secret.to_string(), phc.to_string());
        tokio::task::spawn_blocking(move || hash::verify_secret(&secret, &phc))
            .await
            .map_err(|e| KeyStoreError::Unavailable(format!("verification task failed: {e}")))
    }

    /// The current record of a key id (for JWTs, whose `sub` must still be an active key).
    /// Cached like verified keys and dropped by the same change feed.
    pub async fn record(&self, id: &str) -> Result<Option<Arc<KeyRecord>>, KeyStoreError> {
        let age_now = self.clock.now_millis();
        if let Some(record) = self.two_level(id, age_now, |l| &mut l.by_id, &self.by_id) {
            return Ok(Some(record));
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some(stored) = store.get(id).await? else {
            return Ok(None);
        };
        let record = Arc::new(stored.record);
        let mut by_id = lock(&self.by_id);
        if by_id.len() >= self.cfg.cache_size {
            by_id.clear();
        }
        by_id.insert(
            record.id.clone(),
            Cached {
                record: record.clone(),
                at: self.clock.now_millis(),
                hash: None,
            },
        );
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::mpsc;

    use infergate_policy::Role;

    use super::*;

    fn verifier() -> Arc<KeyVerifier> {
        let v = KeyVerifier::new(
            None,
            StaticKeyStore::new(Vec::new()).unwrap(),
            VerifierConfig::default(),
        )
        .unwrap();
        Arc::new(v)
    }

    /// What the module doc promises: a worker's hit in its own copies does not wait for the lock
    /// every worker shares. The shared lock is held by this thread while the worker looks up.
    #[test]
    fn a_hit_in_a_workers_own_copy_takes_no_shared_lock() {
        let v = verifier();
        let key = v.digest("some-presented-key");
        let record = Arc::new(KeyRecord::new("kid", "t", Role::User, "test"));
        v.remember(key, record, None);
        let (found_tx, found) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let worker = {
            let v = v.clone();
            std::thread::spawn(move || {
                // From the shared cache, copied into this thread's.
                found_tx.send(v.cached(&key, Utc::now()).is_some()).unwrap();
                go_rx.recv().unwrap();
                found_tx.send(v.cached(&key, Utc::now()).is_some()).unwrap();
            })
        };
        let wait = Duration::from_secs(30);
        assert_eq!(found.recv_timeout(wait), Ok(true));
        let held = lock(&v.verified);
        go.send(()).unwrap();
        let second = found.recv_timeout(wait);
        drop(held);
        worker.join().unwrap();
        assert_eq!(
            second,
            Ok(true),
            "the worker's hit waited for the shared lock"
        );
    }

    #[test]
    fn a_thread_keeps_copies_of_at_most_local_entries_keys() {
        let v = verifier();
        for i in 0..=LOCAL_ENTRIES {
            let key = v.digest(&format!("key-{i}"));
            let id = format!("kid-{i}");
            v.remember(
                key,
                Arc::new(KeyRecord::new(id, "t", Role::User, "test")),
                None,
            );
            assert!(v.cached(&key, Utc::now()).is_some());
            let copies = v.local.get().map_or(0, |l| l.borrow().verified.len());
            assert!((1..=LOCAL_ENTRIES).contains(&copies), "{copies} copies");
        }
    }

    #[test]
    fn a_threads_copy_shares_no_reference_count_with_the_shared_entry() {
        let v = verifier();
        let key = v.digest("k");
        let record = Arc::new(KeyRecord::new("kid", "t", Role::User, "test"));
        v.remember(key, record.clone(), None);
        let first = v.two_level(&key, v.clock.now_millis(), |l| &mut l.verified, &v.verified);
        let second = v.two_level(&key, v.clock.now_millis(), |l| &mut l.verified, &v.verified);
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(
            Arc::ptr_eq(&first, &record),
            "the first lookup reads the shared entry"
        );
        assert!(
            !Arc::ptr_eq(&second, &record),
            "the second reads this thread's copy"
        );
        assert!(!Arc::ptr_eq(&second.id, &record.id));
        assert_eq!(*second, *record);
    }
}
