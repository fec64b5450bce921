//! The adversarial suite: every hole and false refusal found by attacking the gateway (raw
//! sockets, header tricks, a proxy chain, slow clients) and by real clients, each as a regression
//! test over real HTTP, with raw bytes where a client library would not send them.
//!
//! - [`forwarding`]: client address and scheme through proxy chains; what reaches the upstream.
//! - [`auth`]: the guessing oracle, weak static keys, role allowlists, secrets in every output.
//! - [`framing`]: paths, smuggling, slow and stalled bodies, connection caps, upgrades, `Expect`.
//! - [`bodies`]: duplicate keys, empty bodies, content encodings, uploads, integer rules.
//! - [`hosts`]: Host and absolute-form tricks, CORS reflection, JWT attacks over HTTP.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod auth;
mod bodies;
mod forwarding;
mod framing;
mod hosts;
mod raw;
