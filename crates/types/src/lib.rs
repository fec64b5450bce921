//! The vocabulary every infergate crate shares: how a rate is written ([`RateSpec`]), what a
//! shared limiter does when its backend fails ([`FailureMode`]), injected time ([`Clock`]), the
//! API key's shape ([`key_shape`]) and the argon2id floor ([`HashParams`]).
//!
//! It is a crate of its own so that configuration can parse settings into these finished types
//! without depending on the libraries that use them: `infergate-config` would otherwise pull in
//! Redis (through the limiter) or argon2 (through the key store), or copy their constants. It has
//! no I/O and depends on serde and thiserror only.

#![forbid(unsafe_code)]

pub mod clock;
pub mod failure;
pub mod hashing;
pub mod key_shape;
pub mod rate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use failure::FailureMode;
pub use hashing::{HashParams, HashParamsRefused, OWASP_MIN};
pub use rate::{RATE_SPEC_ACCEPTED, RateSpec, RateSpecError};
