//! The change-feed checks.

use super::*;

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
