// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
use chrono::{Duration, Utc};
use infergate_keystore::{StaticKey, StaticKeyStore, Verification, parse_api_keys};
use infergate_policy::Role;

fn key(secret: &str, role: Role, expires_in: Option<Duration>) -> StaticKey {
    StaticKey {
        secret: secret.to_string(),
        name: format!("name-{role}"),
        role,
        expires_at: expires_in.map(|d| Utc::now() + d),
        rate_limit: None,
        origin: "test",
    }
}

#[test]
fn valid_unknown_and_expired() {
    let store = StaticKeyStore::new(vec![
        key("good-key-123456", Role::User, Some(Duration::days(1))),
        key("old-key-1234567", Role::Admin, Some(Duration::days(-1))),
    ])
    .unwrap();
    let now = Utc::now();
    match store.verify_now("good-key-123456", now) {
        Verification::Valid(r) => {
            assert_eq!(r.role, Role::User);
            assert!(r.id.starts_with("static-"));
            assert!(!r.id.contains("good"));
        }
        other => panic!("expected valid, got {other:?}"),
    }
    assert!(matches!(
        store.verify_now("old-key-1234567", now),
        Verification::Expired(_)
    ));
    assert_eq!(
        store.verify_now("good-key-12345", now),
        Verification::Unknown
    );
    assert_eq!(store.verify_now("", now), Verification::Unknown);
}

#[test]
fn duplicates_are_rejected_and_listing_has_no_secrets() {
    let dup = StaticKeyStore::new(vec![
        key("same", Role::User, None),
        key("same", Role::Admin, None),
    ]);
    assert!(dup.is_err());
    let store = StaticKeyStore::new(
        parse_api_keys("alpha-secret:admin,beta-secret:readonly", "API_KEYS").unwrap(),
    )
    .unwrap();
    let listed = format!("{:?}", store.records());
    assert!(
        !listed.contains("alpha-secret") && !listed.contains("beta-secret"),
        "{listed}"
    );
    assert_eq!(store.len(), 2);
}
