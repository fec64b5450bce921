//! The audit-log checks: append-only, filtered, ordered and paged.

use super::*;

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
