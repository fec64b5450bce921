//! A real `redis-server` speaking only TLS, with a certificate authority and a `localhost`
//! certificate made by `openssl` for this server alone.
//!
//! Clients trust the CA through `SSL_CERT_FILE` (rustls-native-certs reads it), which a test
//! cannot set in its own process without `unsafe`: [`TlsRedisServer::run_child`] runs one test of
//! the calling test binary in a child process with the variable set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The TLS server; killed on drop, its certificates removed with it.
#[derive(Debug)]
pub struct TlsRedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
    assert!(status.success(), "openssl {args:?} failed");
}

/// `ca.pem`, and `server.pem`/`server.key` signed by it for `localhost` (no IP address).
fn certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
    ca.extend(["-subj", "/CN=infergate test CA"]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(key);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    if let Err(e) = std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n") {
        panic!("cannot write the certificate's extensions: {e}");
    }
    let mut sign = vec![
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
    ];
    sign.extend([
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    openssl(dir, &sign);
}

impl TlsRedisServer {
    /// Makes the certificates, starts the server on a free port of 127.0.0.1 and waits until
    /// the port accepts connections. A server that exits at start-up (most likely its port was
    /// taken between `free_port` and the bind) is retried on another port, as
    /// [`crate::RedisServer::start`] does.
    ///
    /// # Panics
    /// If `openssl` or `redis-server` (built with TLS, as Debian's is) is missing, or no server
    /// starts.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("infergate-redis-tls-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        certificates(dir.path());
        let mut failures = Vec::new();
        for _ in 0..crate::START_ATTEMPTS {
            let port = free_port();
            match spawn(dir.path(), port) {
                Ok(child) => return TlsRedisServer { port, dir, child },
                Err(e) => failures.push(format!("port {port}: {e}")),
            }
        }
        panic!("redis-server (TLS) did not start:\n{}", failures.join("\n"));
    }

    /// `rediss://localhost:PORT`, the name the certificate carries.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA's certificate (PEM): what `SSL_CERT_FILE` must name for clients to trust it.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs the test `name` of the current test binary in a child process, with `SSL_CERT_FILE`
    /// naming this server's CA and `INFERGATE_TLS_REDIS_URL` its URL, and asserts that it ran and
    /// passed. The child test reads the URL from the environment and returns at once without it
    /// (mark it `#[ignore]`, so that only this runs it).
    ///
    /// # Panics
    /// If the child test fails or does not run.
    pub fn run_child(&self, name: &str) {
        let exe =
            std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}"));
        let output = Command::new(exe)
            .args(["--ignored", "--exact", name, "--nocapture"])
            .env("SSL_CERT_FILE", self.ca_path())
            .env("INFERGATE_TLS_REDIS_URL", self.url())
            .output()
            .unwrap_or_else(|e| panic!("cannot run the child test: {e}"));
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && out.contains("1 passed"),
            "child test {name}:\n{out}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// redis-server with only a TLS port, on `port`, once the port accepts connections.
fn spawn(dir: &Path, port: u16) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start-up ({status})"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no connection within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
