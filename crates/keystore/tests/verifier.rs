//! The hot-path verifier over a real store.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use infergate_keystore::memory::MemoryKeyStore;
use infergate_keystore::{
    HashParams, KeyChange, KeyPatch, KeyRecord, KeyStore, KeyVerifier, StaticKeyStore, StoredKey,
    Verification, VerifierConfig, format, hash, parse_api_keys,
};
use infergate_policy::Role;
use infergate_types::ManualClock;

async fn setup(cfg: VerifierConfig) -> (Arc<dyn KeyStore>, KeyVerifier, String, String) {
    setup_with_clock(cfg, ManualClock::new(1_000_000)).await
}

async fn setup_with_clock(
    cfg: VerifierConfig,
    clock: ManualClock,
) -> (Arc<dyn KeyStore>, KeyVerifier, String, String) {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let key = format::generate("igk").unwrap();
    let secret_hash = hash::hash_secret(key.secret(), HashParams::default()).unwrap();
    let record = KeyRecord::new(key.id.clone(), "t", Role::User, "test");
    store
        .create(StoredKey {
            record,
            secret_hash,
        })
        .await
        .unwrap();
    let legacy =
        StaticKeyStore::new(parse_api_keys("legacy-key-0123456789:admin", "API_KEYS").unwrap())
            .unwrap();
    let v = KeyVerifier::new(Some(store.clone()), legacy, cfg)
        .unwrap()
        .with_clock(Arc::new(clock));
    (store, v, key.expose().to_string(), key.id.clone())
}

#[tokio::test]
async fn a_stale_entry_is_refreshed_without_argon2_while_the_hash_is_unchanged() {
    let cfg = VerifierConfig {
        cache_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let clock = ManualClock::new(1_000_000);
    let (_store, v, key, _) = setup_with_clock(cfg, clock.clone()).await;
    assert!(matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    clock.advance(Duration::from_millis(59_999));
    assert!(v.verify_cached(&key, Utc::now()).is_some(), "still fresh");
    clock.advance(Duration::from_millis(1));
    assert!(
        v.verify_cached(&key, Utc::now()).is_none(),
        "the entry went stale"
    );
    assert!(matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    assert_eq!(v.stats.argon2_verifications.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn changes_invalidate_and_unknown_ids_cost_no_hashing() {
    let (store, v, key, id) = setup(VerifierConfig::default()).await;
    let _feed = Arc::new(v);
    let v = _feed.clone();
    v.spawn_invalidator();
    assert!(matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    store
        .update(
            &id,
            KeyPatch {
                revoked_at: Some(Some(Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Revoked(_)
    ) {
        assert!(std::time::Instant::now() < deadline, "revocation not seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A well-formed key with an id the store does not have: refused without argon2.
    let before = v.stats.argon2_verifications.load(Ordering::Relaxed);
    let stranger = format::generate("igk").unwrap();
    assert_eq!(
        v.verify(stranger.expose(), Utc::now()).await.unwrap(),
        Verification::Unknown
    );
    assert_eq!(v.stats.argon2_verifications.load(Ordering::Relaxed), before);
    // Legacy plaintext keys work beside hashed ones, and KeyChange::All drops the cache.
    assert!(matches!(
        v.verify("legacy-key-0123456789", Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    v.invalidate(&KeyChange::All);
    assert!(
        v.verify_cached("legacy-key-0123456789", Utc::now())
            .is_none()
    );
}

#[tokio::test]
async fn the_argon2_queue_is_bounded() {
    let cfg = VerifierConfig {
        max_concurrent: 1,
        max_waiting: 2,
        ..Default::default()
    };
    let (_store, v, key, id) = setup(cfg).await;
    let v = Arc::new(v);
    let parts: Vec<&str> = key.split('_').collect();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let v = v.clone();
            let other = format::generate("igk").unwrap();
            let wrong = format::with_checksum(&format!("{}_{}_{}", parts[0], id, other.secret()));
            tokio::spawn(async move { v.verify(&wrong, Utc::now()).await })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Verification::Unknown) => {}
            Err(_) => busy += 1,
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!(
        busy > 0,
        "some verifications must be refused rather than queued without bound"
    );
    assert_eq!(v.stats.rejected_busy.load(Ordering::Relaxed), busy);
}

#[tokio::test]
async fn failures_are_remembered_for_the_negative_ttl_only() {
    let cfg = VerifierConfig {
        negative_ttl: Duration::from_secs(5),
        ..Default::default()
    };
    let clock = ManualClock::new(1_000_000);
    let (_store, v, _, _) = setup_with_clock(cfg, clock.clone()).await;
    let stranger = format::generate("igk").unwrap();
    assert_eq!(
        v.verify(stranger.expose(), Utc::now()).await.unwrap(),
        Verification::Unknown
    );
    assert_eq!(
        v.verify_cached(stranger.expose(), Utc::now()),
        Some(Verification::Unknown)
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(v.verify_cached(stranger.expose(), Utc::now()), None);
}

#[tokio::test]
async fn a_clock_that_goes_backwards_makes_entries_stale_not_immortal() {
    let clock = ManualClock::new(1_000_000);
    let (_store, v, key, _) = setup_with_clock(VerifierConfig::default(), clock.clone()).await;
    assert!(matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    clock.set(999_999);
    assert!(v.verify_cached(&key, Utc::now()).is_none());
}

/// Each worker thread answers hits from its own copies (src/verifier.rs); a change must still
/// reach every one of them, not only the shared cache.
#[tokio::test]
async fn a_change_reaches_every_threads_own_copies() {
    let (_store, v, key, id) = setup(VerifierConfig::default()).await;
    assert!(matches!(
        v.verify(&key, Utc::now()).await.unwrap(),
        Verification::Valid(_)
    ));
    let v = Arc::new(v);
    let copied = Arc::new(std::sync::Barrier::new(5));
    let changed = Arc::new(std::sync::Barrier::new(5));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (v, key) = (v.clone(), key.clone());
            let (copied, changed) = (copied.clone(), changed.clone());
            std::thread::spawn(move || {
                // The first lookup copies the shared entry here, the second answers from the copy.
                let before = v.verify_cached(&key, Utc::now()).is_some()
                    && v.verify_cached(&key, Utc::now()).is_some();
                copied.wait();
                changed.wait();
                (before, v.verify_cached(&key, Utc::now()).is_none())
            })
        })
        .collect();
    copied.wait();
    v.invalidate(&KeyChange::Key(id));
    changed.wait();
    for w in workers {
        let (before, after) = w.join().unwrap();
        assert!(before, "a worker thread missed the cached key");
        assert!(after, "a worker thread kept its copy of a changed key");
    }
}
