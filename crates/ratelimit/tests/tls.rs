//! `rediss://` against a real redis-server speaking TLS, with certificates made by `openssl` for
//! this run. Built with the crate's `tls` feature only (`make test` runs it).
//!
//! The limiter trusts the platform's root certificates, which `SSL_CERT_FILE` replaces; a test
//! cannot set that variable in its own process without `unsafe`, so the connecting half runs in
//! a child process of this test binary with the variable set.
#![cfg(feature = "tls")]
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
use infergate_ratelimit::{BucketKey, LimitCheck, RateLimitError, RateLimiter, RateSpec};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl (install it: apt-get install openssl): {e}")
        });
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a certificate it signed for `localhost` (its key in `server.key`).
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=infergate test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// redis-server with only a TLS port, killed on drop.
struct TlsRedis(Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &Path, port: u16) -> TlsRedis {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--protected-mode", "no"])
        .args(["--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"));
    let server = TlsRedis(child);
    // Ready once its port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn rediss_urls_connect_with_the_roots_of_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let port = infergate_testkit::free_port();
    let _server = start_redis(dir.path(), port);
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_connects", "--nocapture"])
        .env("SSL_CERT_FILE", dir.path().join("ca.pem"))
        .env("INFERGATE_TLS_CHILD_PORT", port.to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The child half of `rediss_urls_connect_with_the_roots_of_ssl_cert_file`.
#[test]
#[ignore = "run by rediss_urls_connect_with_the_roots_of_ssl_cert_file in a child process"]
fn child_connects() {
    let Ok(port) = std::env::var("INFERGATE_TLS_CHILD_PORT") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = || RedisLimiterConfig {
            prefix: "tls".into(),
            timeout: Duration::from_secs(30),
            ..RedisLimiterConfig::default()
        };
        let limiter = RedisLimiter::connect(&format!("rediss://localhost:{port}"), cfg())
            .await
            .unwrap();
        let check = [LimitCheck::new(
            BucketKey::key(Arc::from("k")),
            RateSpec::new(2, Duration::from_secs(60)).unwrap(),
        )];
        let decision = limiter.check(&check).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.statuses[0].remaining, 1);

        // The certificate names `localhost`, not the address.
        let by_address = RedisLimiter::connect(&format!("rediss://127.0.0.1:{port}"), cfg()).await;
        assert!(
            matches!(by_address, Err(RateLimitError::Unavailable(_))),
            "{by_address:?}"
        );
        // Verification is never skipped.
        let insecure =
            RedisLimiter::connect(&format!("rediss://localhost:{port}/#insecure"), cfg()).await;
        match insecure {
            Err(RateLimitError::Unavailable(msg)) => assert!(msg.contains("#insecure"), "{msg}"),
            other => panic!("{other:?}"),
        }
    });
}
