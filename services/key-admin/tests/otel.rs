//! Traces end to end: the real `infergate-admin` binary exports its request spans over OTLP/HTTP
//! to a real receiver started here (which decodes the protobuf). Admin actions are WARN lines.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use infergate_testkit::otlp::OtlpReceiver;
use infergate_testkit::process::Service;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_infergate-admin");
const LEGACY_ADMIN: &str = "legacy-admin-key-for-otel-tests-0042";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `infergate-admin serve` under testkit's harness.
struct Server(Service);

impl Server {
    fn start(env: &[(&str, &str)], dir: &std::path::Path) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .current_dir(dir)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INFERGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("INFERGATE_ADMIN_WORKERS", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg("serve");
        Server(Service::start(cmd, "INFERGATE_ADMIN_READY_FILE"))
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
}

async fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    }
    .insert_header(("X-API-Key", LEGACY_ADMIN))
    .insert_header(("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")));
    let mut res = match body {
        Some(b) => req
            .insert_header(("Content-Type", "application/json"))
            .send_body(b.to_string())
            .await
            .unwrap(),
        None => req.send().await.unwrap(),
    };
    let bytes = res.body().await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn key_admin_exports_server_spans() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = receiver.endpoint();
    let mut server = Server::start(
        &[
            ("KEY_STORE", "memory"),
            ("ADMIN_API_KEY", LEGACY_ADMIN),
            ("LOG_FORMAT", "json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "admin-under-test"),
            // Batches leave every 100 ms: these spans arrive while the service runs.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        dir.path(),
    );
    let (status, created) = call(
        "POST",
        &server.url("/v1/keys"),
        Some(r#"{"name": "traced", "role": "user"}"#),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let minted = created["key"].as_str().expect("the new key").to_string();
    let id = created["record"]["id"]
        .as_str()
        .expect("its id")
        .to_string();
    let (status, _) = call("GET", &server.url(&format!("/v1/keys/{id}")), None).await;
    assert_eq!(status, 200);

    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        s.iter()
            .filter(|s| s.trace_id == TRACE_ID && s.kind == 2)
            .count()
            >= 2
    });
    let create = spans
        .iter()
        .find(|s| s.name == "HTTP POST /v1/keys")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(create.kind, 2);
    assert_eq!(create.trace_id, TRACE_ID);
    assert_eq!(create.parent_span_id, CLIENT_SPAN);
    assert_eq!(create.service_name.as_deref(), Some("admin-under-test"));
    assert_eq!(create.attr("http.route"), Some("/v1/keys"));
    assert_eq!(create.attr("http.response.status_code"), Some("201"));
    assert!(create.attr("infergate.key_id").is_some());
    let auth = spans
        .iter()
        .find(|s| s.name == "authenticate" && s.parent_span_id == create.span_id)
        .unwrap_or_else(|| panic!("no authenticate child: {spans:#?}"));
    assert_eq!(auth.attr("infergate.auth.outcome"), Some("success"));

    // The route template, never the path with the key id in it.
    let get = spans
        .iter()
        .find(|s| s.name == "HTTP GET /v1/keys/{id}")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(get.attr("http.route"), Some("/v1/keys/{id}"));

    for s in &spans {
        for v in s.all_values() {
            assert!(
                !v.contains(LEGACY_ADMIN) && !v.contains(&minted),
                "{}: {v}",
                s.name
            );
        }
    }

    server.stop();
    // The admin action is a WARN line naming the key id only.
    let logs = server.logs();
    let action = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "admin action")
        .unwrap_or_else(|| panic!("no admin action line: {logs}"));
    assert_eq!(action["level"], "WARN", "{action}");
    assert_eq!(action["key_id"], id.as_str());
    let access = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v["route"] == "/v1/keys")
        .unwrap_or_else(|| panic!("no access line: {logs}"));
    assert_eq!(access["trace_id"], TRACE_ID);
    assert!(
        !logs.contains(&minted) && !logs.contains(LEGACY_ADMIN),
        "{logs}"
    );
}
