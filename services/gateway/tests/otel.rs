//! Traces and logs end to end: the real `infergate-gateway` binary exports over OTLP/HTTP to a
//! real receiver started here, which decodes the protobuf; the dev upstream echoes what it was
//! sent. Also the access-log line's shape and the security warnings, as an operator reads them.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use infergate_dev_upstream::{DevUpstream, UpstreamConfig};
use infergate_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use infergate_testkit::process::Service;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_infergate-gateway");
const USER_KEY: &str = "otel-user-key-5d1c7a9e3b6f2048";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The real binary under testkit's harness, plus the log reading these tests share.
struct Gateway(Service);

impl Gateway {
    /// Starts the binary with exactly `env` (plus PATH), ready once it wrote its ready file.
    fn start(env: &[(&str, &str)], dir: &std::path::Path) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .current_dir(dir)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INFERGATE_LISTEN", "127.0.0.1:0")
            .env("INFERGATE_WORKERS", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Gateway(Service::start(cmd, "INFERGATE_READY_FILE"))
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// SIGTERM, then waits for a clean exit (which flushes the queued spans).
    fn stop(&mut self) {
        self.0.terminate();
    }

    fn logs(&self) -> String {
        self.0.stderr()
    }

    /// The JSON log lines.
    fn json_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = match body {
        Some(b) => req
            .insert_header(("Content-Type", "application/json"))
            .send_body(b.to_string())
            .await
            .unwrap(),
        None => req.send().await.unwrap(),
    };
    let bytes = res.body().await.unwrap();
    Reply {
        status: res.status().as_u16(),
        headers: res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str, trace: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.trace_id == trace)
        .collect();
    assert_eq!(found.len(), 1, "one {name} span in {trace}: {spans:#?}");
    found[0]
}

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_id)
        .collect()
}

fn access_line<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["message"] == "request" && v["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access line for {request_id}: {lines:#?}"))
}

#[actix_web::test]
async fn request_spans_reach_a_real_otlp_receiver() {
    let receiver = OtlpReceiver::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{USER_KEY}:admin"); // /v1/debug/* is admin-only
    let endpoint = receiver.endpoint();
    let mut gw = Gateway::start(
        &[
            ("INFERGATE_UPSTREAM", &upstream.base_url()),
            ("API_KEYS", &keys),
            ("LOG_FORMAT", "json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0ken"),
        ],
        dir.path(),
    );
    let client_parent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");

    let inference = send(
        "POST",
        &gw.url("/inference"),
        &[
            ("X-API-Key", USER_KEY),
            ("traceparent", &client_parent),
            ("X-Request-ID", "otel-inference-1"),
        ],
        Some(r#"{"prompt":"hello"}"#),
    )
    .await;
    assert_eq!(inference.status, 200, "{:?}", inference.body);

    // A second trace, through the echoing route: what the upstream was sent.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let echoed = send(
        "GET",
        &gw.url("/v1/debug/request"),
        &[
            ("Authorization", &format!("Bearer {USER_KEY}")),
            (
                "traceparent",
                &format!("00-{other_trace}-b7ad6b7169203331-01"),
            ),
        ],
        None,
    )
    .await;
    assert_eq!(echoed.status, 200, "{:?}", echoed.body);
    let forwarded = echoed.body["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent upstream")
        .to_string();

    // An anonymous 401 is traced too, with the refusal on its authenticate span.
    let refused = send(
        "GET",
        &gw.url("/protected"),
        &[("X-API-Key", "not-a-real-key-0123456789")],
        None,
    )
    .await;
    assert_eq!(refused.status, 401);
    let refused_id = refused.headers["x-request-id"].clone();

    // The default batch delay is 5 s: these spans leave on the flush at shutdown.
    gw.stop();
    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        s.iter().filter(|s| s.name == "upstream").count() >= 2
    });

    // The /inference trace continues the client's and has the expected tree.
    let server = one(&spans, "HTTP POST /inference", TRACE_ID);
    assert_eq!(server.kind, 2, "server kind");
    assert_eq!(
        server.parent_span_id, CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(server.service_name.as_deref(), Some("infergate-gateway"));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.route"), Some("/inference"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(
        server.attr("infergate.request_id"),
        Some("otel-inference-1")
    );
    let key_id = server
        .attr("infergate.key_id")
        .expect("the key id on the server span");
    assert!(!key_id.is_empty());

    let auth = one(&spans, "authenticate", TRACE_ID);
    assert_eq!(auth.parent_span_id, server.span_id);
    assert_eq!(auth.attr("infergate.auth.outcome"), Some("success"));
    assert_eq!(auth.attr("infergate.key_id"), Some(key_id));

    // The key's budget is counted under the server span; an unknown-to-the-cache key also had
    // the IP's guessing budget looked at, under authenticate.
    let rate = children(&spans, server, "rate_limit");
    assert_eq!(rate.len(), 1, "{rate:#?}");
    assert_eq!(rate[0].attr("infergate.ratelimit.backend"), Some("memory"));
    assert_eq!(rate[0].attr("infergate.ratelimit.outcome"), Some("allowed"));
    for r in children(&spans, auth, "rate_limit") {
        assert_eq!(r.attr("infergate.ratelimit.outcome"), Some("allowed"));
    }
    assert_eq!(
        spans.iter().filter(|s| s.trace_id == TRACE_ID).count(),
        4 + children(&spans, auth, "rate_limit").len(),
        "server, authenticate, rate_limit, upstream: {spans:#?}"
    );

    let up = one(&spans, "upstream", TRACE_ID);
    assert_eq!(up.parent_span_id, server.span_id);
    assert_eq!(up.kind, 3, "client kind");
    assert_eq!(up.attr("http.response.status_code"), Some("200"));
    assert_eq!(up.attr("server.address"), Some("127.0.0.1"));

    // The upstream was told the current trace, with the upstream span as parent.
    let up2 = one(&spans, "upstream", other_trace);
    assert_eq!(forwarded, format!("00-{other_trace}-{}-01", up2.span_id));
    let server2 = one(&spans, "HTTP GET /v1/*", other_trace);
    assert_eq!(up2.parent_span_id, server2.span_id);
    assert_eq!(
        server2.attr("http.route"),
        Some("/v1/*"),
        "a template, never the path"
    );

    // The 401: a new trace (none was given), its refusal recorded, the failure charged to the IP.
    let server3 = spans
        .iter()
        .find(|s| s.attr("infergate.request_id") == Some(refused_id.as_str()))
        .expect("the 401's server span");
    assert_eq!(server3.name, "HTTP GET /protected");
    assert_eq!(server3.parent_span_id, "", "a root span");
    assert_eq!(server3.attr("http.response.status_code"), Some("401"));
    assert_eq!(server3.attr("infergate.key_id"), None);
    let auth3 = one(&spans, "authenticate", &server3.trace_id);
    assert_eq!(auth3.attr("infergate.auth.outcome"), Some("unknown"));
    assert!(
        !children(&spans, auth3, "rate_limit").is_empty(),
        "the failure is charged to the IP's budget"
    );

    // No span carries a key (the failed one's 8-character prefix at most, in the warning event).
    for s in &spans {
        for v in s.all_values() {
            assert!(!v.contains(USER_KEY), "{} carries the key: {v}", s.name);
            assert!(
                !v.contains("not-a-real-key-0123"),
                "{} carries a key: {v}",
                s.name
            );
        }
    }
    assert!(
        auth3
            .events
            .iter()
            .any(|(name, attrs)| name == "unknown API key"
                && attrs
                    .get("key_prefix")
                    .is_some_and(|p| p.starts_with("not-a-re"))),
        "the WARN is a span event: {auth3:#?}"
    );

    // OTEL_EXPORTER_OTLP_HEADERS reached the collector.
    let posts = receiver.requests();
    assert!(!posts.is_empty());
    for r in &posts {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        assert_eq!(
            r.headers.get("x-collector-token").map(String::as_str),
            Some("t0ken")
        );
    }

    // The access-log line names the same trace.
    let lines = gw.json_lines();
    let line = access_line(&lines, "otel-inference-1");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["key_id"], key_id, "{line}");
}

#[actix_web::test]
async fn sampler_from_the_environment_is_honoured() {
    let receiver = OtlpReceiver::start();
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{USER_KEY}:admin"); // /v1/debug/* is admin-only
    let endpoint = receiver.endpoint();
    let mut gw = Gateway::start(
        &[
            ("INFERGATE_UPSTREAM", &upstream.base_url()),
            ("API_KEYS", &keys),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
        dir.path(),
    );
    let r = send(
        "GET",
        &gw.url("/v1/debug/request"),
        &[
            ("X-API-Key", USER_KEY),
            ("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // Not sampled, yet the trace still propagates: same trace id, flagged not sampled.
    let tp = r.body["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE_ID}-")), "{tp}");
    assert!(tp.ends_with("-00"), "{tp}");
    assert!(
        !tp.contains(CLIENT_SPAN),
        "a span of the gateway's as parent: {tp}"
    );
    gw.stop();
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

#[actix_web::test]
async fn json_access_log_and_security_warnings_without_traces() {
    let upstream = DevUpstream::start("127.0.0.1:0", UpstreamConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{USER_KEY}:admin"); // /v1/debug/* is admin-only
    let mut gw = Gateway::start(
        &[
            ("INFERGATE_UPSTREAM", &upstream.base_url()),
            ("API_KEYS", &keys),
            ("LOG_FORMAT", "json"),
            ("RATE_LIMIT_AUTHENTICATED", "2/minute"),
            ("RATE_LIMIT_ADMIN", "2/minute"),
        ],
        dir.path(),
    );
    // No traceparent: the gateway makes one for the upstream, and logs its trace id.
    let r = send(
        "GET",
        &gw.url("/v1/debug/request"),
        &[("X-API-Key", USER_KEY), ("X-Request-ID", "log-shape-1")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let sent = r.body["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    // With a traceparent on a route the gateway answers itself: the client's trace id.
    let health = send(
        "GET",
        &gw.url("/health"),
        &[
            ("X-Request-ID", "log-shape-2"),
            ("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
        ],
        None,
    )
    .await;
    assert_eq!(health.status, 200);
    // Over the key's limit of 2 a minute: 429s, each a (sampled) warning.
    let mut limited = 0;
    for _ in 0..3 {
        let r = send(
            "GET",
            &gw.url("/protected"),
            &[("X-API-Key", USER_KEY)],
            None,
        )
        .await;
        if r.status == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited} refused");
    // A wrong key: a warning with its prefix only.
    let wrong = "wrong-key-f00dfeedbeef0042";
    let r = send("GET", &gw.url("/protected"), &[("X-API-Key", wrong)], None).await;
    assert_eq!(r.status, 401);
    gw.stop();

    let lines = gw.json_lines();
    let line = access_line(&lines, "log-shape-1");
    for field in [
        "timestamp",
        "level",
        "request_id",
        "trace_id",
        "method",
        "route",
        "client_ip",
        "key_id",
    ] {
        assert!(line[field].is_string(), "{field} in {line}");
    }
    assert!(
        line["status"].is_number() && line["duration_ms"].is_number(),
        "{line}"
    );
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/v1/*", "the template, not the path: {line}");
    assert_eq!(line["status"], 200);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_ne!(line["key_id"], "-");
    assert_eq!(
        line["trace_id"],
        sent[3..35],
        "the id the upstream was sent"
    );
    assert_eq!(access_line(&lines, "log-shape-2")["trace_id"], TRACE_ID);

    let warns: Vec<&Value> = lines.iter().filter(|v| v["level"] == "WARN").collect();
    let rate = warns
        .iter()
        .find(|v| v["message"] == "rate limit exceeded")
        .unwrap_or_else(|| panic!("no rate-limit warning: {warns:#?}"));
    assert_eq!(
        rate["bucket"],
        format!("key:{}", line["key_id"].as_str().unwrap()),
        "{rate}"
    );
    assert!(rate["request_id"].is_string() && rate["suppressed"].is_number());
    let unknown = warns
        .iter()
        .find(|v| v["message"] == "unknown API key")
        .unwrap_or_else(|| panic!("no failed-auth warning: {warns:#?}"));
    assert_eq!(unknown["key_prefix"], "wrong-ke...");

    let logs = gw.logs();
    for secret in [USER_KEY, wrong] {
        assert!(!logs.contains(&secret[..12]), "logs hold a key: {logs}");
    }
}
