//! Everything built once at startup and shared by every worker: settings, the key store and its
//! verifier, the token issuer, precomputed header values, metrics — and the audit helper every
//! admin action goes through.

use infergate_service::ApiError as _;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{HttpMessage, HttpRequest};
use chrono::Utc;
use infergate_config::{AdminConfig, ConfigError, JwtSettings};
use infergate_headers::SecurityHeaders;
use infergate_keystore::{
    AuditEntry, HashParams, KeyChange, KeyStore, KeyVerifier, StaticKey, StaticKeyStore,
    VerifierConfig, format,
};
use infergate_policy::HostMatcher;
use infergate_policy::Role;
use infergate_tokens::TokenIssuer;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::auth::Caller;
use crate::error::AdminError;
use crate::metrics::Metrics;
use crate::middleware::RequestCtx;

/// Where a legacy (plaintext) `ADMIN_API_KEY` comes from; also the actor id of its requests.
pub const LEGACY_ADMIN_ORIGIN: &str = "ADMIN_API_KEY";
pub const LEGACY_ADMIN_ACTOR: &str = "bootstrap-admin";

pub struct AppState {
    pub cfg: AdminConfig,
    pub store: Arc<dyn KeyStore>,
    pub verifier: Arc<KeyVerifier>,
    pub hosts: HostMatcher,
    pub security_headers: Option<SecurityHeaders>,
    pub metrics: Metrics,
    /// `None` when JWTs are disabled or no issuer could be built (`POST /v1/tokens` → 404).
    pub issuer: Option<TokenIssuer>,
    pub hash_params: HashParams,
    /// argon2 hashing of newly minted keys runs on the blocking pool, this many at a time.
    pub hash_slots: Semaphore,
    /// Whether a plaintext `ADMIN_API_KEY` is accepted.
    pub legacy_admin: bool,
    pub started: Instant,
    /// Set once shutdown starts; readiness answers 503 from then on.
    pub drain: infergate_service::run::Drain,
    /// Why the last audit append failed, until one succeeds (readiness fails meanwhile).
    audit_failure: std::sync::Mutex<Option<String>>,
    /// The operator console's sign-in sessions ([`crate::console`]).
    pub sessions: crate::console::Sessions,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.cfg.listen)
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// The issuer for `jwt`, or `None` (with the reason logged) when tokens cannot be issued.
fn issuer(jwt: &JwtSettings) -> Option<TokenIssuer> {
    if !jwt.enabled {
        return None;
    }
    match TokenIssuer::from_settings(jwt) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(error = %e, "jwt.enabled is set but no token issuer can be built; POST /v1/tokens answers jwt_disabled");
            None
        }
    }
}

impl AppState {
    pub fn build(cfg: AdminConfig, store: Arc<dyn KeyStore>) -> Result<Self, ConfigError> {
        let hosts = cfg.trusted_hosts.clone();
        let mut legacy = Vec::new();
        if let Some(k) = &cfg.admin_api_key
            && !format::looks_like_key(k.expose())
        {
            legacy.push(StaticKey {
                secret: k.expose().to_string(),
                name: LEGACY_ADMIN_ACTOR.into(),
                role: Role::Admin,
                expires_at: None,
                rate_limit: None,
                origin: LEGACY_ADMIN_ORIGIN,
            });
        }
        let legacy_admin = !legacy.is_empty();
        let legacy = StaticKeyStore::new(legacy)
            .map_err(|e| ConfigError::invalid("ADMIN_API_KEY", "(masked)", e.to_string()))?;
        let ks = &cfg.key_store;
        let verifier = KeyVerifier::new(
            Some(store.clone()),
            legacy,
            VerifierConfig {
                cache_size: ks.cache_size,
                cache_ttl: cfg.auth_cache_ttl,
                negative_ttl: ks.negative_cache_ttl,
                max_concurrent: ks.max_concurrent_verifications,
                max_waiting: 256,
            },
        )
        .map_err(|e| {
            ConfigError::invalid(
                "key_store",
                cfg.key_store.file.display().to_string(),
                e.to_string(),
            )
        })?;
        // Checked against the argon2id floor by configuration already.
        let hash_params = cfg.hashing;
        Ok(Self {
            security_headers: cfg.security_headers.then(SecurityHeaders::new),
            issuer: issuer(&cfg.jwt),
            hash_slots: Semaphore::new(ks.max_concurrent_verifications.max(1)),
            verifier: Arc::new(verifier),
            hosts,
            store,
            metrics: Metrics::new(),
            hash_params,
            legacy_admin,
            started: Instant::now(),
            drain: Default::default(),
            audit_failure: std::sync::Mutex::new(None),
            sessions: crate::console::Sessions::new(
                cfg.console.session_ttl,
                cfg.console.failed_sign_ins_per_minute,
                Arc::new(infergate_ratelimit::SystemClock),
            ),
            cfg,
        })
    }

    /// Appends an audit entry and counts it. A failed append is returned (the request that caused
    /// it fails: an action must never go unrecorded silently) and fails readiness until an append
    /// succeeds again.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<String>,
        client_ip: Option<String>,
        success: bool,
        detail: Value,
    ) -> Result<(), AdminError> {
        let outcome = if success { "success" } else { "failure" };
        self.metrics
            .actions
            .with_label_values(&[action, outcome])
            .inc();
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: Utc::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            target,
            client_ip,
            outcome: outcome.to_string(),
            detail,
        };
        match self.store.append_audit(entry).await {
            Ok(()) => {
                self.audit_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, actor, action, "cannot append to the audit log");
                *self.audit_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(AdminError::AuditUnavailable(e.to_string()))
            }
        }
    }

    /// Why the last audit append failed, while no later one has succeeded.
    pub fn audit_failure(&self) -> Option<String> {
        self.audit_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops cached verifications of a key this process just changed (the change feed does too;
    /// this makes the change visible to the next request without waiting for the feed).
    pub fn forget(&self, id: &str) {
        self.verifier.invalidate(&KeyChange::Key(id.to_string()));
    }
}

/// The peer address of a request, as audit entries record it.
pub fn peer_ip(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_canonical().to_string())
}

/// What a successful admin action reports to the audit log.
pub struct Done<T> {
    pub value: T,
    pub target: Option<String>,
    pub detail: Value,
}

/// One audited action in progress: who, what, on which key, from where.
pub struct Action<'a> {
    state: &'a AppState,
    actor: String,
    action: &'static str,
    target: Option<String>,
    client_ip: Option<String>,
    request_id: Option<Arc<str>>,
}

impl<'a> Action<'a> {
    pub fn new(
        state: &'a AppState,
        req: &HttpRequest,
        caller: &Caller,
        action: &'static str,
    ) -> Self {
        Self {
            state,
            actor: caller.actor().to_string(),
            action,
            target: req.match_info().get("id").map(str::to_string),
            client_ip: peer_ip(req),
            request_id: req
                .extensions()
                .get::<RequestCtx>()
                .map(|c| c.request_id.clone()),
        }
    }

    /// Audits the outcome of `result` (success with its detail, or failure with the error's code
    /// and field) and passes the value or error through.
    pub async fn finish<T>(self, result: Result<Done<T>, AdminError>) -> Result<T, AdminError> {
        match result {
            Ok(done) => {
                let target = done.target.or(self.target);
                // Security events are WARN, so they survive LOG_LEVEL=warn.
                tracing::warn!(
                    request_id = self.request_id.as_deref().unwrap_or("-"),
                    actor = %self.actor,
                    action = self.action,
                    key_id = target.as_deref().unwrap_or("-"),
                    "admin action"
                );
                self.state
                    .audit(
                        &self.actor,
                        self.action,
                        target,
                        self.client_ip,
                        true,
                        done.detail,
                    )
                    .await?;
                Ok(done.value)
            }
            Err(e) => {
                let mut detail = json!({"error": e.code().name()});
                if let Some(f) = e.field() {
                    detail["field"] = json!(f);
                }
                tracing::warn!(
                    request_id = self.request_id.as_deref().unwrap_or("-"),
                    actor = %self.actor,
                    action = self.action,
                    key_id = self.target.as_deref().unwrap_or("-"),
                    error = e.code().name(),
                    "admin action failed"
                );
                self.state
                    .audit(
                        &self.actor,
                        self.action,
                        self.target,
                        self.client_ip,
                        false,
                        detail,
                    )
                    .await?;
                Err(e)
            }
        }
    }
}
