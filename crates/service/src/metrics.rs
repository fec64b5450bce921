//! The HTTP metrics every service exports, in the service's own registry (one per application
//! instance, so several apps in one test process do not share counters). Labels are bounded:
//! route templates, methods from a fixed set ([`crate::method_label`]) and status codes — never a
//! path, a key or an address. A service registers its own metrics in [`HttpMetrics::registry`].

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Time until response headers: sub-millisecond local answers up to minute-long generations.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Metric definitions are constants; failing here is a programming error every test catches.
pub fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

/// Registers `c` in `registry` (a definition error is a programming error, see [`must`]).
pub fn register(registry: &Registry, c: impl prometheus::core::Collector + 'static) {
    must(registry.register(Box::new(c)));
}

#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub in_flight: IntGauge,
}

impl HttpMetrics {
    /// The registry with every name under `namespace` (`infergate`, `infergate_admin`), and
    /// `build_info` for `version`.
    pub fn new(namespace: &str, version: &str) -> Self {
        let registry = must(Registry::new_custom(Some(namespace.into()), None));
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
        let in_flight = must(IntGauge::new(
            "http_requests_in_flight",
            "Requests being served",
        ));
        let build_info = must(IntGaugeVec::new(
            Opts::new("build_info", "Build information"),
            &["version"],
        ));
        build_info.with_label_values(&[version]).set(1);
        register(&registry, requests.clone());
        register(&registry, latency.clone());
        register(&registry, in_flight.clone());
        register(&registry, build_info);
        Self {
            registry,
            requests,
            latency,
            in_flight,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request.
    pub fn observe(&self, template: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[template, crate::method_label(method), status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[template])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of everything in the registry.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        buf
    }
}

/// The content type of [`HttpMetrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
