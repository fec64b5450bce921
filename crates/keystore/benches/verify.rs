//! The cost of verifying a key the gateway has already verified once (the hot path: every
//! authenticated request). Target: well under 5 µs.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use infergate_keystore::memory::MemoryKeyStore;
use infergate_keystore::{
    HashParams, KeyRecord, KeyStore, KeyVerifier, StaticKeyStore, StoredKey, VerifierConfig,
    format, hash,
};
use infergate_policy::Role;

fn cached_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let key = format::generate("igk").expect("key");
    let secret_hash = hash::hash_secret(key.secret(), HashParams::default()).expect("hash");
    let record = KeyRecord::new(key.id.clone(), "bench", Role::User, "bench");
    rt.block_on(store.create(StoredKey {
        record,
        secret_hash,
    }))
    .expect("create");
    let verifier = KeyVerifier::new(
        Some(store),
        StaticKeyStore::default(),
        VerifierConfig::default(),
    )
    .expect("verifier");
    let now = chrono::Utc::now();
    // First verification runs argon2 and fills the cache.
    rt.block_on(verifier.verify(key.expose(), now))
        .expect("verify");

    c.bench_function("verify_cached_hit", |b| {
        b.iter(|| black_box(verifier.verify_cached(black_box(key.expose()), now)))
    });
    c.bench_function("verify_async_cached_hit", |b| {
        b.iter(|| rt.block_on(verifier.verify(black_box(key.expose()), now)))
    });
}

criterion_group!(benches, cached_path);
criterion_main!(benches);
