//! Integration tests: the real gateway and a real dev upstream over HTTP on 127.0.0.1:0.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod basics;
mod budgets;
mod headers;
mod helpers;
mod keys;
mod proxy;
mod rate_limit;
mod robustness;
mod routes;
mod validation;
