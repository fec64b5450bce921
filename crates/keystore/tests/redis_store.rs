//! The Redis key store against a real `redis-server` (one per test, on its own port).
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use infergate_keystore::redis::{DEFAULT_TIMEOUT, KeyNames};
use infergate_keystore::{
    AuditEntry, AuditQuery, KeyChange, KeyPatch, KeyRecord, KeyState, KeyStore, KeyStoreError,
    ListQuery, RedisKeyStore, StoredKey, conformance,
};
use infergate_policy::Role;
use infergate_testkit::RedisServer;
use redis::AsyncCommands;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

const PREFIX: &str = "test";

async fn store(server: &RedisServer) -> RedisKeyStore {
    RedisKeyStore::connect(&server.url(), PREFIX)
        .await
        .expect("connect to the test redis")
}

/// A raw connection, to look at what the store wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn key(id: &str, role: Role, created_at: DateTime<Utc>) -> StoredKey {
    let mut record = KeyRecord::new(id, format!("name of {id}"), role, "test");
    record.prefix = "igk".into();
    record.created_at = created_at;
    StoredKey {
        record,
        // The store treats the hash as opaque; a real argon2 hash would only slow tests down.
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${id}"),
    }
}

fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn audit_entry(n: usize, actor: &str, action: &str, target: Option<&str>) -> AuditEntry {
    AuditEntry {
        id: format!("audit-{n}"),
        at: now_ms() + TimeDelta::milliseconds(n as i64),
        actor: actor.into(),
        action: action.into(),
        target: target.map(Into::into),
        client_ip: None,
        outcome: "success".into(),
        detail: serde_json::json!({ "n": n }),
    }
}

/// The next change on `rx` within `within`, or a panic saying what was awaited.
async fn next_change(
    rx: &mut broadcast::Receiver<KeyChange>,
    within: Duration,
    what: &str,
) -> KeyChange {
    match timeout(within, rx.recv()).await {
        Ok(Ok(change)) => change,
        Ok(Err(e)) => panic!("change feed error while waiting for {what}: {e}"),
        Err(_) => panic!("no change within {within:?} while waiting for {what}"),
    }
}

/// Waits for `wanted`, skipping other changes.
async fn wait_for(rx: &mut broadcast::Receiver<KeyChange>, wanted: KeyChange, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if next_change(rx, left, &format!("{wanted:?}")).await == wanted {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip() {
    let server = RedisServer::start();
    let store = store(&server).await;
    assert_eq!(store.backend(), "redis");
    assert!(store.get("nothing").await.unwrap().is_none());

    let mut k = key("abc123def456", Role::Readonly, Utc::now());
    k.record.expires_at = Some(Utc::now() + TimeDelta::days(3));
    k.record.models = Some(vec!["m1".into()]);
    k.record.rate_limit = Some("5/minute".parse().unwrap());
    k.record
        .metadata
        .insert("team".into(), serde_json::json!("ml"));
    store.create(k.clone()).await.unwrap();
    assert_eq!(store.get("abc123def456").await.unwrap(), Some(k));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_of_an_existing_id_conflicts_and_keeps_the_original() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let original = key("dup000000001", Role::User, Utc::now());
    store.create(original.clone()).await.unwrap();

    let mut other = key("dup000000001", Role::Admin, Utc::now());
    other.secret_hash = "$argon2id$other".into();
    match store.create(other).await {
        Err(KeyStoreError::Conflict(id)) => assert_eq!(id, "dup000000001"),
        r => panic!("expected Conflict, got {r:?}"),
    }
    // The very same record again is a conflict too, not a silent success.
    assert!(matches!(
        store.create(original.clone()).await,
        Err(KeyStoreError::Conflict(_))
    ));
    assert_eq!(store.get("dup000000001").await.unwrap(), Some(original));
    let page = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(page.total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_returns_the_new_record_and_unknown_is_not_found() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let k = key("upd000000001", Role::User, Utc::now());
    store.create(k.clone()).await.unwrap();

    let revoked_at = now_ms();
    let patch = KeyPatch {
        name: Some("renamed".into()),
        revoked_at: Some(Some(revoked_at)),
        models: Some(Some(vec!["a".into(), "b".into()])),
        ..KeyPatch::default()
    };
    let updated = store.update("upd000000001", patch.clone()).await.unwrap();
    let mut expected = k.record.clone();
    patch.apply(&mut expected);
    assert_eq!(updated, expected);
    let stored = store.get("upd000000001").await.unwrap().unwrap();
    assert_eq!(stored.record, expected);
    assert_eq!(
        stored.secret_hash, k.secret_hash,
        "update must keep the hash"
    );

    // Clearing an optional field.
    let cleared = store
        .update(
            "upd000000001",
            KeyPatch {
                models: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.models, None);

    match store.update("nope00000000", patch).await {
        Err(KeyStoreError::NotFound(id)) => assert_eq!(id, "nope00000000"),
        r => panic!("expected NotFound, got {r:?}"),
    }
    assert!(store.get("nope00000000").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_two_instances_all_land() {
    let server = RedisServer::start();
    let a = Arc::new(store(&server).await);
    let b = Arc::new(store(&server).await);
    let original = key("race00000001", Role::User, Utc::now());
    a.create(original.clone()).await.unwrap();
    // Each patch sets a different field, alternately through two gateways: a lost update
    // (read-modify-write without compare-and-set) would drop some of them.
    let at = now_ms() + TimeDelta::days(1);
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
            models: Some(Some(vec!["m".into()])),
            ..KeyPatch::default()
        },
        KeyPatch {
            rotated_to: Some(Some("next00000001".into())),
            ..KeyPatch::default()
        },
    ];
    let mut expected = original.record.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, patch) in patches.into_iter().enumerate() {
        patch.apply(&mut expected);
        let s = if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        };
        tasks.spawn(async move { s.update("race00000001", patch).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        a.get("race00000001").await.unwrap().unwrap().record,
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_by_creation_and_filters() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let t0 = now_ms() - TimeDelta::hours(1);
    // Created out of order; two share a timestamp, so the id breaks the tie.
    let specs = [
        ("id0000000003", Role::User, 3),
        ("id0000000001", Role::Admin, 1),
        ("id0000000002b", Role::User, 2),
        ("id0000000002a", Role::Readonly, 2),
        ("id0000000004", Role::User, 4),
    ];
    for (id, role, minutes) in specs {
        let mut k = key(id, role, t0 + TimeDelta::minutes(minutes));
        if id == "id0000000004" {
            k.record.revoked_at = Some(t0);
        }
        store.create(k).await.unwrap();
    }
    let ids = |page: &infergate_keystore::Page| -> Vec<String> {
        page.items.iter().map(|r| r.id.to_string()).collect()
    };

    let all = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(
        ids(&all),
        [
            "id0000000001",
            "id0000000002a",
            "id0000000002b",
            "id0000000003",
            "id0000000004"
        ]
    );
    assert_eq!(all.total, 5);

    let users = store
        .list(&ListQuery {
            role: Some(Role::User),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&users),
        ["id0000000002b", "id0000000003", "id0000000004"]
    );

    let revoked = store
        .list(&ListQuery {
            state: Some(KeyState::Revoked),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&revoked), ["id0000000004"]);

    let window = store
        .list(&ListQuery {
            offset: 1,
            limit: 2,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&window), ["id0000000002a", "id0000000002b"]);
    assert_eq!((window.total, window.offset, window.limit), (5, 1, 2));

    // The listing never carries hashes.
    let json = serde_json::to_string(&all).unwrap();
    assert!(!json.contains("argon2"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_pages_and_defaults_to_100() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for n in 0..130_usize {
        let (actor, action) = if n.is_multiple_of(3) {
            ("admin1", "create")
        } else {
            ("cli", "update")
        };
        let target = n.is_multiple_of(2).then_some("tgt000000001");
        store
            .append_audit(audit_entry(n, actor, action, target))
            .await
            .unwrap();
    }
    let all = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 100, "limit 0 means 100");
    assert_eq!(all[0].id, "audit-0", "oldest first");
    assert_eq!(all[99].id, "audit-99");

    let q = AuditQuery {
        actor: Some("admin1".into()),
        target: Some("tgt000000001".into()),
        offset: 2,
        limit: 3,
        ..AuditQuery::default()
    };
    let got: Vec<String> = store
        .audit(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    // admin1 is every third entry, the target every second: 0, 6, 12, 18, 24, …
    assert_eq!(got, ["audit-12", "audit-18", "audit-24"]);

    let since = all[10].at;
    let until = all[12].at;
    let window = store
        .audit(&AuditQuery {
            since: Some(since),
            until: Some(until),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(window.len(), 3);
    assert_eq!(window[0], all[10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_a_second_instance() {
    let server = RedisServer::start();
    let writer = store(&server).await;
    let replica = store(&server).await;
    let mut rx = replica.changes();
    let mut own = writer.changes();

    writer
        .create(key("feed00000001", Role::User, Utc::now()))
        .await
        .unwrap();
    // Bounds a failure only (typically milliseconds): generous for a loaded 2-core machine.
    let within = Duration::from_secs(10);
    assert_eq!(
        next_change(&mut rx, within, "the create").await,
        KeyChange::Key("feed00000001".into())
    );
    // The writer hears its own change the same way.
    assert_eq!(
        next_change(&mut own, within, "the writer's own create").await,
        KeyChange::Key("feed00000001".into())
    );

    let revoke = KeyPatch {
        revoked_at: Some(Some(Utc::now())),
        ..KeyPatch::default()
    };
    writer.update("feed00000001", revoke).await.unwrap();
    assert_eq!(
        next_change(&mut rx, within, "the revocation").await,
        KeyChange::Key("feed00000001".into())
    );

    // Failed writes announce nothing, and a healthy feed neither reconnects nor sends `All`:
    // wait past one health ping (5 s) to see that the ping works on a subscribed connection.
    assert!(
        writer
            .update("none00000000", KeyPatch::default())
            .await
            .is_err()
    );
    assert!(
        writer
            .create(key("feed00000001", Role::User, Utc::now()))
            .await
            .is_err()
    );
    let quiet = timeout(Duration::from_millis(6_000), rx.recv()).await;
    assert!(quiet.is_err(), "unexpected change: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_carry_the_prefix_and_one_hash_tag() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let created_at = now_ms();
    store
        .create(key("names0000001", Role::User, created_at))
        .await
        .unwrap();
    store
        .append_audit(audit_entry(1, "cli", "create", Some("names0000001")))
        .await
        .unwrap();

    let names = KeyNames::new(PREFIX).unwrap();
    assert_eq!(store.names(), &names);
    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    // The two writes each left an idempotency token (expiring) beside the data.
    let tokens: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("{test:keys}:op:"))
        .collect();
    assert_eq!(tokens.len(), 2, "{keys:?}");
    for t in &tokens {
        let ttl: i64 = conn.pttl(t.as_str()).await.unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "token {t} ttl {ttl}");
    }
    let data: Vec<&str> = keys
        .iter()
        .filter(|k| !k.starts_with("{test:keys}:op:"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        data,
        [
            "{test:keys}:audit",
            "{test:keys}:ids",
            "{test:keys}:k:names0000001"
        ]
    );
    for k in &keys {
        assert!(k.starts_with("{test:keys}:"), "{k} is outside the hash tag");
    }

    let record: String = conn.get("{test:keys}:k:names0000001").await.unwrap();
    let parsed: StoredKey = serde_json::from_str(&record).unwrap();
    assert_eq!(&*parsed.record.id, "names0000001");
    let score: f64 = conn
        .zscore("{test:keys}:ids", "names0000001")
        .await
        .unwrap();
    assert_eq!(score as i64, created_at.timestamp_millis());
    let audit: Vec<String> = conn.lrange("{test:keys}:audit", 0, -1).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert!(audit[0].contains("\"audit-1\""));

    // Publishing on the documented channel reaches the feed (after the create's own notice,
    // which may still be in flight).
    let mut rx = store.changes();
    let _: i64 = conn
        .publish("test:keys:changes", "outside0001")
        .await
        .unwrap();
    wait_for(
        &mut rx,
        KeyChange::Key("outside0001".into()),
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_recovers_after_a_server_restart() {
    let mut server = RedisServer::start();
    let writer = store(&server).await;
    let replica = store(&server).await;
    let mut rx = replica.changes();

    server.restart();
    // Events may have been missed while the server was away: caches must drop everything.
    wait_for(&mut rx, KeyChange::All, Duration::from_secs(5)).await;

    // The restarted server is empty; the first write after the restart succeeds (the store
    // retries on the reconnected connection) and reaches the replica.
    writer
        .create(key("after0000001", Role::User, Utc::now()))
        .await
        .unwrap();
    wait_for(
        &mut rx,
        KeyChange::Key("after0000001".into()),
        Duration::from_secs(1),
    )
    .await;
    assert!(replica.get("after0000001").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_is_unavailable_within_the_timeout() {
    let mut server = RedisServer::start();
    let store = store(&server)
        .await
        .with_timeout(Duration::from_millis(500));
    store
        .create(key("down00000001", Role::User, Utc::now()))
        .await
        .unwrap();
    server.stop();

    // Each call gives up within its 500 ms (plus scheduling slack), whatever the operation.
    let bound = Duration::from_millis(1_200);
    let check = |op: &str, started: Instant, err: Option<KeyStoreError>| {
        let took = started.elapsed();
        assert!(took < bound, "{op} took {took:?}");
        match err {
            Some(KeyStoreError::Unavailable(msg)) => assert!(msg.contains("redis"), "{msg}"),
            other => panic!("{op}: expected Unavailable, got {other:?}"),
        }
    };
    let t = Instant::now();
    check("get", t, store.get("down00000001").await.err());
    let t = Instant::now();
    let k = key("down00000002", Role::User, Utc::now());
    check("create", t, store.create(k).await.err());
    let t = Instant::now();
    let patch = KeyPatch::default();
    check("update", t, store.update("down00000001", patch).await.err());
    let t = Instant::now();
    check("list", t, store.list(&ListQuery::default()).await.err());
    let t = Instant::now();
    let entry = audit_entry(0, "cli", "x", None);
    check("append_audit", t, store.append_audit(entry).await.err());
    let t = Instant::now();
    check("audit", t, store.audit(&AuditQuery::default()).await.err());

    // Connecting to nothing fails the same way, within the default timeout.
    let started = Instant::now();
    let port = infergate_testkit::free_port();
    match RedisKeyStore::connect(&format!("redis://127.0.0.1:{port}"), PREFIX).await {
        Err(KeyStoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < DEFAULT_TIMEOUT + Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_times_out_instead_of_hanging() {
    let server = RedisServer::start();
    let store = store(&server)
        .await
        .with_timeout(Duration::from_millis(300));
    server.pause(Duration::from_secs(3));
    let started = Instant::now();
    match store.get("paused000001").await {
        Err(KeyStoreError::Unavailable(msg)) => assert!(msg.contains("timed out"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The 300 ms timeout answered, not the 3 s pause.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        started.elapsed()
    );

    // Connecting to a server that accepts but does not answer is bounded the same way.
    let started = Instant::now();
    let timeout = Duration::from_millis(300);
    match RedisKeyStore::connect_with_timeout(&server.url(), PREFIX, timeout).await {
        Err(KeyStoreError::Unavailable(msg)) => assert!(msg.contains("within"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The 300 ms timeout answered, not the 3 s pause.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_are_errors_not_panics() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let mut conn = raw(&server).await;
    let _: () = conn
        .set("{test:keys}:k:garbage00001", "{not json")
        .await
        .unwrap();
    let _: i64 = conn
        .zadd("{test:keys}:ids", "garbage00001", 1)
        .await
        .unwrap();
    match store.get("garbage00001").await {
        Err(KeyStoreError::Parse { path, .. }) => {
            assert_eq!(path, "redis:{test:keys}:k:garbage00001")
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    assert!(matches!(
        store.list(&ListQuery::default()).await,
        Err(KeyStoreError::Parse { .. })
    ));
    assert!(matches!(
        store.update("garbage00001", KeyPatch::default()).await,
        Err(KeyStoreError::Parse { .. })
    ));

    // A valid record filed under another id must not answer for that id.
    let other = serde_json::to_string(&key("real00000001", Role::Admin, Utc::now())).unwrap();
    let _: () = conn.set("{test:keys}:k:alias0000001", other).await.unwrap();
    assert!(matches!(
        store.get("alias0000001").await,
        Err(KeyStoreError::Parse { .. })
    ));

    // Wrong types (someone else's data under our names) are errors too.
    let _: () = conn.set("{test:keys}:audit", "not a list").await.unwrap();
    assert!(matches!(
        store.audit(&AuditQuery::default()).await,
        Err(KeyStoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("hunter2-very-secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    let port = server.port();

    let good = format!("redis://:hunter2-very-secret@127.0.0.1:{port}");
    let store = RedisKeyStore::connect(&good, PREFIX).await.unwrap();
    store
        .create(key("auth00000001", Role::User, Utc::now()))
        .await
        .unwrap();
    assert_eq!(store.masked_url(), format!("redis://:***@127.0.0.1:{port}"));
    let debug = format!("{store:?}");
    assert!(!debug.contains("hunter2"), "{debug}");

    let bad = format!("redis://default:wrong-hunter3@127.0.0.1:{port}");
    match RedisKeyStore::connect(&bad, PREFIX).await {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains("hunter3"), "{msg}");
            assert!(msg.contains("redis://default:***@127.0.0.1"), "{msg}");
            assert!(
                msg.to_lowercase().contains("authentication failed"),
                "the cause is named: {msg}"
            );
        }
        Ok(s) => panic!("connected with a wrong password: {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_task_stops_when_the_store_is_dropped() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let subscribers = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let reply: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("test:keys:changes")
                .query_async(&mut conn)
                .await
                .unwrap();
            reply.1
        }
    };
    let a = store(&server).await;
    let b = store(&server).await;
    assert_eq!(subscribers(&mut conn).await, 2);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscribers(&mut conn).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the dropped store is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused() {
    for prefix in ["", "a{b}", "has space"] {
        match RedisKeyStore::connect("redis://127.0.0.1:1", prefix).await {
            Err(KeyStoreError::Invalid { .. }) => {}
            other => panic!("prefix {prefix:?}: expected Invalid, got {other:?}"),
        }
    }
    match RedisKeyStore::connect("http://:pw-in-url@127.0.0.1", PREFIX).await {
        Err(KeyStoreError::Invalid { detail, .. }) => {
            assert!(!detail.contains("pw-in-url"), "{detail}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conforms() {
    let server = RedisServer::start();
    let store: Arc<dyn KeyStore> = Arc::new(store(&server).await);
    conformance::run_all(store.clone()).await;

    // Everything the suite wrote stayed inside the store's hash tag.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let outside: HashSet<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("{test:keys}:"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
}
