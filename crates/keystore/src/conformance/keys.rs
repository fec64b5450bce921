//! The record checks: create, get, update, and their races.

use super::*;

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
