//! Hashing secrets with argon2id.
//!
//! Parameters default to OWASP's minimum recommendation for argon2id (19 MiB of memory, 2
//! iterations, 1 lane); they are recorded in each PHC string, so raising them later keeps old
//! hashes verifiable. Hashing is deliberately slow: callers run it off their async workers and
//! cache the result (the gateway verifies each key once per process, not per request).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

pub use infergate_types::hashing::{HashParams, OWASP_MIN};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("argon2 parameters below the OWASP minimum (m=19456 KiB, t=2, p=1) or invalid: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn argon2(params: HashParams) -> Result<Argon2<'static>, HashError> {
    params
        .check()
        .map_err(|e| HashError::Params(e.to_string()))?;
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| HashError::Params(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a secret into a PHC string with a fresh random salt.
pub fn hash_secret(secret: &str, params: HashParams) -> Result<String, HashError> {
    argon2(params)?
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Checks a secret against a PHC string (the comparison inside is constant time). A malformed
/// stored hash verifies nothing.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_parameters_recorded() {
        let phc = hash_secret("s3cret", HashParams::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(verify_secret("s3cret", &phc));
        assert!(!verify_secret("s3cret!", &phc));
        assert!(!verify_secret("s3cret", "not a hash"));
        let weak = HashParams {
            memory_kib: 1024,
            ..HashParams::default()
        };
        assert!(hash_secret("x", weak).is_err());
    }
}
