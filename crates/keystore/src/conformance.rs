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

// ---------------------------------------------------------------------------------------------
// List checks (need a store no one else writes to; see the module docs)

/// `list` with a role filter returns exactly the keys of that role.
pub async fn list_filters_by_role(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "list_filters_by_role";
    let now = Utc::now();
    let mut baselines = Vec::new();
    for role in [
        None,
        Some(Role::Admin),
        Some(Role::User),
        Some(Role::Readonly),
    ] {
        baselines.push((role, list_all(store, CHECK, role, None, now).await));
    }
    let hash = shared_hash().await;
    let base = ms_now();
    let roles = [
        Role::Admin,
        Role::User,
        Role::Readonly,
        Role::User,
        Role::Admin,
    ];
    let mut mine = Vec::new();
    for (i, role) in roles.into_iter().enumerate() {
        let key = stored(
            &new_id(),
            &format!("role-{i}"),
            role,
            base + secs(i as i64),
            &hash,
        );
        create_ok(store, CHECK, &key).await;
        mine.push(key.record);
    }
    for (role, baseline) in baselines {
        assert_listing(store, CHECK, baseline, &mine, role, None, now).await;
    }
}

/// `list` with a state filter judges active/expired/revoked at `query.now`, not the wall clock;
/// revocation wins over expiry, and a key expiring exactly at `now` is expired.
pub async fn list_filters_by_state_at_query_now(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "list_filters_by_state_at_query_now";
    // Ten days ahead: a backend judging states by its own clock gets these wrong.
    let t = ms_now() + TimeDelta::days(10);
    let later = t + TimeDelta::hours(2);
    let filters = [
        (None, None),
        (None, Some(KeyState::Active)),
        (None, Some(KeyState::Expired)),
        (None, Some(KeyState::Revoked)),
        (Some(Role::Admin), Some(KeyState::Active)),
        (Some(Role::User), Some(KeyState::Revoked)),
    ];
    let mut baselines = Vec::new();
    for now in [t, later] {
        for (role, state) in filters {
            baselines.push((
                role,
                state,
                now,
                list_all(store, CHECK, role, state, now).await,
            ));
        }
    }

    let hash = shared_hash().await;
    let base = ms_now();
    type Shape = (Role, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let shapes: [Shape; 8] = [
        (Role::User, None, None),                                  // active
        (Role::Admin, Some(t + secs(3600)), None),                 // active at t, expired later
        (Role::User, Some(t - secs(3600)), None),                  // expired
        (Role::Readonly, Some(t), None),                           // expires exactly at t: expired
        (Role::User, None, Some(t - secs(3600))),                  // revoked
        (Role::Admin, Some(t - secs(3600)), Some(t - secs(7200))), // revoked wins over expired
        (Role::User, None, Some(t + secs(3600))),                  // revoked only later
        (Role::Admin, None, None),                                 // active
    ];
    let mut mine = Vec::new();
    for (i, (role, expires_at, revoked_at)) in shapes.into_iter().enumerate() {
        let mut key = stored(
            &new_id(),
            &format!("state-{i}"),
            role,
            base + secs(i as i64),
            &hash,
        );
        key.record.expires_at = expires_at;
        key.record.revoked_at = revoked_at;
        create_ok(store, CHECK, &key).await;
        mine.push(key.record);
    }
    for (role, state, now, baseline) in baselines {
        assert_listing(store, CHECK, baseline, &mine, role, state, now).await;
    }
}

/// `list` orders by `created_at` then `id`, windows with offset/limit, reports the full total,
/// echoes offset and limit, and never includes a secret hash.
pub async fn list_paginates_in_created_order(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "list_paginates_in_created_order";
    let now = Utc::now();
    let baseline = list_all(store, CHECK, None, None, now).await;

    let hash = shared_hash().await;
    let base = ms_now();
    let mut mine = Vec::new();
    // Created out of created_at order, so a backend returning insertion order fails.
    for (i, offset) in [5, 1, 8, 3, 0, 7, 2, 6].into_iter().enumerate() {
        let key = stored(
            &new_id(),
            &format!("page-{i}"),
            Role::User,
            base + secs(offset),
            &hash,
        );
        create_ok(store, CHECK, &key).await;
        mine.push(key.record);
    }
    // Two keys created in the same millisecond are ordered by id.
    let tied_at = base + secs(4);
    for i in 0..2 {
        let key = stored(
            &new_id(),
            &format!("tied-{i}"),
            Role::Readonly,
            tied_at,
            &hash,
        );
        create_ok(store, CHECK, &key).await;
        mine.push(key.record);
    }

    let mut expected = baseline;
    expected.extend(mine.iter().cloned());
    sort_listing(&mut expected);
    let total = expected.len();
    let windows = [
        (0, 3),
        (3, 3),
        (6, 4),
        (total.saturating_sub(4), 3),
        (total.saturating_sub(1), 5),
        (0, 100),
        (total, 5),
        (total + 7, 5),
    ];
    for (offset, limit) in windows {
        let q = ListQuery {
            role: None,
            state: None,
            offset,
            limit,
            now,
        };
        let page = list_page(store, CHECK, &q).await;
        let want = &expected[offset.min(total)..(offset + limit).min(total)];
        if page.total != total || page.offset != offset || page.limit != limit {
            fail(
                store,
                CHECK,
                format!(
                    "page (offset {offset}, limit {limit}) reports total {}, offset {}, limit {}; \
                     expected total {total}, offset {offset}, limit {limit}",
                    page.total, page.offset, page.limit
                ),
            );
        }
        if ids(&page.items) != ids(want) {
            fail(
                store,
                CHECK,
                format!(
                    "page (offset {offset}, limit {limit}): expected ids {:?}, got {:?}",
                    ids(want),
                    ids(&page.items)
                ),
            );
        }
        for (e, g) in want.iter().zip(page.items) {
            assert_record(store, CHECK, "paged record", e, g);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// `get` of an id never created is `None`, not an error.
pub async fn get_unknown_is_none(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "get_unknown_is_none";
    let id = new_id();
    match store.get(&id).await {
        Ok(None) => {}
        Ok(Some(k)) => fail(store, CHECK, format!("get {id} returned {:?}", k.record)),
        Err(e) => fail(store, CHECK, format!("get {id} failed: {e}")),
    }
}

/// `create` then `get` returns every field as given: the record (including sub-second
/// timestamps to the millisecond, rate limit, model list, nested metadata, rotation) and the hash.
pub async fn create_then_get_round_trips(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "create_then_get_round_trips";
    let secret = format!("conformance-{}", new_id());
    let hash = fresh_hash(&secret).await;
    let created_at = Utc::now();
    let mut full = stored(
        &new_id(),
        "round trip: ✓ \"quoted\" #not-a-comment",
        Role::Readonly,
        created_at,
        &hash,
    );
    // Sub-millisecond digits on purpose: they may be dropped, milliseconds may not.
    full.record.created_at = ms_now() - TimeDelta::days(1) + TimeDelta::nanoseconds(123_456_789);
    full.record.created_by = "cli".to_string();
    full.record.expires_at =
        Some(ms_now() + TimeDelta::days(30) + TimeDelta::nanoseconds(987_654_321));
    full.record.revoked_at = Some(ms_now() + TimeDelta::days(60) + TimeDelta::milliseconds(7));
    full.record.rate_limit = Some(rate("7/minute"));
    full.record.models = Some(vec!["gpt-4o".to_string(), "llama-3.1-8b".to_string()]);
    full.record.metadata = match json!({
        "team": "ml",
        "cost_center": 42,
        "ratio": 0.5,
        "yes": "no",
        "numeric_string": "0123",
        "tags": ["a", "b"],
        "nested": {"ok": true, "none": null},
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    full.record.rotated_to = Some(new_id());
    create_ok(store, CHECK, &full).await;
    let got = get_some(store, CHECK, &full.record.id).await;
    if !hash::verify_secret(&secret, &got.secret_hash) {
        fail(
            store,
            CHECK,
            "the stored hash no longer verifies its secret",
        );
    }
    assert_stored(store, CHECK, "fully populated key", &full, got);

    // Empty and absent are different: `Some([])` allows no model, `None` allows every model.
    let shared = shared_hash().await;
    let mut no_models = stored(&new_id(), "no models", Role::User, ms_now(), &shared);
    no_models.record.models = Some(Vec::new());
    create_ok(store, CHECK, &no_models).await;
    let got = get_some(store, CHECK, &no_models.record.id).await;
    assert_stored(
        store,
        CHECK,
        "key with an empty model list",
        &no_models,
        got,
    );

    // Names a careless serializer would turn into other types.
    for name in ["", "null", "123", "yes", "~", "- item", "{a: b}", "ünïcødé"] {
        let key = stored(&new_id(), name, Role::Admin, ms_now(), &shared);
        create_ok(store, CHECK, &key).await;
        let got = get_some(store, CHECK, &key.record.id).await;
        assert_stored(store, CHECK, &format!("key named {name:?}"), &key, got);
    }
}

/// `create` with an id that exists is `Conflict` and leaves the existing key untouched.
pub async fn create_existing_id_conflicts(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "create_existing_id_conflicts";
    let hash = shared_hash().await;
    let id = new_id();
    let first = stored(&id, "first", Role::User, ms_now(), &hash);
    create_ok(store, CHECK, &first).await;
    let mut second = stored(&id, "second", Role::Admin, ms_now(), &hash);
    second.secret_hash = fresh_hash("another secret").await;
    match store.create(second).await {
        Err(KeyStoreError::Conflict(_)) => {}
        Err(e) => fail(store, CHECK, format!("expected Conflict, got error {e:?}")),
        Ok(()) => fail(store, CHECK, "creating an existing id succeeded"),
    }
    let got = get_some(store, CHECK, &id).await;
    assert_stored(store, CHECK, "key after a conflicting create", &first, got);
}

/// Concurrent `create`s of one id: exactly one succeeds, the others are `Conflict`, and the
/// stored key is the winner's.
pub async fn concurrent_creates_of_one_id_conflict(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "concurrent_creates_of_one_id_conflict";
    let hash = shared_hash().await;
    let id = new_id();
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let store = store.clone();
        let key = stored(&id, &format!("racer-{i}"), Role::User, ms_now(), &hash);
        tasks.spawn(async move { (i, store.create(key).await) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(()))) => winners.push(i),
            Ok((_, Err(KeyStoreError::Conflict(_)))) => {}
            Ok((i, Err(e))) => fail(
                store,
                CHECK,
                format!("racer {i}: expected Conflict, got {e:?}"),
            ),
            Err(e) => fail(store, CHECK, format!("a create task failed: {e}")),
        }
    }
    if winners.len() != 1 {
        fail(
            store,
            CHECK,
            format!("expected exactly one successful create, got {winners:?}"),
        );
    }
    let got = get_some(store, CHECK, &id).await;
    let want = format!("racer-{}", winners[0]);
    if got.record.name != want {
        fail(
            store,
            CHECK,
            format!(
                "stored name {:?}, but the create that succeeded was {want:?}",
                got.record.name
            ),
        );
    }
}

/// Each `KeyPatch` field applies on its own, `Some(None)` clears, an empty patch changes
/// nothing, and neither the identity nor the hash ever changes.
pub async fn update_applies_each_field(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "update_applies_each_field";
    let hash = shared_hash().await;
    let id = new_id();
    let key = stored(&id, "before", Role::User, ms_now(), &hash);
    create_ok(store, CHECK, &key).await;

    let at = ms_now() + TimeDelta::days(3) + TimeDelta::milliseconds(250);
    let mut metadata = Map::new();
    metadata.insert("owner".to_string(), json!("team-a"));
    metadata.insert("limits".to_string(), json!({"daily": 1000}));
    let patches: Vec<(&str, KeyPatch)> = vec![
        ("nothing", KeyPatch::default()),
        (
            "name",
            KeyPatch {
                name: Some("after".into()),
                ..KeyPatch::default()
            },
        ),
        (
            "role",
            KeyPatch {
                role: Some(Role::Admin),
                ..KeyPatch::default()
            },
        ),
        (
            "expires_at",
            KeyPatch {
                expires_at: Some(Some(at)),
                ..KeyPatch::default()
            },
        ),
        (
            "revoked_at",
            KeyPatch {
                revoked_at: Some(Some(at + secs(1))),
                ..KeyPatch::default()
            },
        ),
        (
            "rate_limit",
            KeyPatch {
                rate_limit: Some(Some(rate("100/hour"))),
                ..KeyPatch::default()
            },
        ),
        (
            "models",
            KeyPatch {
                models: Some(Some(vec!["m1".into(), "m2".into()])),
                ..KeyPatch::default()
            },
        ),
        (
            "metadata",
            KeyPatch {
                metadata: Some(metadata),
                ..KeyPatch::default()
            },
        ),
        (
            "rotated_to",
            KeyPatch {
                rotated_to: Some(Some(new_id())),
                ..KeyPatch::default()
            },
        ),
        ("nothing again", KeyPatch::default()),
        (
            "clear expires_at",
            KeyPatch {
                expires_at: Some(None),
                ..KeyPatch::default()
            },
        ),
        (
            "clear revoked_at",
            KeyPatch {
                revoked_at: Some(None),
                ..KeyPatch::default()
            },
        ),
        (
            "clear rate_limit",
            KeyPatch {
                rate_limit: Some(None),
                ..KeyPatch::default()
            },
        ),
        (
            "clear models",
            KeyPatch {
                models: Some(None),
                ..KeyPatch::default()
            },
        ),
        (
            "empty metadata",
            KeyPatch {
                metadata: Some(Map::new()),
                ..KeyPatch::default()
            },
        ),
        (
            "clear rotated_to",
            KeyPatch {
                rotated_to: Some(None),
                ..KeyPatch::default()
            },
        ),
        (
            "several fields",
            KeyPatch {
                name: Some("several".into()),
                role: Some(Role::Readonly),
                revoked_at: Some(Some(at)),
                models: Some(Some(Vec::new())),
                ..KeyPatch::default()
            },
        ),
    ];
    let mut expected = key.clone();
    for (what, patch) in patches {
        patch.apply(&mut expected.record);
        let returned = update_ok(store, CHECK, &id, patch).await;
        assert_record(
            store,
            CHECK,
            &format!("update {what}: returned"),
            &expected.record,
            returned,
        );
        let got = get_some(store, CHECK, &id).await;
        assert_stored(
            store,
            CHECK,
            &format!("update {what}: stored"),
            &expected,
            got,
        );
    }
}

/// `update` of an id never created is `NotFound` and creates nothing.
pub async fn update_unknown_is_not_found(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "update_unknown_is_not_found";
    let id = new_id();
    let patch = KeyPatch {
        name: Some("ghost".into()),
        ..KeyPatch::default()
    };
    match store.update(&id, patch).await {
        Err(KeyStoreError::NotFound(_)) => {}
        Err(e) => fail(store, CHECK, format!("expected NotFound, got {e:?}")),
        Ok(r) => fail(
            store,
            CHECK,
            format!("update of unknown {id} returned {r:?}"),
        ),
    }
    match store.get(&id).await {
        Ok(None) => {}
        Ok(Some(k)) => fail(store, CHECK, format!("update created {:?}", k.record)),
        Err(e) => fail(store, CHECK, format!("get {id} failed: {e}")),
    }
}

/// 20 concurrent creates then 20 concurrent updates, one per key, all land.
pub async fn concurrent_updates_to_different_keys_all_land(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "concurrent_updates_to_different_keys_all_land";
    const N: usize = 20;
    let hash = shared_hash().await;
    let keys: Vec<StoredKey> = (0..N)
        .map(|i| stored(&new_id(), &format!("many-{i}"), Role::User, ms_now(), &hash))
        .collect();
    let mut tasks = JoinSet::new();
    for key in keys.clone() {
        let store = store.clone();
        tasks.spawn(async move { (key.record.id.clone(), store.create(key).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((id, Err(e))) => fail(store, CHECK, format!("concurrent create {id} failed: {e}")),
            Err(e) => fail(store, CHECK, format!("a create task failed: {e}")),
        }
    }
    let mut tasks = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let store = store.clone();
        let id = key.record.id.clone();
        let mut metadata = Map::new();
        metadata.insert("task".to_string(), json!(i));
        let patch = KeyPatch {
            name: Some(format!("updated-{i}")),
            metadata: Some(metadata),
            ..KeyPatch::default()
        };
        tasks.spawn(async move { (id.clone(), store.update(&id, patch).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(_))) => {}
            Ok((id, Err(e))) => fail(store, CHECK, format!("concurrent update {id} failed: {e}")),
            Err(e) => fail(store, CHECK, format!("an update task failed: {e}")),
        }
    }
    for (i, key) in keys.iter().enumerate() {
        let got = get_some(store, CHECK, &key.record.id).await;
        if got.record.name != format!("updated-{i}")
            || got.record.metadata.get("task") != Some(&json!(i))
        {
            fail(
                store,
                CHECK,
                format!("update of {} was lost: {:?}", key.record.id, got.record),
            );
        }
    }
}

/// 20 concurrent updates of one key's name all succeed, each returns its own name, and the
/// final name is one of them.
pub async fn concurrent_updates_to_one_key_all_succeed(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "concurrent_updates_to_one_key_all_succeed";
    const N: usize = 20;
    let hash = shared_hash().await;
    let id = new_id();
    create_ok(
        store,
        CHECK,
        &stored(&id, "contended", Role::User, ms_now(), &hash),
    )
    .await;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let store = store.clone();
        let id = id.clone();
        let patch = KeyPatch {
            name: Some(format!("writer-{i}")),
            ..KeyPatch::default()
        };
        tasks.spawn(async move { (i, store.update(&id, patch).await) });
    }
    let mut names = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(r))) if r.name == format!("writer-{i}") => {
                names.insert(r.name);
            }
            Ok((i, Ok(r))) => fail(
                store,
                CHECK,
                format!("update by writer-{i} returned name {:?}", r.name),
            ),
            Ok((i, Err(e))) => fail(store, CHECK, format!("update by writer-{i} failed: {e}")),
            Err(e) => fail(store, CHECK, format!("an update task failed: {e}")),
        }
    }
    let got = get_some(store, CHECK, &id).await;
    if !names.contains(&got.record.name) {
        fail(
            store,
            CHECK,
            format!("final name {:?} was never written", got.record.name),
        );
    }
}

/// Concurrent updates of different fields of one key all land: no update is lost to another's
/// read-modify-write.
pub async fn concurrent_updates_to_different_fields_all_land(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "concurrent_updates_to_different_fields_all_land";
    let hash = shared_hash().await;
    let id = new_id();
    let key = stored(&id, "fields", Role::User, ms_now(), &hash);
    create_ok(store, CHECK, &key).await;
    let at = ms_now() + TimeDelta::days(9);
    let mut metadata = Map::new();
    metadata.insert("landed".to_string(), json!(true));
    let patches = [
        KeyPatch {
            name: Some("renamed".into()),
            ..KeyPatch::default()
        },
        KeyPatch {
            role: Some(Role::Admin),
            ..KeyPatch::default()
        },
        KeyPatch {
            expires_at: Some(Some(at)),
            ..KeyPatch::default()
        },
        KeyPatch {
            revoked_at: Some(Some(at)),
            ..KeyPatch::default()
        },
        KeyPatch {
            rate_limit: Some(Some(rate("3/second"))),
            ..KeyPatch::default()
        },
        KeyPatch {
            models: Some(Some(vec!["only".into()])),
            ..KeyPatch::default()
        },
        KeyPatch {
            metadata: Some(metadata),
            ..KeyPatch::default()
        },
        KeyPatch {
            rotated_to: Some(Some("successor".into())),
            ..KeyPatch::default()
        },
    ];
    let mut expected = key.clone();
    let mut tasks = JoinSet::new();
    for patch in patches {
        patch.apply(&mut expected.record);
        let store = store.clone();
        let id = id.clone();
        tasks.spawn(async move { store.update(&id, patch).await });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => fail(store, CHECK, format!("concurrent update failed: {e}")),
            Err(e) => fail(store, CHECK, format!("an update task failed: {e}")),
        }
    }
    let got = get_some(store, CHECK, &id).await;
    assert_stored(
        store,
        CHECK,
        "after concurrent field updates",
        &expected,
        got,
    );
}

// ---------------------------------------------------------------------------------------------
// Audit

fn audit_entry(
    actor: &str,
    action: &str,
    target: Option<&str>,
    at: DateTime<Utc>,
    n: usize,
) -> AuditEntry {
    AuditEntry {
        id: format!("audit-{}-{n}", new_id()),
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.map(str::to_string),
        client_ip: Some("203.0.113.7".to_string()),
        outcome: if n.is_multiple_of(2) {
            "success"
        } else {
            "failure"
        }
        .to_string(),
        detail: json!({"n": n, "fields": ["name", "role"], "grace": {"seconds": 3600}}),
    }
}

async fn append_ok(store: &Arc<dyn KeyStore>, check: &str, entry: &AuditEntry) {
    if let Err(e) = store.append_audit(entry.clone()).await {
        fail(
            store,
            check,
            format!("append_audit {} failed: {e}", entry.id),
        );
    }
}

async fn audit_ok(store: &Arc<dyn KeyStore>, check: &str, q: &AuditQuery) -> Vec<AuditEntry> {
    match store.audit(q).await {
        Ok(v) => v,
        Err(e) => fail(store, check, format!("audit {q:?} failed: {e}")),
    }
}

fn assert_entries(
    store: &Arc<dyn KeyStore>,
    check: &str,
    what: &str,
    expected: &[&AuditEntry],
    got: Vec<AuditEntry>,
) {
    let got: Vec<AuditEntry> = got
        .into_iter()
        .zip(expected.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(mut g, e)| {
            // Timestamps to the millisecond, like records.
            if let Some(e) = e
                && same_instant(e.at, g.at)
            {
                g.at = e.at;
            }
            g
        })
        .collect();
    let expected: Vec<AuditEntry> = expected.iter().map(|e| (*e).clone()).collect();
    if got != expected {
        let ids = |v: &[AuditEntry]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        fail(
            store,
            check,
            format!(
                "{what}: expected entries {:?}, got {:?}\n  expected: {expected:?}\n       got: {got:?}",
                ids(&expected),
                ids(&got)
            ),
        );
    }
}

/// `audit` filters by actor, action, target and an inclusive since/until window, returns the
/// oldest first, and windows with offset/limit (limit 0 meaning the default of 100).
pub async fn audit_filters_orders_and_pages(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "audit_filters_orders_and_pages";
    let actor = format!("conformance-{}", new_id());
    let other = format!("conformance-{}", new_id());
    let (t1, t2) = (new_id(), new_id());
    let base = ms_now();
    let entries = [
        audit_entry(&actor, "create", Some(&t1), base, 0),
        audit_entry(&actor, "update", Some(&t1), base + secs(1), 1),
        audit_entry(&other, "create", Some(&t2), base + secs(2), 2),
        audit_entry(&actor, "revoke", Some(&t2), base + secs(3), 3),
        audit_entry(&actor, "create", None, base + secs(4), 4),
    ];
    for e in &entries {
        append_ok(store, CHECK, e).await;
    }
    let [e0, e1, e2, e3, e4] = &entries;
    let by_actor = |actor: &str| AuditQuery {
        actor: Some(actor.to_string()),
        ..AuditQuery::default()
    };
    let cases: Vec<(&str, AuditQuery, Vec<&AuditEntry>)> = vec![
        ("by actor", by_actor(&actor), vec![e0, e1, e3, e4]),
        ("by the other actor", by_actor(&other), vec![e2]),
        (
            "by actor and action",
            AuditQuery {
                action: Some("create".into()),
                ..by_actor(&actor)
            },
            vec![e0, e4],
        ),
        (
            "by target",
            AuditQuery {
                target: Some(t2.clone()),
                ..AuditQuery::default()
            },
            vec![e2, e3],
        ),
        (
            "by target and action",
            AuditQuery {
                target: Some(t1.clone()),
                action: Some("update".into()),
                ..AuditQuery::default()
            },
            vec![e1],
        ),
        (
            "since and until, inclusive",
            AuditQuery {
                since: Some(e1.at),
                until: Some(e3.at),
                ..by_actor(&actor)
            },
            vec![e1, e3],
        ),
        (
            "since",
            AuditQuery {
                since: Some(e3.at),
                ..by_actor(&actor)
            },
            vec![e3, e4],
        ),
        (
            "until",
            AuditQuery {
                until: Some(e0.at),
                ..by_actor(&actor)
            },
            vec![e0],
        ),
        (
            "limit",
            AuditQuery {
                limit: 2,
                ..by_actor(&actor)
            },
            vec![e0, e1],
        ),
        (
            "offset and limit",
            AuditQuery {
                offset: 1,
                limit: 2,
                ..by_actor(&actor)
            },
            vec![e1, e3],
        ),
        (
            "offset only",
            AuditQuery {
                offset: 3,
                ..by_actor(&actor)
            },
            vec![e4],
        ),
        (
            "offset past the end",
            AuditQuery {
                offset: 9,
                ..by_actor(&actor)
            },
            vec![],
        ),
        (
            "nothing matches",
            AuditQuery {
                action: Some("no-such-action".into()),
                ..by_actor(&actor)
            },
            vec![],
        ),
    ];
    for (what, q, want) in cases {
        let got = audit_ok(store, CHECK, &q).await;
        assert_entries(store, CHECK, what, &want, got);
    }
}

/// Appending never rewrites earlier entries.
pub async fn audit_is_append_only(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "audit_is_append_only";
    let actor = format!("conformance-{}", new_id());
    let base = ms_now();
    let first: Vec<AuditEntry> = (0..3)
        .map(|i| audit_entry(&actor, "update", None, base + secs(i as i64), i))
        .collect();
    for e in &first {
        append_ok(store, CHECK, e).await;
    }
    let q = AuditQuery {
        actor: Some(actor.clone()),
        ..AuditQuery::default()
    };
    let before = audit_ok(store, CHECK, &q).await;
    assert_entries(
        store,
        CHECK,
        "first entries",
        &first.iter().collect::<Vec<_>>(),
        before.clone(),
    );

    let more: Vec<AuditEntry> = (3..6)
        .map(|i| audit_entry(&actor, "delete", Some("x"), base + secs(i as i64), i))
        .collect();
    for e in &more {
        append_ok(store, CHECK, e).await;
    }
    let after = audit_ok(store, CHECK, &q).await;
    if after.len() != 6 || after[..3] != before[..] {
        fail(
            store,
            CHECK,
            format!("appending changed earlier entries\n  before: {before:?}\n   after: {after:?}"),
        );
    }
    let all: Vec<&AuditEntry> = first.iter().chain(&more).collect();
    assert_entries(store, CHECK, "all entries", &all, after);
}

// ---------------------------------------------------------------------------------------------
// Change feed

/// Waits for a change covering `id` (or everything), skipping changes to other keys.
async fn expect_change(
    store: &Arc<dyn KeyStore>,
    check: &str,
    rx: &mut broadcast::Receiver<KeyChange>,
    id: &str,
    after: &str,
) {
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => fail(
                store,
                check,
                format!("no change for {id} on the feed within {CHANGE_TIMEOUT:?} after {after}"),
            ),
            Ok(Ok(KeyChange::Key(k))) if k == id => return,
            Ok(Ok(KeyChange::All)) => return,
            Ok(Ok(KeyChange::Key(_))) => {}
            // A lagging receiver has lost changes, so a cache must drop everything: as good as
            // `All` for our key.
            Ok(Err(RecvError::Lagged(_))) => return,
            Ok(Err(RecvError::Closed)) => fail(store, check, "the change feed closed"),
        }
    }
}

/// A subscriber hears about a `create` and an `update` within 2 s.
pub async fn changes_reported_for_create_and_update(store: &Arc<dyn KeyStore>) {
    const CHECK: &str = "changes_reported_for_create_and_update";
    let hash = shared_hash().await;
    let id = new_id();

    let mut rx = store.changes();
    create_ok(
        store,
        CHECK,
        &stored(&id, "watched", Role::User, ms_now(), &hash),
    )
    .await;
    expect_change(store, CHECK, &mut rx, &id, "create").await;

    // A fresh subscription, so a second notice of the create cannot pass for the update's.
    let mut rx = store.changes();
    let patch = KeyPatch {
        revoked_at: Some(Some(Utc::now())),
        ..KeyPatch::default()
    };
    update_ok(store, CHECK, &id, patch).await;
    expect_change(store, CHECK, &mut rx, &id, "update").await;
}
