//! The HTTP metrics every service exports, in the service's own registry (one per application
//! instance, so several apps in one test process do not share counters). Labels are bounded:
//! route templates, methods from a fixed set ([`crate::method_label`]) and status codes — never a
//! path, a key or an address. A service registers its own metrics in [`HttpMetrics::registry`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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

/// One route's children of the request metrics, as one worker thread holds them.
struct RouteChildren {
    latency: Histogram,
    /// By (method label, status): a route sees a handful.
    requests: Vec<((&'static str, u16), IntCounter)>,
}

impl RouteChildren {
    fn count(
        &mut self,
        shared: &HttpMetrics,
        template: &str,
        method: &'static str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.latency.observe(elapsed.as_secs_f64());
        let key = (method, status.as_u16());
        match self.requests.iter().find(|(k, _)| *k == key) {
            Some((_, counter)) => counter.inc(),
            None => {
                let counter =
                    shared
                        .requests
                        .with_label_values(&[template, method, status.as_str()]);
                counter.inc();
                self.requests.push((key, counter));
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per worker thread, per [`HttpMetrics`] (by id), per route template: the children this
    /// thread counts into. A child is looked up in the shared vector once per thread; after that
    /// counting a request takes no lock shared with other workers (prometheus' vectors hash the
    /// label values and read-lock one map for every lookup) and no reference-count traffic.
    static CHILDREN: RefCell<HashMap<u64, HashMap<Box<str>, RouteChildren>>> =
        RefCell::new(HashMap::new());
}

#[derive(Clone)]
pub struct HttpMetrics {
    /// Tells this registry's children apart in [`CHILDREN`].
    id: u64,
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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
        let method = crate::method_label(method);
        CHILDREN.with(|children| {
            let mut children = children.borrow_mut();
            let routes = children.entry(self.id).or_default();
            // One lookup of the template once this thread has seen it (every request after the
            // first); the miss path builds the route's children and keeps them.
            if let Some(route) = routes.get_mut(template) {
                route.count(self, template, method, status, elapsed);
                return;
            }
            let mut route = RouteChildren {
                latency: self.latency.with_label_values(&[template]),
                requests: Vec::new(),
            };
            route.count(self, template, method, status, elapsed);
            routes.insert(template.into(), route);
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_worker_thread_land_in_the_shared_series() {
        let m = HttpMetrics::new("t", "0");
        let other = HttpMetrics::new("t", "0");
        let count = |m: &HttpMetrics, n: usize, status: u16| {
            for _ in 0..n {
                m.observe(
                    "/x",
                    &Method::GET,
                    StatusCode::from_u16(status).unwrap(),
                    Duration::from_millis(2),
                );
            }
        };
        count(&m, 3, 200);
        let worker = {
            let m = m.clone();
            std::thread::spawn(move || count(&m, 2, 200))
        };
        worker.join().unwrap();
        count(&m, 1, 429);
        // Another registry on the same thread keeps its own children.
        count(&other, 4, 200);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"t_http_requests_total{method="GET",route="/x",status="200"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_http_requests_total{method="GET",route="/x",status="429"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_http_request_duration_seconds_count{route="/x"} 6"#),
            "{text}"
        );
        let text = String::from_utf8(other.render()).unwrap();
        assert!(
            text.contains(r#"t_http_requests_total{method="GET",route="/x",status="200"} 4"#),
            "{text}"
        );
    }
}
