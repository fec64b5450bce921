//! Integration tests: the real key-admin service over HTTP on 127.0.0.1:0.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod auth;
mod basics;
mod console;
mod helpers;
mod keys;
mod redis;
mod rotation;
mod tokens;
mod validation;
