//! Test support shared by every infergate crate's tests (a dev-dependency only, so nothing here
//! reaches a release build).
//!
//! Tests run against real processes, never mocks: a mock Redis would agree with whatever the
//! code under test believes Redis does, which is exactly what a test must not take on trust.
//!
//! - [`RedisServer`]: a throwaway `redis-server` on `127.0.0.1` and a free port, with no
//!   persistence, killed when dropped. It can be stopped, restarted on the same port and paused,
//!   for fault tests.
//! - [`free_port`]: a TCP port nothing listens on right now.
//! - [`process::Service`]: a service binary started as an operator starts it, ready when it has
//!   written its ready file (never by parsing its log), with its stdout and stderr captured.
//! - [`eventually`]: polls a condition with a deadline that fails the test, naming it.
//! - [`prometheus::Scrape`]: the Prometheus text format parsed for assertions.
//! - `otlp::OtlpReceiver` (feature `otlp`): an OTLP/HTTP trace receiver that decodes the spans
//!   a service exports, for end-to-end trace tests.
//!
//! `redis-server` must be installed (`apt-get install redis-server`; `.ci/run` does it).
#![forbid(unsafe_code)]
// Test support only: a panic here is a failed test, which is what an unexpected state should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod eventually;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod tls_redis;

pub use eventually::eventually;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to answer `PING` after it is spawned.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start`] (and `tls_redis`) tries when the one it picked was
/// taken between choosing it and `redis-server` binding it (other tests pick ports concurrently).
pub(crate) const START_ATTEMPTS: usize = 5;

const NOT_INSTALLED: &str =
    "redis-server not found: install it (apt-get install redis-server); .ci/run does";

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0), and the listener is dropped before returning, so another
/// process may take it in between: callers that can detect a lost race should retry with a new
/// port, as [`RedisServer::start`] does.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to pick a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound listener: {e}"))
        .port()
}

/// A real `redis-server` for one test: `127.0.0.1`, a free port and a Unix socket in its
/// temporary working directory, no RDB or AOF persistence, protected mode off. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Holds the server's `--dir` and its log; removed on drop, after the process is gone.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Spawns a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is not installed, or no server became ready on any of a few ports
    /// within the deadline (the message then includes the server's log).
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("infergate-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for redis: {e}"));
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // The port was most likely taken between `free_port` and the bind: try another.
                Err(e) => failures.push(format!("port {}: {e}", server.port)),
            }
        }
        panic!(
            "redis-server did not start after {START_ATTEMPTS} attempts:\n{}\n--- redis log ---\n{}",
            failures.join("\n"),
            server.log_tail()
        );
    }

    /// The TCP port the server listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `unix://<dir>/redis.sock`: the same server through its Unix socket.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Whether the server process is running (it was not stopped and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server and waits for it to exit. Data is lost (there is no persistence).
    /// Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means the process already exited, which is what we want anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts a new, empty one on the same port, waiting until
    /// it is ready. Clients configured with [`RedisServer::url`] can reconnect to it.
    ///
    /// # Panics
    /// If the new server does not become ready (for example, the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!(
                "redis-server did not restart on port {}: {e}\n--- redis log ---\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Makes the server stop answering every client (reads and writes) for `d`, with
    /// `CLIENT PAUSE <ms> ALL`: a server that is up but unresponsive, for timeout tests.
    /// Returns once the pause is in effect.
    ///
    /// # Panics
    /// If the server does not accept the command.
    pub fn pause(&self, d: Duration) {
        let ms = d.as_millis().to_string();
        match self.command(&["CLIENT", "PAUSE", &ms, "ALL"]) {
            Ok(reply) if reply == "+OK" => {}
            Ok(reply) => panic!(
                "CLIENT PAUSE refused by redis on port {}: {reply}",
                self.port
            ),
            Err(e) => panic!("CLIENT PAUSE failed on port {}: {e}", self.port),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The end of the server's log, for panic messages.
    fn log_tail(&self) -> String {
        match std::fs::read_to_string(self.log_path()) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Spawns `redis-server` on `self.port` and waits until it is ready, or fails.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            // No RDB snapshots and no AOF: a test server holds nothing worth keeping, and disk
            // writes would slow down a machine shared with builds.
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.socket_path())
            .args(["--unixsocketperm", "700"])
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{NOT_INSTALLED}"),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let result = self.wait_ready();
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Polls until this very process answers: `PING` must give `+PONG`, and `INFO server` must
    /// name our child's pid — otherwise a server from another test that grabbed the port first
    /// would pass for ours.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err("not running".into());
            };
            if let Ok(Some(status)) = child.try_wait() {
                // Typically "Address already in use": the port was taken.
                return Err(format!("redis-server exited at start-up ({status})"));
            }
            let pid = child.id();
            let attempt = self.command(&["PING"]).and_then(|reply| {
                if reply != "+PONG" {
                    return Err(format!("PING answered {reply:?}"));
                }
                let info = self.command(&["INFO", "server"])?;
                let ours = format!("process_id:{pid}");
                if info.lines().any(|l| l.trim() == ours) {
                    Ok(())
                } else {
                    Err("another process answers on this port".into())
                }
            });
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("not ready within {READY_DEADLINE:?} (last: {e})"));
                }
                // A short poll interval, not a fixed start-up sleep: a ready server is seen at
                // once.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Sends one command over a fresh connection and returns the reply (see [`read_reply`]).
    fn command(&self, args: &[&str]) -> Result<String, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| format!("connect: {e}"))?;
        // Bounded I/O so that a paused or half-started server cannot hang a test.
        let io_timeout = Some(Duration::from_secs(2));
        stream
            .set_read_timeout(io_timeout)
            .and_then(|()| stream.set_write_timeout(io_timeout))
            .map_err(|e| format!("socket options: {e}"))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        (&stream)
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        read_reply(&mut BufReader::new(&stream))
    }
}

/// Reads one RESP2 reply: a simple string or error as its whole line (`+OK`, `-ERR …`), an
/// integer as `:N`, a bulk string as its contents (a null one as ""), an array as its elements
/// joined with newlines. Enough for the handful of commands this crate sends.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let line = line.trim_end_matches(['\r', '\n']);
    let len = || -> Result<i64, String> {
        line[1..]
            .parse()
            .map_err(|_| format!("bad length in {line:?}"))
    };
    match line.as_bytes().first() {
        Some(b'$') => {
            let Ok(len) = usize::try_from(len()?) else {
                return Ok(String::new());
            };
            let mut body = vec![0u8; len + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read: {e}"))?;
            body.truncate(len);
            String::from_utf8(body).map_err(|_| "reply is not UTF-8".into())
        }
        Some(b'*') => {
            let n = usize::try_from(len()?).unwrap_or(0);
            let items = (0..n)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items.join("\n"))
        }
        Some(_) => Ok(line.to_string()),
        None => Err("connection closed without a reply".into()),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Kill before the temporary directory is removed (fields drop after this).
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        // Another process may take a port between free_port and the bind (the race its doc
        // describes): of a few ports it picks, one must still be free.
        let bound = (0..5).any(|_| {
            let port = free_port();
            assert_ne!(port, 0);
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
        assert!(bound, "none of five ports free_port picked could be bound");
    }

    #[test]
    fn start_stop_restart_keeps_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(server.command(&["PING"]).unwrap(), "+PONG");
        assert_eq!(server.command(&["SET", "k", "v"]).unwrap(), "+OK");
        assert_eq!(server.command(&["GET", "k"]).unwrap(), "v");

        server.stop();
        assert!(!server.is_running());
        assert!(
            server.command(&["PING"]).is_err(),
            "stopped server answered"
        );

        server.restart();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.command(&["PING"]).unwrap(), "+PONG");
        // A fresh server: nothing was persisted.
        assert_eq!(server.command(&["GET", "k"]).unwrap(), "");
    }

    #[test]
    fn persistence_is_off() {
        let server = RedisServer::start();
        let save = server.command(&["CONFIG", "GET", "save"]).unwrap();
        assert_eq!(save, "save\n");
        let aof = server.command(&["CONFIG", "GET", "appendonly"]).unwrap();
        assert_eq!(aof, "appendonly\nno");
    }

    #[test]
    fn pause_blocks_clients_for_the_duration() {
        let server = RedisServer::start();
        server.pause(Duration::from_millis(300));
        let t = Instant::now();
        assert_eq!(server.command(&["PING"]).unwrap(), "+PONG");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "PING answered during a pause after {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn dropping_kills_the_server() {
        let server = RedisServer::start();
        let port = server.port();
        drop(server);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
    }
}
