//! The operator console: a page key-admin serves itself (`/console`, every asset compiled in),
//! and the sessions it signs in with.
//!
//! # Sessions
//!
//! The page sends an admin key once, to `POST /console/session`, and forgets it; the key never
//! reaches browser storage or a URL. The answer sets a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Secure` with `console.secure_cookie`) and returns a CSRF token,
//! which the page keeps in memory and sends as `X-CSRF-Token` on every state-changing call.
//! The session then authenticates the same admin API curl and the CLI use
//! ([`crate::auth`]): the console can do nothing the API refuses.
//!
//! A session ends at `console.session_ttl_seconds` after sign-in, at sign-out
//! (`DELETE /console/session`, which forgets it on the server), and as soon as the key that
//! opened it is no longer an active admin key (checked on every call). Sessions live in this
//! process: a restart signs everyone out. Failed sign-ins are limited per client address
//! (`console.failed_sign_ins_per_minute`) and audited like any refused credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use infergate_keystore::{KeyRecord, KeyState};
use infergate_policy::Role;
use infergate_ratelimit::{BucketKey, Clock, LimitCheck, MemoryLimiter, RateSpec};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::AdminError;
use crate::state::{AppState, peer_ip};

pub const COOKIE: &str = "ig_console";
pub const CSRF_HEADER: &str = "x-csrf-token";

const PAGE: &str = include_str!("../static/console.html");
const SCRIPT: &str = include_str!("../static/console.js");
const STYLE: &str = include_str!("../static/console.css");

#[derive(Clone)]
struct Session {
    record: Arc<KeyRecord>,
    legacy: bool,
    csrf: String,
    /// Unix milliseconds, on [`Sessions::clock`].
    ends_ms: u64,
}

impl Session {
    fn ends_at(&self) -> chrono::DateTime<Utc> {
        i64::try_from(self.ends_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now)
    }
}

/// The live sessions, and the failed sign-ins per address.
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    failures: MemoryLimiter,
    failure_spec: RateSpec,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<HashMap<String, Session>>) -> MutexGuard<'_, HashMap<String, Session>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 256 random bits, hex.
fn token() -> String {
    (0..4)
        .map(|_| format!("{:016x}", infergate_telemetry::ids::random_u64()))
        .collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(ttl: Duration, failed_per_minute: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            ttl,
            failures: MemoryLimiter::new(clock.clone()),
            clock,
            failure_spec: RateSpec {
                limit: failed_per_minute.max(1),
                period: Duration::from_secs(60),
            },
        }
    }

    fn open(&self, caller: &Caller) -> (String, Session) {
        let now = self.clock.now_millis();
        let mut live = lock(&self.live);
        live.retain(|_, s| s.ends_ms > now);
        let id = token();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let session = Session {
            record: caller.record.clone(),
            legacy: caller.legacy,
            csrf: token(),
            ends_ms: now.saturating_add(ttl_ms),
        };
        live.insert(id.clone(), session.clone());
        (id, session)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut live = lock(&self.live);
        match live.get(id) {
            Some(s) if s.ends_ms > self.clock.now_millis() => Some(s.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        lock(&self.live).remove(id);
    }

    /// Ends every session a key opened (its revocation, seen by this process).
    pub fn close_for(&self, key_id: &str) {
        lock(&self.live).retain(|_, s| &*s.record.id != key_id);
    }

    fn failure_check(&self, ip: Option<std::net::IpAddr>) -> Option<LimitCheck> {
        ip.map(|ip| LimitCheck::new(BucketKey::ip(ip), self.failure_spec))
    }
}

/// The caller a session cookie stands for, when the request carries one and no key: `None`
/// without a cookie (the caller then needs a key), an error for a dead session or, on a
/// state-changing call, a missing or wrong CSRF token.
pub async fn session_caller(
    state: &AppState,
    req: &HttpRequest,
) -> Option<Result<Caller, AdminError>> {
    let cookie = req.cookie(COOKIE)?;
    let id = cookie.value().to_string();
    let Some(session) = state.sessions.get(&id) else {
        return Some(Err(AdminError::SessionExpired));
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(sent, session.csrf.as_bytes()) {
            return Some(Err(AdminError::CsrfInvalid));
        }
    }
    if session.legacy {
        return Some(Ok(Caller {
            record: session.record,
            legacy: true,
        }));
    }
    // The key that opened the session must still be an active admin key.
    let current = match state.store.get(&session.record.id).await {
        Ok(k) => k.map(|k| k.record),
        Err(e) => return Some(Err(e.into())),
    };
    match current {
        Some(r)
            if r.state(Utc::now()) == KeyState::Active
                && r.role == Role::Admin
                && r.deleted_at.is_none() =>
        {
            Some(Ok(Caller {
                record: Arc::new(r),
                legacy: false,
            }))
        }
        _ => {
            state.sessions.close(&id);
            Some(Err(AdminError::SessionExpired))
        }
    }
}

/// Nothing the console serves is cached (the edge adds the security headers and, for
/// `/console*`, the CSP that allows only its own script and stylesheet).
fn with_console_headers(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

/// `GET /console`: the page.
pub async fn page() -> HttpResponse {
    with_console_headers(
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(PAGE),
    )
}

/// `GET /console/{asset}`: its script and stylesheet.
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let (body, ty) = match name.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(AdminError::NotFound),
    };
    Ok(with_console_headers(
        HttpResponse::Ok().content_type(ty).body(body),
    ))
}

fn cookie(state: &AppState, value: String, max_age: Duration) -> Cookie<'static> {
    let mut c = Cookie::build(COOKIE, value)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(900),
        ))
        .finish();
    c.set_secure(state.cfg.console.secure_cookie);
    c
}

fn session_json(session: &Session) -> Value {
    json!({
        "actor": if session.legacy { crate::state::LEGACY_ADMIN_ACTOR } else { &*session.record.id },
        "name": session.record.name,
        "csrf_token": session.csrf,
        "expires_at": session.ends_at(),
    })
}

/// `POST /console/session` `{"key": "igk_…"}`: signs in with an admin key.
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let ip = req.peer_addr().map(|a| a.ip().to_canonical());
    let check = state.sessions.failure_check(ip);
    if let Some(c) = &check {
        let status = state.sessions.failures.peek_now(c);
        if status.is_exceeded() {
            return Err(AdminError::SignInsLimited {
                retry_after_secs: status.retry_after.as_secs().max(1),
            });
        }
    }
    let body = crate::validate::object(&body, false)?;
    crate::validate::only(&body, &["key"])?;
    let key = match body.get("key") {
        Some(Value::String(k)) if !k.trim().is_empty() => k.trim().to_string(),
        _ => return Err(AdminError::validation("key", "required (an admin API key)")),
    };
    let verified = crate::auth::verify_key(&state, &key).await;
    let caller = match verified {
        Ok(c) if c.record.role == Role::Admin => c,
        other => {
            if let Some(c) = &check {
                state.sessions.failures.check_now(std::slice::from_ref(c));
            }
            let (err, actor) = match other {
                Ok(c) => (
                    AdminError::Forbidden(
                        "The console needs an admin key; this key's role may not sign in".into(),
                    ),
                    c.actor().to_string(),
                ),
                Err(e) => (e, "anonymous".to_string()),
            };
            state
                .audit(
                    &actor,
                    "console_sign_in",
                    None,
                    peer_ip(&req),
                    false,
                    json!({"error": infergate_service::ApiError::code(&err).name()}),
                )
                .await
                .ok();
            return Err(err);
        }
    };
    let (id, session) = state.sessions.open(&caller);
    state
        .audit(
            caller.actor(),
            "console_sign_in",
            None,
            peer_ip(&req),
            true,
            json!({}),
        )
        .await?;
    let mut res = HttpResponse::Ok().json(session_json(&session));
    res.add_cookie(&cookie(&state, id, state.sessions.ttl))
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(with_console_headers(res))
}

/// `GET /console/session`: the signed-in operator and the CSRF token, for a reloaded page.
pub async fn current(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = req
        .cookie(COOKIE)
        .map(|c| c.value().to_string())
        .ok_or(AdminError::SessionExpired)?;
    match session_caller(&state, &req).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(e),
        None => return Err(AdminError::SessionExpired),
    }
    let session = state.sessions.get(&id).ok_or(AdminError::SessionExpired)?;
    Ok(with_console_headers(
        HttpResponse::Ok().json(session_json(&session)),
    ))
}

/// `DELETE /console/session`: signs out (the session is forgotten on the server).
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let caller = match session_caller(&state, &req).await {
        Some(r) => r?,
        None => return Err(AdminError::SessionExpired),
    };
    if let Some(c) = req.cookie(COOKIE) {
        state.sessions.close(c.value());
    }
    state
        .audit(
            caller.actor(),
            "console_sign_out",
            None,
            peer_ip(&req),
            true,
            json!({}),
        )
        .await
        .ok();
    let mut res = HttpResponse::Ok().json(json!({"signed_out": true}));
    res.add_removal_cookie(&cookie(&state, String::new(), Duration::ZERO))
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(with_console_headers(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_ttl_and_at_sign_out() {
        let clock = infergate_ratelimit::ManualClock::new(1_000_000);
        let sessions = Sessions::new(Duration::from_secs(60), 5, Arc::new(clock.clone()));
        let caller = Caller {
            record: Arc::new(KeyRecord::new("k1", "ops", Role::Admin, "test")),
            legacy: false,
        };
        let (id, _) = sessions.open(&caller);
        clock.advance(Duration::from_secs(59));
        assert!(sessions.get(&id).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(sessions.get(&id).is_none(), "ended at its TTL");
        let (id, _) = sessions.open(&caller);
        sessions.close(&id);
        assert!(sessions.get(&id).is_none(), "ended at sign-out");
        let (id, _) = sessions.open(&caller);
        sessions.close_for("k1");
        assert!(sessions.get(&id).is_none(), "ended with its key");
    }

    #[test]
    fn tokens_are_long_random_and_compared_in_full() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[..63]));
    }
}
