//! Prometheus metrics, one registry per application instance (several apps in one test process
//! do not share counters). Labels are bounded: route templates, methods, status codes, action
//! names and outcomes — never a key, a key id or an address.
//!
//! Key counts by state are not kept here: they are read from the store at scrape time
//! ([`crate::handlers::metrics`]), so they are right even when another process changed the store.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub actions: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub keys: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; failing here is a programming error caught by every test.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("infergate_admin".into()), None).unwrap_or_default();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "Requests by route template, method and status",
            ),
            &["route", "method", "status"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time until response headers, by route template",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        ));
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
        let build_info = must(IntGaugeVec::new(
            Opts::new("build_info", "Build information"),
            &["version"],
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(actions.clone()),
            Box::new(auth_failures.clone()),
            Box::new(keys.clone()),
            Box::new(build_info),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            requests,
            latency,
            actions,
            auth_failures,
            keys,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        buf
    }
}
