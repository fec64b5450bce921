//! A service binary started as an operator starts it, for tests that need the real process
//! (exit codes, signals, logs, stdout banners).
//!
//! Readiness is machine-readable: the harness points the service's ready-file setting (the
//! gateway's `INFERGATE_READY_FILE`, key-admin's `INFERGATE_ADMIN_READY_FILE`) at a fresh path
//! and waits until the service has written it — a JSON object of the addresses it bound, written
//! atomically after binding. The log text is never parsed for a port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a service gets to bind its listeners (a debug build on a loaded 2-core machine).
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a service gets to exit after SIGTERM (its drain included).
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running service process; killed when dropped.
pub struct Service {
    child: Child,
    addrs: BTreeMap<String, SocketAddr>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn collect(pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    })
}

/// Reads the ready file once it is complete (the service renames it into place).
fn read_ready(path: &PathBuf) -> Option<BTreeMap<String, SocketAddr>> {
    let text = std::fs::read_to_string(path).ok()?;
    let addrs: BTreeMap<String, String> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("ready file is not a JSON object of addresses ({e}): {text}"));
    Some(
        addrs
            .into_iter()
            .map(|(k, v)| {
                let addr = v
                    .parse()
                    .unwrap_or_else(|e| panic!("ready file: {k} = {v:?} is no address ({e})"));
                (k, addr)
            })
            .collect(),
    )
}

impl Service {
    /// Spawns `cmd` (stdout and stderr captured) with `ready_env` naming a fresh ready file, and
    /// waits until the service has written it. Panics with the service's stderr when it exits
    /// first or does not bind within [`START_DEADLINE`].
    pub fn start(mut cmd: Command, ready_env: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut child = cmd
            .env(ready_env, &ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let started = Instant::now();
        let addrs = loop {
            if let Some(addrs) = read_ready(&ready) {
                break addrs;
            }
            if let Some(status) = child.try_wait().unwrap() {
                for r in readers {
                    let _ = r.join();
                }
                panic!(
                    "the service exited ({status}) before it was ready: {}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "the service did not bind within {START_DEADLINE:?}: {}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Service {
            child,
            addrs,
            stdout,
            stderr,
            readers,
            _dir: dir,
        }
    }

    /// The address the service reported under `name` (`listen`, `metrics_listen`).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no {name:?} in the ready file: {:?}", self.addrs))
    }

    /// The main listener's port.
    pub fn port(&self) -> u16 {
        self.addr("listen").port()
    }

    /// `http://127.0.0.1:<port><path>` on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// What the service wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the service wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` (lines reach it through the service's buffered log
    /// writer, within its flush interval), failing after `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let started = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(
                started.elapsed() < limit,
                "no {needle:?} in the log within {limit:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name (`-TERM`, `-HUP`, `-INT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} failed");
    }

    /// Waits for the process to exit, failing after `limit`; then its output is complete.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "the service did not exit within {limit:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, once the process is gone.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// SIGTERM, then waits (within [`STOP_DEADLINE`]) for a clean exit.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        let status = self.wait(STOP_DEADLINE);
        assert!(status.success(), "exit {status}: {}", self.stderr());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
