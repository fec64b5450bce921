//! The conformance suite against the in-process backends, plus the file store's own guarantees.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use infergate_keystore::format::{self, DEFAULT_PREFIX};
use infergate_keystore::hash::{self, HashParams};
use infergate_keystore::{
    AuditEntry, AuditQuery, FileKeyStore, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyStoreError,
    MemoryKeyStore, StaticKeyStore, StoredKey, Verification, conformance,
};
use infergate_policy::Role;
use tokio::sync::broadcast;

/// One real hash for every test key: stores treat it as opaque and hashing is slow.
fn shared_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash::hash_secret("tests-shared-secret", HashParams::default()).unwrap())
        .clone()
}

fn new_key(name: &str) -> StoredKey {
    let id = format::generate(DEFAULT_PREFIX).unwrap().id;
    let mut record = KeyRecord::new(id, name, Role::User, "test");
    record.prefix = DEFAULT_PREFIX.to_string();
    StoredKey {
        record,
        secret_hash: shared_hash(),
    }
}

fn keys_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keys.yaml")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn yaml(path: &Path) -> serde_json::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn expect_change(
    rx: &mut broadcast::Receiver<KeyChange>,
    want: &KeyChange,
    within: Duration,
) {
    tokio::time::timeout(within, async {
        loop {
            let change = rx.recv().await.unwrap();
            if &change == want {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} within {within:?}"));
}

// -------------------------------------------------------------------------------------------
// The suite

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(keys_path(&dir)).unwrap());
    conformance::run_all(store).await;
    // What was written reads back the same from a fresh instance.
    let reopened = FileKeyStore::open(keys_path(&dir)).unwrap();
    let page = reopened
        .list(&infergate_keystore::ListQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.total > 50, "{}", page.total);
    // Only the file, its lock, its audit log and its usage remain: no temporary files.
    assert_eq!(
        file_names(dir.path()),
        [
            "keys.yaml",
            "keys.yaml.audit.jsonl",
            "keys.yaml.lock",
            "keys.yaml.usage.json"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_conforms_when_written_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(&path).unwrap());
    conformance::run_all(store).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["version"], 2);
}

#[tokio::test(flavor = "current_thread")]
async fn file_store_conforms_on_a_single_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(keys_path(&dir)).unwrap());
    conformance::run_all(store).await;
}

// -------------------------------------------------------------------------------------------
// Loading

#[tokio::test]
async fn missing_file_is_empty_and_created_private_on_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let store = FileKeyStore::open(&path).unwrap();
    assert!(!path.exists(), "open must not create the file");
    assert!(store.legacy_keys().is_empty());
    assert_eq!(store.backend(), "file");
    let key = new_key("first");
    store.create(key.clone()).await.unwrap();
    assert_eq!(
        store.get(&key.record.id).await.unwrap().as_ref(),
        Some(&key)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let lock_mode = std::fs::metadata(dir.path().join("keys.yaml.lock"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(lock_mode, 0o600, "{lock_mode:o}");
    }
    let doc = yaml(&path);
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["keys"], serde_json::json!({}));
    assert_eq!(doc["hashed_keys"][&*key.record.id]["name"], "first");
    assert!(
        doc["hashed_keys"][&*key.record.id]["secret_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    std::fs::write(&path, "keys: {}\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    store.create(new_key("k")).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");
}

#[tokio::test]
async fn sections_left_empty_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    std::fs::write(&path, "version: 2\nkeys:\nhashed_keys:\n").unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    assert!(store.legacy_keys().is_empty());
    store.create(new_key("k")).await.unwrap();
    assert_eq!(
        FileKeyStore::open(&path)
            .unwrap()
            .list(&Default::default())
            .await
            .unwrap()
            .total,
        1
    );
}

#[tokio::test]
async fn empty_file_is_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    std::fs::write(&path, "\n  \n").unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    assert_eq!(store.list(&Default::default()).await.unwrap().total, 0);
    store.create(new_key("k")).await.unwrap();
    assert_eq!(
        FileKeyStore::open(&path)
            .unwrap()
            .list(&Default::default())
            .await
            .unwrap()
            .total,
        1
    );
}

const SEED_JSON: &str = r#"{
  "keys": {
    "sk-legacy-admin-0001": {"name": "ops", "role": "admin", "expires": null},
    "sk-legacy-user-0002": {"name": "ci", "role": "user", "expires": "2027-01-19T00:00:00", "rate_limit": "10/minute"},
    "12345": {"role": "readonly"}
  }
}"#;

#[tokio::test]
async fn seed_json_loads_and_its_keys_survive_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, SEED_JSON).unwrap();
    let before: serde_json::Value = serde_json::from_str(SEED_JSON).unwrap();

    let store = FileKeyStore::open(&path).unwrap();
    assert_eq!(store.list(&Default::default()).await.unwrap().total, 0);
    let legacy = store.legacy_keys();
    assert_eq!(legacy.len(), 3);
    let ci = legacy.iter().find(|k| k.name == "ci").unwrap();
    assert_eq!(ci.role, Role::User);
    assert_eq!(ci.rate_limit.map(|r| r.limit), Some(10));
    assert_eq!(
        ci.expires_at.map(|d| d.to_rfc3339()),
        Some("2027-01-19T00:00:00+00:00".to_string())
    );

    let key = new_key("hashed");
    store.create(key.clone()).await.unwrap();
    store
        .update(
            &key.record.id,
            KeyPatch {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Still JSON; the legacy section means the same after the writes, and loads alike
    // everywhere.
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(after["keys"], before["keys"]);
    assert_eq!(after["version"], 2);
    let reopened = FileKeyStore::open(&path).unwrap();
    assert_eq!(reopened.legacy_keys(), legacy);
    assert_eq!(
        infergate_keystore::load_keys_file(&path).unwrap(),
        legacy,
        "the gateway's legacy loader reads a v2 file's keys section"
    );
    assert_eq!(
        reopened
            .get(&key.record.id)
            .await
            .unwrap()
            .unwrap()
            .record
            .name,
        "renamed"
    );
    // Legacy keys still verify through a static store built from them.
    let statics = StaticKeyStore::new(reopened.legacy_keys()).unwrap();
    assert!(matches!(
        statics.verify_now("sk-legacy-admin-0001", Utc::now()),
        Verification::Valid(_)
    ));
}

#[tokio::test]
async fn seed_yaml_with_unusual_values_survives_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let seed = "# the seed's file\nkeys:\n  'sk: with colon':\n    role: user\n    name: \"yes\"\n    expires: 2027-01-19\n  sk-2:\n    role: admin\n    note: extra fields are kept\n";
    std::fs::write(&path, seed).unwrap();
    let before: serde_json::Value = serde_yaml::from_str(seed).unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    let legacy = store.legacy_keys();
    assert_eq!(legacy.len(), 2);
    store.create(new_key("x")).await.unwrap();
    assert_eq!(yaml(&path)["keys"], before["keys"]);
    assert_eq!(FileKeyStore::open(&path).unwrap().legacy_keys(), legacy);
}

#[tokio::test]
async fn invalid_files_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let shown = path.display().to_string();
    let cases = [
        ("keys: {}\nsurprise: 1\n", "surprise"),
        ("version: 3\nkeys: {}\n", "version 3"),
        ("keys: [unclosed\n", ""),
        (
            "hashed_keys:\n  abc: {id: xyz, name: n, role: user, created_at: 2026-01-01T00:00:00Z, created_by: t, secret_hash: h}\n",
            "xyz",
        ),
        (
            "hashed_keys:\n  abc: {id: abc, name: n, role: wizard, created_at: 2026-01-01T00:00:00Z, created_by: t, secret_hash: h}\n",
            "",
        ),
    ];
    for (text, mentions) in cases {
        std::fs::write(&path, text).unwrap();
        let err = FileKeyStore::open(&path).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::Parse { .. }),
            "{text:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&shown), "{text:?}: {msg}");
        assert!(msg.contains(mentions), "{text:?}: {msg}");
    }
    // A bad legacy entry is refused too, without echoing the key.
    std::fs::write(
        &path,
        "keys:\n  sk-secret-value-123:\n    name: n\n    role: wizard\n",
    )
    .unwrap();
    let msg = FileKeyStore::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("wizard") && !msg.contains("sk-secret-value-123"),
        "{msg}"
    );
    // Unreadable (a directory) is an I/O error naming the path.
    let err = FileKeyStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, KeyStoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[tokio::test]
async fn a_corrupt_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let store = FileKeyStore::open(&path).unwrap();
    store.create(new_key("k")).await.unwrap();
    std::fs::write(&path, "keys: [unclosed\n").unwrap();
    let err = store.create(new_key("k2")).await.unwrap_err();
    assert!(matches!(err, KeyStoreError::Parse { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keys: [unclosed\n");
    assert_eq!(
        file_names(dir.path()),
        ["keys.yaml", "keys.yaml.lock"],
        "no temporary file left behind"
    );
}

// -------------------------------------------------------------------------------------------
// Concurrent writers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let a = Arc::new(FileKeyStore::open(&path).unwrap());
    let b = Arc::new(FileKeyStore::open(&path).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        for (store, who) in [(a.clone(), "a"), (b.clone(), "b")] {
            let key = new_key(&format!("{who}-{i}"));
            ids.push(key.record.id.clone());
            tasks.spawn(async move { store.create(key).await });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let fresh = FileKeyStore::open(&path).unwrap();
    for id in &ids {
        assert!(fresh.get(id).await.unwrap().is_some(), "lost {id}");
    }
    let q = infergate_keystore::ListQuery {
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(fresh.list(&q).await.unwrap().total, 100);
    // Each instance's snapshot is at least as new as its own last write; a reload catches up.
    a.reload_if_changed().unwrap();
    b.reload_if_changed().unwrap();
    assert_eq!(a.list(&q).await.unwrap().total, 100);
    assert_eq!(b.list(&q).await.unwrap().total, 100);
    assert_eq!(
        file_names(dir.path()),
        ["keys.yaml", "keys.yaml.lock"],
        "no temporary file left behind"
    );
}

/// The child half of `two_processes_never_lose_an_update`: does nothing unless started by it.
#[test]
#[ignore = "run by two_processes_never_lose_an_update in child processes"]
fn child_writer() {
    let Ok(path) = std::env::var("INFERGATE_KEYSTORE_CHILD_PATH") else {
        return;
    };
    let who = std::env::var("INFERGATE_KEYSTORE_CHILD_NAME").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(FileKeyStore::open(&path).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..25 {
            let store = store.clone();
            let key = new_key(&format!("{who}-{i}"));
            tasks.spawn(async move { store.create(key).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        // Audit appends from two processes interleave without tearing.
        for i in 0..10 {
            store
                .append_audit(AuditEntry {
                    id: format!("{who}-audit-{i}"),
                    at: Utc::now(),
                    actor: who.clone(),
                    action: "create".into(),
                    target: None,
                    client_ip: None,
                    outcome: "success".into(),
                    detail: serde_json::json!({"i": i}),
                })
                .await
                .unwrap();
        }
    });
}

#[tokio::test]
async fn two_processes_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|who| {
            std::process::Command::new(&exe)
                .args(["child_writer", "--exact", "--ignored", "--test-threads=1"])
                .env("INFERGATE_KEYSTORE_CHILD_PATH", &path)
                .env("INFERGATE_KEYSTORE_CHILD_NAME", who)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let store = FileKeyStore::open(&path).unwrap();
    let page = store
        .list(&infergate_keystore::ListQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 50);
    for who in ["p1", "p2"] {
        let names = page
            .items
            .iter()
            .filter(|r| r.name.starts_with(who))
            .count();
        assert_eq!(names, 25, "{who}");
        let entries = store
            .audit(&AuditQuery {
                actor: Some(who.to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(entries.len(), 10, "{who}");
    }
    assert_eq!(
        file_names(dir.path()),
        ["keys.yaml", "keys.yaml.audit.jsonl", "keys.yaml.lock"]
    );
}

// -------------------------------------------------------------------------------------------
// Watching

/// Polled every 50 ms; the deadline only bounds a failure (generous for a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_write_is_seen_by_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let key = new_key("watched");
    let id = key.record.id.to_string();
    let a = Arc::new(FileKeyStore::open(&path).unwrap());
    a.create(key).await.unwrap();
    let _guard = a.watch(Duration::from_millis(50));
    let mut rx = a.changes();

    // Another instance (as another process would) revokes the key.
    let b = FileKeyStore::open(&path).unwrap();
    b.update(
        &id,
        KeyPatch {
            revoked_at: Some(Some(Utc::now())),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    expect_change(
        &mut rx,
        &KeyChange::Key(id.clone()),
        Duration::from_secs(10),
    )
    .await;
    let seen = a.get(&id).await.unwrap().unwrap();
    assert!(seen.record.revoked_at.is_some());

    // A key created elsewhere appears, with its own change.
    let other = new_key("from b");
    let other_id = other.record.id.to_string();
    b.create(other).await.unwrap();
    expect_change(
        &mut rx,
        &KeyChange::Key(other_id.clone()),
        Duration::from_secs(1),
    )
    .await;
    assert!(a.get(&other_id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_edit_announces_all_and_a_broken_edit_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let key = new_key("kept");
    let id = key.record.id.to_string();
    let a = Arc::new(FileKeyStore::open(&path).unwrap());
    a.create(key.clone()).await.unwrap();
    let guard = a.watch(Duration::from_millis(20));
    assert!(guard.is_running());
    let mut rx = a.changes();

    // An operator adds a legacy key by hand (same store file, hashed keys untouched).
    let mut doc: serde_json::Value = yaml(&path);
    doc["keys"] = serde_json::json!({"sk-hand-added-0001": {"name": "hand", "role": "user"}});
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    expect_change(&mut rx, &KeyChange::All, Duration::from_secs(1)).await;
    assert_eq!(a.legacy_keys().len(), 1);
    assert_eq!(a.legacy_keys()[0].name, "hand");

    // Then breaks it: the store keeps serving the last good version and says why.
    std::fs::write(&path, "keys: [oops\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.last_error().is_none() {
        assert!(std::time::Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = a.last_error().unwrap();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains("sk-hand-added"), "{err}");
    assert_eq!(a.get(&id).await.unwrap(), Some(key.clone()));
    assert_eq!(a.legacy_keys().len(), 1);

    // Fixing the file clears the error.
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.last_error().is_some() {
        assert!(std::time::Instant::now() < deadline, "error not cleared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.get(&id).await.unwrap(), Some(key));
}

#[test]
fn the_watcher_stops_with_its_guard_or_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileKeyStore::open(keys_path(&dir)).unwrap());
    let guard = store.watch(Duration::from_secs(3600));
    assert!(guard.is_running());
    let started = std::time::Instant::now();
    drop(guard);
    assert!(
        // The poll interval is an hour.
        started.elapsed() < Duration::from_secs(30),
        "drop waited for the poll interval"
    );

    // The thread holds only a Weak: the store can go away first, and the thread then ends.
    let guard = store.watch(Duration::from_millis(5));
    let weak = Arc::downgrade(&store);
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while guard.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher outlived its store"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(weak.upgrade().is_none());
}

// -------------------------------------------------------------------------------------------
// Audit log

#[tokio::test]
async fn the_audit_log_is_json_lines_and_survives_a_torn_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let store = FileKeyStore::open(&path).unwrap();
    let entry = |n: u32| AuditEntry {
        id: format!("e{n}"),
        at: Utc::now(),
        actor: "cli".into(),
        action: "create".into(),
        target: Some(format!("t{n}")),
        client_ip: None,
        outcome: "success".into(),
        detail: serde_json::json!({"n": n}),
    };
    store.append_audit(entry(1)).await.unwrap();
    // A crash mid-append leaves half a line.
    let audit_path = store.audit_path().to_path_buf();
    let mut text = std::fs::read_to_string(&audit_path).unwrap();
    text.push_str("{\"id\":\"torn");
    std::fs::write(&audit_path, &text).unwrap();
    store.append_audit(entry(2)).await.unwrap();

    let all = store.audit(&AuditQuery::default()).await.unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"]);
    let lines: Vec<_> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(serde_json::from_str::<AuditEntry>(&lines[2]).is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
}

#[tokio::test]
async fn nothing_secret_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_path(&dir);
    let store = FileKeyStore::open(&path).unwrap();
    let minted = format::generate(DEFAULT_PREFIX).unwrap();
    let mut record = KeyRecord::new(minted.id.clone(), "minted", Role::User, "cli");
    record.prefix = DEFAULT_PREFIX.to_string();
    let key = StoredKey {
        record,
        secret_hash: hash::hash_secret(minted.secret(), HashParams::default()).unwrap(),
    };
    store.create(key).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(minted.secret()));
    assert!(!text.contains(minted.expose()));
    let stored = store.get(&minted.id).await.unwrap().unwrap();
    assert!(hash::verify_secret(minted.secret(), &stored.secret_hash));
    assert!(!format!("{store:?}").contains(minted.secret()));
}
