//! Prometheus metrics: the shared HTTP metrics ([`HttpMetrics`], under `infergate_admin_`) and
//! key-admin's own — audited actions and refused credentials. Labels are bounded: action names,
//! outcomes and reasons — never a key, a key id or an address.
//!
//! Key counts by state are not kept here: they are read from the store at scrape time
//! ([`crate::handlers::metrics`]), so they are right even when another process changed the store.

use infergate_service::metrics::{HttpMetrics, must, register};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    pub actions: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub keys: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let http = HttpMetrics::new("infergate_admin", env!("CARGO_PKG_VERSION"));
        let actions = must(IntCounterVec::new(
            Opts::new(
                "actions_total",
                "Audited admin actions by action and outcome",
            ),
            &["action", "outcome"],
        ));
        let auth_failures = must(IntCounterVec::new(
            Opts::new("auth_failures_total", "Refused credentials by reason"),
            &["reason"],
        ));
        let keys = must(IntGaugeVec::new(
            Opts::new("keys", "Keys in the store by state (computed at scrape)"),
            &["state"],
        ));
        register(http.registry(), actions.clone());
        register(http.registry(), auth_failures.clone());
        register(http.registry(), keys.clone());
        Self {
            http,
            actions,
            auth_failures,
            keys,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        self.http.render()
    }
}
