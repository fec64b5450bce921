//! The list checks: they compare whole listings, so they need a store nobody else writes to
//! (see the suite's module doc).

use super::*;

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
            ..ListQuery::default()
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
