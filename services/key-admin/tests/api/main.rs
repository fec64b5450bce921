//! Integration tests: the real key-admin service over HTTP on 127.0.0.1:0.

mod audit;
mod auth;
mod basics;
mod helpers;
mod keys;
mod redis;
mod rotation;
mod tokens;
mod validation;
