//! The gateway's request pipeline in process, without sockets: a request goes through the edge
//! (request id, screening: trusted host, path, query and header signatures), then the one service
//! inside it: CORS, the decision (route, key authentication from the verifier's cache,
//! permission, per-key and endpoint limits), a handler that reads and validates a JSON body,
//! and the decoration on the way out (security headers, rate-limit headers, metrics, the access
//! log formatted as JSON into a sink). A regression in any stage shows here as time per request, with no load generator and
//! no noise from the network.
//!
//! `cargo bench -p infergate-gateway --bench pipeline` (or `make bench-pipeline`).
// Benchmark code: a panic is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use actix_web::test::{self, TestRequest};
use actix_web::web;
use criterion::{Criterion, criterion_group, criterion_main};
use infergate_config::{MapSource, load_gateway};
use infergate_gateway::state::{AppState, Overrides};

const USER_KEY: &str = "bench-user-key-5d1c0e9a7b3f2e4d";
const ORIGIN: &str = "https://app.bench.example";
const BODY: &str = r#"{"test_name": "pipeline", "iterations": 3, "timeout": 5}"#;

fn state() -> web::Data<AppState> {
    let dir = std::env::temp_dir().join("infergate-pipeline-bench-no-keys.yaml");
    let cfg = load_gateway(
        None,
        &MapSource::new([
            ("INFERGATE_WORKERS", "1".to_string()),
            ("INFERGATE_KEYS_FILE", dir.display().to_string()),
            ("API_KEYS", format!("{USER_KEY}:user")),
            ("RATE_LIMIT_AUTHENTICATED", "1000000000/minute".into()),
            ("RATE_LIMIT_DEFAULT", "1000000000/minute".into()),
            ("CORS_ORIGINS", ORIGIN.into()),
        ]),
    )
    .unwrap();
    let (legacy, _) = infergate_gateway::keys::legacy_keys(&cfg, None).unwrap();
    web::Data::new(AppState::build(cfg, Overrides::default(), legacy).unwrap())
}

fn pipeline(c: &mut Criterion) {
    // The access log as production writes it (JSON lines at info, request spans filtered out as
    // the log layer filters them when traces are off), formatted for every request; only the
    // destination is a sink.
    {
        use tracing_subscriber::Layer;
        use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let log = tracing_subscriber::fmt::layer()
            .event_format(infergate_telemetry::json_line::JsonLine)
            .with_writer(std::io::sink)
            .with_filter(LevelFilter::INFO.and(filter_fn(|m| {
                m.target() != infergate_telemetry::SPAN_TARGET
            })));
        tracing_subscriber::registry().with(log).init();
    }
    let sys = actix_rt::System::new();
    let app = sys.block_on(test::init_service(infergate_gateway::app::service(state())));
    let peer = "127.0.0.1:40000".parse().unwrap();

    // One request through the whole app, answered with `expect`; the request is built inside
    // the timed loop because a real server builds one per request too.
    let mut bench = |name: &str, expect: u16, request: &dyn Fn() -> TestRequest| {
        c.bench_function(name, |b| {
            b.iter(|| {
                sys.block_on(async {
                    let req = request()
                        .peer_addr(peer)
                        .insert_header(("host", "127.0.0.1"))
                        .to_request();
                    let res = test::call_service(&app, req).await;
                    assert_eq!(res.status().as_u16(), expect);
                    black_box(res)
                })
            })
        });
    };
    bench(
        "pipeline/POST /api/test: key, limits, JSON body, headers",
        200,
        &|| {
            TestRequest::post()
                .uri("/api/test")
                .insert_header(("origin", ORIGIN))
                .insert_header(("x-api-key", USER_KEY))
                .insert_header(("content-type", "application/json"))
                .set_payload(BODY)
        },
    );
    bench(
        "pipeline/GET /protected: key, limits, headers",
        200,
        &|| {
            TestRequest::get()
                .uri("/protected")
                .insert_header(("x-api-key", USER_KEY))
        },
    );
    bench(
        "pipeline/GET /protected without a key: refused 401",
        401,
        &|| TestRequest::get().uri("/protected"),
    );
}

/// What the proxy does with a JSON body before forwarding it: the strict parse (borrowed, no
/// value tree), the route's schema and a key's model allowlist; beside it, for scale, serde_json
/// building its `Value` tree of the same body (what the gateway did before, without the
/// duplicate-key check).
fn body(c: &mut Criterion) {
    use infergate_gateway::validate::{check_body, check_models, parse_json};
    let chat = br#"{"model": "dev-model", "messages": [{"role": "user", "content": "hello from wrk, the infergate load test"}], "max_tokens": 16}"#;
    let allowed = vec!["dev-model".to_string()];
    c.bench_function("body/chat: strict parse, schema, allowlist", |b| {
        b.iter(|| {
            let json = parse_json(black_box(chat)).unwrap();
            check_body(infergate_policy::Schema::ChatCompletions, &json).unwrap();
            check_models(&json, &allowed).unwrap();
        })
    });
    c.bench_function("body/chat: serde_json::Value (reference)", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(chat)).unwrap()))
    });
}

criterion_group!(benches, pipeline, body);
criterion_main!(benches);
