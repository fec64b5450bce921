//! The Redis key store over `rediss://`, against a real redis-server speaking TLS (testkit's
//! `TlsRedisServer`). Built with the crate's `tls` feature only (`make test` runs it). The
//! store's client (redis-rs with rustls) trusts the platform's roots, which `SSL_CERT_FILE`
//! replaces, so the connecting half runs in a child process with the variable set.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use infergate_keystore::{KeyRecord, KeyStore, RedisKeyStore, StoredKey};
use infergate_policy::Role;
use infergate_testkit::tls_redis::TlsRedisServer;

#[test]
fn the_key_store_connects_over_tls() {
    TlsRedisServer::start().run_child("child_connects");
}

/// The child half of `the_key_store_connects_over_tls`.
#[test]
#[ignore = "run by the_key_store_connects_over_tls in a child process"]
fn child_connects() {
    let Ok(url) = std::env::var("INFERGATE_TLS_REDIS_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = RedisKeyStore::connect(&url, "tls").await.unwrap();
        let mut record = KeyRecord::new("k1", "over TLS", Role::User, "test");
        record.prefix = "igk".into();
        let key = StoredKey {
            record,
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$k1".into(),
        };
        store.create(key).await.unwrap();
        let read = store.get("k1").await.unwrap().unwrap();
        assert_eq!(read.record.name, "over TLS");
        // The certificate names `localhost`, not the address.
        let by_address = url.replace("localhost", "127.0.0.1");
        assert!(RedisKeyStore::connect(&by_address, "tls").await.is_err());
    });
}
