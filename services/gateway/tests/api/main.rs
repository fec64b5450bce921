//! Integration tests: the real gateway and a real dev upstream over HTTP on 127.0.0.1:0.

mod auth;
mod basics;
mod headers;
mod helpers;
mod keys;
mod proxy;
mod rate_limit;
mod robustness;
mod validation;
