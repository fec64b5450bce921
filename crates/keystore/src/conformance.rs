//! The behaviour every [`KeyStore`] backend must show, as runnable checks.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn memory_store_conforms() {
//!     infergate_keystore::conformance::run_all(Arc::new(MemoryKeyStore::new())).await;
//! }
//! ```
//!
//! Every check is a `pub async fn(&Arc<dyn KeyStore>)` that panics with a message naming the
//! backend, the check and what differed, so a backend's tests can also run them one by one.
//! They must run inside a Tokio runtime (the concurrency checks spawn tasks; a multi-threaded
//! runtime exercises real parallelism).
//!
//! # The store handed in
//!
//! Give [`run_all`] an **empty** store that nothing else writes to while it runs. The list
//! checks (run first) judge the whole listing: they take a baseline of what the store already
//! lists at their start and expect exactly that plus their own keys, so keys that were already
//! there are tolerated, but keys created concurrently by someone else make them fail. Every
//! other check uses fresh random ids (and unique audit actors), so those may share a store.
//!
//! Timestamps are compared to the millisecond: a backend may drop sub-millisecond digits but
//! must keep milliseconds.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use infergate_policy::Role;
use infergate_types::RateSpec;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

use crate::format::{self, DEFAULT_PREFIX};
use crate::hash::{self, HashParams};
use crate::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyState, KeyStore, KeyStoreError,
    ListQuery, Page, StoredKey,
};

mod audit;
mod feed;
mod keys;
mod listing;

pub use self::audit::*;
pub use self::feed::*;
pub use self::keys::*;
pub use self::listing::*;

/// How long a change may take to show up on the feed before the check fails: it bounds a
/// failure only, so it is generous for a loaded 2-core machine.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size used when a check reads a whole listing.
const LIST_PAGE: usize = 50;

/// Runs every check against `store`, list checks first. `store` must be empty and not written
/// by anyone else meanwhile (see the module docs). Panics with a clear message on the first
/// failure.
pub async fn run_all(store: Arc<dyn KeyStore>) {
    let store = &store;
    // The list checks compare whole listings, so they run before anything else adds keys.
    list_filters_by_role(store).await;
    list_filters_by_state_at_query_now(store).await;
    list_paginates_in_created_order(store).await;

    get_unknown_is_none(store).await;
    create_then_get_round_trips(store).await;
    create_existing_id_conflicts(store).await;
    concurrent_creates_of_one_id_conflict(store).await;
    update_applies_each_field(store).await;
    update_unknown_is_not_found(store).await;
    concurrent_updates_to_different_keys_all_land(store).await;
    concurrent_updates_to_one_key_all_succeed(store).await;
    concurrent_updates_to_different_fields_all_land(store).await;
    audit_filters_orders_and_pages(store).await;
    audit_is_append_only(store).await;
    changes_reported_for_create_and_update(store).await;
    usage_adds_up_per_day_and_reports_the_last_use(store).await;
}

/// Flushed usage adds up per key and day (from several flushes, as several gateways send
/// them), `last_used_at` is the latest use whatever the flush order, and a window of days
/// reports only its days.
pub async fn usage_adds_up_per_day_and_reports_the_last_use(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "usage adds up per day";
    let id = new_id();
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap_or(today);
    let at = |h: u32| {
        today
            .and_hms_opt(h, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_else(Utc::now)
    };
    let delta = |date, requests, last_used_at: DateTime<Utc>| crate::UsageDelta {
        id: id.clone(),
        date,
        minute: crate::usage::minute_of(last_used_at),
        requests,
        input_tokens: requests * 100,
        output_tokens: requests * 10,
        refused: crate::usage::Refusals {
            rate_limited: requests,
            token_limited: 1,
            concurrency_limited: 0,
            forbidden: 2,
        },
        last_used_at,
    };
    let later = delta(today, 3, at(12));
    let earlier = delta(today, 2, at(8));
    let before = delta(yesterday, 1, at(1));
    for batch in [vec![later], vec![earlier, before]] {
        if let Err(e) = store.record_usage(&batch).await {
            fail(store, CHECK, format!("record_usage failed: {e}"));
        }
    }
    let usage = match store.usage(&id, today, 30).await {
        Ok(u) => u,
        Err(e) => fail(store, CHECK, format!("usage failed: {e}")),
    };
    let days: Vec<(chrono::NaiveDate, u64, u64, u64, u64, u64)> = usage
        .days
        .iter()
        .map(|d| {
            (
                d.date,
                d.totals.requests,
                d.totals.input_tokens,
                d.totals.output_tokens,
                d.totals.refused.rate_limited,
                d.totals.refused.forbidden,
            )
        })
        .collect();
    let mut want = vec![(today, 5, 500, 50, 5, 4)];
    if yesterday != today {
        want.insert(0, (yesterday, 1, 100, 10, 1, 2));
    }
    if days != want {
        fail(store, CHECK, format!("days {days:?}, expected {want:?}"));
    }
    if usage.last_used_at != Some(at(12)) {
        fail(
            store,
            CHECK,
            format!("last_used_at {:?}, expected {}", usage.last_used_at, at(12)),
        );
    }
    match store.usage(&id, today, 1).await {
        Ok(u) if u.days.len() == 1 => {}
        other => fail(store, CHECK, format!("a one-day window gave {other:?}")),
    }
    // The current minute's counts, as of the flush.
    let now = Utc::now();
    let this_minute = crate::UsageDelta {
        id: id.clone(),
        date: now.date_naive(),
        minute: crate::usage::minute_of(now),
        requests: 7,
        input_tokens: 70,
        output_tokens: 0,
        refused: crate::usage::Refusals::default(),
        last_used_at: now,
    };
    if let Err(e) = store.record_usage(&[this_minute]).await {
        fail(store, CHECK, format!("record_usage failed: {e}"));
    }
    match store.usage(&id, now.date_naive(), 30).await {
        // Tolerates a flush that straddled a minute boundary just now.
        Ok(u) if u.current_minute.requests == 7 || u.previous_minute.requests == 7 => {}
        other => fail(store, CHECK, format!("the current minute gave {other:?}")),
    }
    match store.usage(&new_id(), today, 30).await {
        Ok(u) if u == crate::KeyUsage::default() => {}
        other => fail(store, CHECK, format!("an unused key gave {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fail(store: &Arc<dyn KeyStore>, check: &str, what: impl std::fmt::Display) -> ! {
    panic!(
        "key store conformance [{} backend] {check}: {what}",
        store.backend()
    )
}

/// A fresh key id in the real format, so backends that validate ids accept it.
fn new_id() -> String {
    match format::generate(DEFAULT_PREFIX) {
        Ok(key) => key.id,
        Err(e) => panic!("key store conformance: cannot mint a key id: {e}"),
    }
}

/// Now, to the millisecond: every timestamp the list and audit checks order by is a whole
/// millisecond, so a backend that keeps exactly milliseconds orders them as we do.
fn ms_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn rate(spec: &str) -> RateSpec {
    match spec.parse() {
        Ok(r) => r,
        Err(e) => panic!("key store conformance: bad rate {spec:?}: {e}"),
    }
}

/// One real argon2id hash shared by the bulk checks: stores treat the hash as opaque, and
/// hashing is deliberately slow.
async fn shared_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    if let Some(h) = HASH.get() {
        return h.clone();
    }
    let h = fresh_hash("conformance-shared-secret").await;
    HASH.get_or_init(|| h).clone()
}

async fn fresh_hash(secret: &str) -> String {
    let secret = secret.to_string();
    match tokio::task::spawn_blocking(move || hash::hash_secret(&secret, HashParams::default()))
        .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => panic!("key store conformance: hashing failed: {e}"),
        Err(e) => panic!("key store conformance: hashing task failed: {e}"),
    }
}

fn stored(id: &str, name: &str, role: Role, created_at: DateTime<Utc>, hash: &str) -> StoredKey {
    let mut record = KeyRecord::new(id, name, role, "conformance");
    record.prefix = DEFAULT_PREFIX.to_string();
    record.created_at = created_at;
    StoredKey {
        record,
        secret_hash: hash.to_string(),
    }
}

async fn create_ok(store: &Arc<dyn KeyStore>, check: &str, key: &StoredKey) {
    if let Err(e) = store.create(key.clone()).await {
        fail(
            store,
            check,
            format!("create {} failed: {e}", key.record.id),
        );
    }
}

async fn get_some(store: &Arc<dyn KeyStore>, check: &str, id: &str) -> StoredKey {
    match store.get(id).await {
        Ok(Some(k)) => k,
        Ok(None) => fail(store, check, format!("get {id}: no such key")),
        Err(e) => fail(store, check, format!("get {id} failed: {e}")),
    }
}

async fn update_ok(store: &Arc<dyn KeyStore>, check: &str, id: &str, patch: KeyPatch) -> KeyRecord {
    match store.update(id, patch.clone()).await {
        Ok(r) => r,
        Err(e) => fail(
            store,
            check,
            format!("update {id} with {patch:?} failed: {e}"),
        ),
    }
}

fn same_instant(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).abs() < TimeDelta::milliseconds(1)
}

fn same_opt_instant(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same_instant(a, b),
        _ => false,
    }
}

/// `got` with each timestamp replaced by `expected`'s where they agree to the millisecond, so
/// a plain `==` then compares everything else exactly and shows real differences in full.
fn normalized(expected: &KeyRecord, mut got: KeyRecord) -> KeyRecord {
    if same_instant(expected.created_at, got.created_at) {
        got.created_at = expected.created_at;
    }
    if same_opt_instant(expected.expires_at, got.expires_at) {
        got.expires_at = expected.expires_at;
    }
    if same_opt_instant(expected.revoked_at, got.revoked_at) {
        got.revoked_at = expected.revoked_at;
    }
    got
}

fn assert_record(
    store: &Arc<dyn KeyStore>,
    check: &str,
    what: &str,
    expected: &KeyRecord,
    got: KeyRecord,
) {
    let got = normalized(expected, got);
    if &got != expected {
        fail(
            store,
            check,
            format!("{what}: record differs\n  expected: {expected:?}\n       got: {got:?}"),
        );
    }
}

fn assert_stored(
    store: &Arc<dyn KeyStore>,
    check: &str,
    what: &str,
    expected: &StoredKey,
    got: StoredKey,
) {
    if got.secret_hash != expected.secret_hash {
        fail(
            store,
            check,
            format!(
                "{what}: secret_hash of {} differs ({:?} != {:?})",
                expected.record.id, got.secret_hash, expected.secret_hash
            ),
        );
    }
    assert_record(store, check, what, &expected.record, got.record);
}

fn list_query(role: Option<Role>, state: Option<KeyState>, now: DateTime<Utc>) -> ListQuery {
    ListQuery {
        role,
        state,
        offset: 0,
        limit: LIST_PAGE,
        now,
        ..ListQuery::default()
    }
}

async fn list_page(store: &Arc<dyn KeyStore>, check: &str, q: &ListQuery) -> Page {
    let page = match store.list(q).await {
        Ok(p) => p,
        Err(e) => fail(store, check, format!("list {q:?} failed: {e}")),
    };
    // The page is what the admin API returns; a hash must never be in it.
    let json = match serde_json::to_string(&page) {
        Ok(j) => j,
        Err(e) => fail(store, check, format!("page does not serialize: {e}")),
    };
    if json.contains("argon2") || json.contains("secret_hash") {
        fail(
            store,
            check,
            format!("a listed page contains a secret hash: {json}"),
        );
    }
    if page.items.len() > q.limit.max(1) {
        fail(
            store,
            check,
            format!(
                "list returned {} items for limit {}",
                page.items.len(),
                q.limit
            ),
        );
    }
    page
}

/// Every record matching `role` and `state` at `now`, page by page.
async fn list_all(
    store: &Arc<dyn KeyStore>,
    check: &str,
    role: Option<Role>,
    state: Option<KeyState>,
    now: DateTime<Utc>,
) -> Vec<KeyRecord> {
    let mut q = list_query(role, state, now);
    let mut all = Vec::new();
    loop {
        let page = list_page(store, check, &q).await;
        let n = page.items.len();
        all.extend(page.items);
        if n == 0 || all.len() >= page.total {
            return all;
        }
        q.offset += n;
    }
}

fn sort_listing(records: &mut [KeyRecord]) {
    records.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

fn ids(records: &[KeyRecord]) -> Vec<&str> {
    records.iter().map(|r| &*r.id).collect()
}

/// Checks one listing against `baseline` (what the same query listed before this check created
/// anything) plus those of `mine` that match.
async fn assert_listing(
    store: &Arc<dyn KeyStore>,
    check: &str,
    baseline: Vec<KeyRecord>,
    mine: &[KeyRecord],
    role: Option<Role>,
    state: Option<KeyState>,
    now: DateTime<Utc>,
) {
    let mut expected = baseline;
    expected.extend(
        mine.iter()
            .filter(|r| role.is_none_or(|x| r.role == x) && state.is_none_or(|s| r.state(now) == s))
            .cloned(),
    );
    sort_listing(&mut expected);
    let got = list_all(store, check, role, state, now).await;
    if ids(&got) != ids(&expected) {
        fail(
            store,
            check,
            format!(
                "list role={role:?} state={state:?} at {now}: expected ids {:?}, got {:?}",
                ids(&expected),
                ids(&got)
            ),
        );
    }
    for (e, g) in expected.iter().zip(got) {
        assert_record(store, check, "listed record", e, g);
    }
}
