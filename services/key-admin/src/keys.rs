//! `/v1/keys`: create, list, read, update, revoke (soft delete) and rotate keys. Admin only.
//!
//! Every mutation goes through [`Action::finish`], which appends the audit entry (success or
//! failure). The full key appears in exactly two responses — the one that created it and the one
//! that rotated to it — and never in a log line or an audit entry.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Duration as ChronoDuration, Utc};
use infergate_keystore::{KeyPatch, KeyRecord, KeyState, ListQuery, StoredKey, format};
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::error::AdminError;
use crate::mint::{mint, record_json};
use crate::state::{Action, AppState, Done};
use crate::validate;

const CREATE_FIELDS: &[&str] = &[
    "name",
    "role",
    "expires_in_days",
    "expires_at",
    "rate_limit",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent",
    "models",
    "metadata",
    "prefix",
];
const PATCH_FIELDS: &[&str] = &[
    "name",
    "role",
    "expires_in_days",
    "expires_at",
    "rate_limit",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent",
    "models",
    "metadata",
];

/// A response that carries a full key: never cached anywhere.
fn with_key(status: actix_web::http::StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// Key ids are short `[a-z0-9]` strings; anything else cannot name a key, and is answered
/// without reaching the store.
fn check_id(id: &str) -> Result<(), AdminError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AdminError::KeyNotFound(id.chars().take(64).collect()))
    }
}

async fn fetch(state: &AppState, id: &str) -> Result<KeyRecord, AdminError> {
    check_id(id)?;
    state
        .store
        .get(id)
        .await?
        .map(|s| s.record)
        // A deleted key is gone from the API (its tombstone stays in the store).
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| AdminError::KeyNotFound(id.to_string()))
}

pub async fn create(
    admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let act = Action::new(&state, &req, &admin.0, "create");
    act.finish(do_create(&state, admin.0.actor(), &body).await)
        .await
}

async fn do_create(
    state: &AppState,
    actor: &str,
    body: &[u8],
) -> Result<Done<HttpResponse>, AdminError> {
    let now = Utc::now();
    let body = validate::object(body, false)?;
    validate::only(&body, CREATE_FIELDS)?;
    let name = validate::name(
        body.get("name")
            .ok_or_else(|| AdminError::validation("name", "required"))?,
    )?;
    let role = validate::role(
        body.get("role")
            .ok_or_else(|| AdminError::validation("role", "required"))?,
    )?;
    let expires_at = validate::expiry(&body, now, false)?.flatten();
    let rate_limit = body
        .get("rate_limit")
        .map(validate::rate_limit)
        .transpose()?
        .flatten();
    let models = body
        .get("models")
        .map(validate::models)
        .transpose()?
        .flatten();
    let [tokens_per_minute, tokens_per_day, max_concurrent] =
        ["tokens_per_minute", "tokens_per_day", "max_concurrent"].map(|field| {
            body.get(field)
                .map(|v| validate::limit(field, v))
                .transpose()
                .map(Option::flatten)
        });
    let (tokens_per_minute, tokens_per_day, max_concurrent) =
        (tokens_per_minute?, tokens_per_day?, max_concurrent?);
    let metadata = body
        .get("metadata")
        .map(validate::metadata)
        .transpose()?
        .unwrap_or_default();
    let prefix = match body.get("prefix") {
        Some(p) => validate::prefix(p)?,
        None => state.cfg.key_store.key_prefix.clone(),
    };

    let _slot = state
        .hash_slots
        .acquire()
        .await
        .map_err(|_| AdminError::Unavailable("shutting down".into()))?;
    let (key, phc) = mint(&prefix, state.hash_params).await?;
    let mut record = KeyRecord::new(key.id.as_str(), name, role, actor);
    record.prefix = prefix;
    record.created_at = now;
    record.expires_at = expires_at;
    record.rate_limit = rate_limit;
    record.tokens_per_minute = tokens_per_minute;
    record.tokens_per_day = tokens_per_day;
    record.max_concurrent = max_concurrent;
    record.models = models;
    record.metadata = metadata;
    state
        .store
        .create(StoredKey {
            record: record.clone(),
            secret_hash: phc,
        })
        .await?;
    let fields: Vec<&String> = body.keys().collect();
    Ok(Done {
        value: with_key(
            actix_web::http::StatusCode::CREATED,
            json!({"key": key.expose(), "record": record_json(&record, now)}),
        ),
        target: Some(key.id.clone()),
        detail: json!({"role": role, "fields": fields}),
    })
}

pub async fn list(
    _admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let q = validate::query(
        req.query_string(),
        &["role", "state", "q", "offset", "limit"],
    )?;
    let now = Utc::now();
    let search = q
        .get("q")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(AdminError::validation(
            "q",
            "must be at most 200 characters",
        ));
    }
    let query = ListQuery {
        role: validate::role_param(&q)?,
        state: validate::state_param(&q)?,
        search,
        offset: validate::usize_param(&q, "offset", 0, 0, usize::MAX)?,
        limit: validate::usize_param(
            &q,
            "limit",
            validate::LIST_LIMIT_DEFAULT,
            1,
            validate::LIST_LIMIT_MAX,
        )?,
        now,
        include_deleted: false,
    };
    let page = state.store.list(&query).await?;
    let items: Vec<Value> = page.items.iter().map(|r| record_json(r, now)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    })))
}

pub async fn get(
    _admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let record = fetch(&state, &id).await?;
    Ok(HttpResponse::Ok().json(record_json(&record, Utc::now())))
}

/// The `days` of a usage query: 1 to the days a store keeps, default 30.
fn usage_days(q: &std::collections::BTreeMap<String, String>) -> Result<u64, AdminError> {
    let max = infergate_keystore::usage::RETAINED_DAYS as usize;
    Ok(validate::usize_param(q, "days", 30, 1, max)? as u64)
}

/// `GET /v1/keys/{id}/usage?days=N`: requests and tokens per UTC day (the last `days`, 1-31,
/// default 30), their totals, and when the key was last used — as the gateways flushed them
/// (every few seconds; tokens for keys with a token budget).
pub async fn usage(
    _admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let q = validate::query(req.query_string(), &["days"])?;
    let days = usage_days(&q)?;
    fetch(&state, &id).await?;
    let today = Utc::now().date_naive();
    let usage = state.store.usage(&id, today, days).await?;
    let mut totals = infergate_keystore::usage::DayTotals::default();
    for d in &usage.days {
        totals.sum(&d.totals);
    }
    let today_totals = usage
        .days
        .iter()
        .find(|d| d.date == today)
        .map(|d| d.totals)
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({
        "id": &*id,
        "days_requested": days,
        "last_used_at": usage.last_used_at,
        // The windows a per-minute limit slides over, as of the gateways' last flush.
        "current_minute": usage.current_minute,
        "previous_minute": usage.previous_minute,
        "today": today_totals,
        "totals": totals,
        "days": usage.days,
    })))
}

/// `GET /v1/usage?days=N&limit=M`: the keys that made the most requests in the last `days`
/// (1-31, default 30), most first, at most `limit` (1-100, default 10), with their tokens.
pub async fn top_usage(
    _admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let q = validate::query(req.query_string(), &["days", "limit"])?;
    let days = usage_days(&q)?;
    let limit = validate::usize_param(&q, "limit", 10, 1, 100)?;
    let now = Utc::now();
    let today = now.date_naive();
    let mut rows = Vec::new();
    let mut offset = 0;
    loop {
        let page = state
            .store
            .list(&ListQuery {
                offset,
                limit: 500,
                now,
                ..ListQuery::default()
            })
            .await?;
        for r in &page.items {
            let u = state.store.usage(&r.id, today, days).await?;
            let mut t = infergate_keystore::usage::DayTotals::default();
            for d in &u.days {
                t.sum(&d.totals);
            }
            if t.requests > 0 || t.input_tokens + t.output_tokens > 0 {
                rows.push(json!({
                    "id": &*r.id,
                    "name": r.name,
                    "role": r.role,
                    "state": r.state(now).as_str(),
                    "requests": t.requests,
                    "input_tokens": t.input_tokens,
                    "output_tokens": t.output_tokens,
                    "last_used_at": u.last_used_at,
                }));
            }
        }
        offset += page.items.len();
        if page.items.is_empty() || offset >= page.total {
            break;
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r["requests"].as_u64().unwrap_or(0)));
    rows.truncate(limit);
    Ok(HttpResponse::Ok().json(json!({"days_requested": days, "keys": rows})))
}

pub async fn update(
    admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let act = Action::new(&state, &req, &admin.0, "update");
    act.finish(do_update(&state, &id, &body).await).await
}

async fn do_update(
    state: &AppState,
    id: &str,
    body: &[u8],
) -> Result<Done<HttpResponse>, AdminError> {
    check_id(id)?;
    let now = Utc::now();
    let body = validate::object(body, false)?;
    validate::only(&body, PATCH_FIELDS)?;
    if body.is_empty() {
        return Err(AdminError::validation(
            "body",
            format!(
                "name at least one field to change ({})",
                PATCH_FIELDS.join(", ")
            ),
        ));
    }
    let patch = KeyPatch {
        name: body.get("name").map(validate::name).transpose()?,
        role: body.get("role").map(validate::role).transpose()?,
        expires_at: validate::expiry(&body, now, true)?,
        rate_limit: body
            .get("rate_limit")
            .map(validate::rate_limit)
            .transpose()?,
        tokens_per_minute: body
            .get("tokens_per_minute")
            .map(|v| validate::limit("tokens_per_minute", v))
            .transpose()?,
        tokens_per_day: body
            .get("tokens_per_day")
            .map(|v| validate::limit("tokens_per_day", v))
            .transpose()?,
        max_concurrent: body
            .get("max_concurrent")
            .map(|v| validate::limit("max_concurrent", v))
            .transpose()?,
        models: body.get("models").map(validate::models).transpose()?,
        metadata: body.get("metadata").map(validate::metadata).transpose()?,
        ..KeyPatch::default()
    };
    // A deleted key cannot be changed (it is 404 everywhere in this API).
    fetch(state, id).await?;
    let record = state.store.update(id, patch).await?;
    state.forget(id);
    let fields: Vec<&String> = body.keys().collect();
    Ok(Done {
        value: HttpResponse::Ok().json(record_json(&record, now)),
        target: Some(id.to_string()),
        detail: json!({"fields": fields}),
    })
}

/// `POST /v1/keys/{id}/revoke`.
pub async fn revoke(
    admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let act = Action::new(&state, &req, &admin.0, "revoke");
    act.finish(do_revoke(&state, &id).await).await
}

/// `DELETE /v1/keys/{id}`: the same soft revocation (the record stays, for the audit trail).
pub async fn delete(
    admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let act = Action::new(&state, &req, &admin.0, "delete");
    act.finish(do_delete(&state, &id).await).await
}

/// Revokes the key and removes it from the API: later reads, updates, rotations and deletes of
/// it are `404`. The record stays in the store, marked, and the audit log keeps its history.
async fn do_delete(state: &AppState, id: &str) -> Result<Done<HttpResponse>, AdminError> {
    let was_revoked = delete_key(state, id).await?;
    Ok(Done {
        value: HttpResponse::Ok().json(json!({
            "id": id,
            "deleted": true,
            "was_revoked": was_revoked,
            "detail": "The key is deleted: refused from now on, and gone from this API (the audit log keeps its history)",
        })),
        target: Some(id.to_string()),
        detail: json!({"was_revoked": was_revoked}),
    })
}

async fn do_revoke(state: &AppState, id: &str) -> Result<Done<HttpResponse>, AdminError> {
    let (record, already) = revoke_key(state, id).await?;
    let now = Utc::now();
    let detail = match record.revoked_at {
        Some(at) if already => format!(
            "The key was already revoked at {}; nothing changed",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        _ => "The key is revoked; it is refused from now on".to_string(),
    };
    Ok(Done {
        value: HttpResponse::Ok().json(json!({
            "record": record_json(&record, now),
            "already_revoked": already,
            "detail": detail,
        })),
        target: Some(id.to_string()),
        detail: json!({"already_revoked": already}),
    })
}

/// Revokes (unless revoked already) and marks the key deleted; returns whether it was revoked
/// before. Shared with the CLI.
pub async fn delete_key(state: &AppState, id: &str) -> Result<bool, AdminError> {
    let current = fetch(state, id).await?;
    let now = Utc::now();
    let was_revoked = current.revoked_at.is_some();
    state
        .store
        .update(
            id,
            KeyPatch {
                revoked_at: (!was_revoked).then_some(Some(now)),
                deleted_at: Some(Some(now)),
                ..KeyPatch::default()
            },
        )
        .await?;
    state.forget(id);
    Ok(was_revoked)
}

/// Sets `revoked_at = now` unless the key is already revoked (then nothing changes). Returns the
/// record and whether it was already revoked. Shared with the CLI.
pub async fn revoke_key(state: &AppState, id: &str) -> Result<(KeyRecord, bool), AdminError> {
    let current = fetch(state, id).await?;
    if current.revoked_at.is_some() {
        return Ok((current, true));
    }
    let record = state
        .store
        .update(
            id,
            KeyPatch {
                revoked_at: Some(Some(Utc::now())),
                ..KeyPatch::default()
            },
        )
        .await?;
    state.forget(id);
    Ok((record, false))
}

pub async fn rotate(
    admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let act = Action::new(&state, &req, &admin.0, "rotate");
    act.finish(do_rotate(&state, admin.0.actor(), &id, &body).await)
        .await
}

async fn do_rotate(
    state: &AppState,
    actor: &str,
    id: &str,
    body: &[u8],
) -> Result<Done<HttpResponse>, AdminError> {
    let body = validate::object(body, true)?;
    validate::only(&body, &["grace_seconds"])?;
    let grace = validate::grace_seconds(body.get("grace_seconds"))?;
    let (key, record, previous) = rotate_key(state, actor, id, grace).await?;
    let now = Utc::now();
    Ok(Done {
        value: with_key(
            actix_web::http::StatusCode::CREATED,
            json!({
                "key": key.expose(),
                "record": record_json(&record, now),
                "previous": record_json(&previous, now),
            }),
        ),
        target: Some(id.to_string()),
        detail: json!({"grace_seconds": grace, "new_key_id": record.id}),
    })
}

/// Rotates key `id`: a new key with the same name, role, expiry, limits, models and metadata;
/// the old one expires after `grace` seconds (or earlier, if it already expired sooner) and points
/// at its successor. Returns the new key, its record and the old key's updated record. Shared
/// with the CLI.
pub async fn rotate_key(
    state: &AppState,
    actor: &str,
    id: &str,
    grace: i64,
) -> Result<(infergate_keystore::GeneratedKey, KeyRecord, KeyRecord), AdminError> {
    let now = Utc::now();
    let old = fetch(state, id).await?;
    match old.state(now) {
        KeyState::Active => {}
        s => {
            return Err(AdminError::Conflict(format!(
                "Key {id} is {}; only active keys can be rotated",
                s.as_str()
            )));
        }
    }
    if let Some(next) = &old.rotated_to {
        return Err(AdminError::Conflict(format!(
            "Key {id} was already rotated to {next}; rotate that key instead"
        )));
    }
    let prefix = if format::validate_prefix(&old.prefix).is_ok() {
        old.prefix.clone()
    } else {
        state.cfg.key_store.key_prefix.clone()
    };
    let _slot = state
        .hash_slots
        .acquire()
        .await
        .map_err(|_| AdminError::Unavailable("shutting down".into()))?;
    let (key, phc) = mint(&prefix, state.hash_params).await?;
    let mut record = KeyRecord::new(key.id.as_str(), old.name.clone(), old.role, actor);
    record.prefix = prefix;
    record.created_at = now;
    record.expires_at = old.expires_at;
    record.rate_limit = old.rate_limit;
    record.tokens_per_minute = old.tokens_per_minute;
    record.tokens_per_day = old.tokens_per_day;
    record.max_concurrent = old.max_concurrent;
    record.models = old.models.clone();
    record.metadata = old.metadata.clone();
    state
        .store
        .create(StoredKey {
            record: record.clone(),
            secret_hash: phc,
        })
        .await?;
    let grace_end = now + ChronoDuration::seconds(grace);
    let expires = Some(old.expires_at.map_or(grace_end, |e| e.min(grace_end)));
    let previous = state
        .store
        .update(
            id,
            KeyPatch {
                expires_at: Some(expires),
                rotated_to: Some(Some(key.id.clone())),
                ..KeyPatch::default()
            },
        )
        .await
        .inspect_err(|e| {
            tracing::error!(key_id = %id, new_key_id = %key.id, error = %e, "rotation: the new key exists but the old one could not be updated");
        })?;
    state.forget(id);
    Ok((key, record, previous))
}
