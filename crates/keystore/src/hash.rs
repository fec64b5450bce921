//! Hashing secrets with argon2id.
//!
//! Parameters default to OWASP's minimum recommendation for argon2id (19 MiB of memory, 2
//! iterations, 1 lane); they are recorded in each PHC string, so raising them later keeps old
//! hashes verifiable. Hashing is deliberately slow: callers run it off their async workers and
//! cache the result (the gateway verifies each key once per process, not per request).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// OWASP's minimum for argon2id.
pub const OWASP_MIN: HashParams = HashParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

impl Default for HashParams {
    fn default() -> Self {
        OWASP_MIN
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("argon2 parameters below the OWASP minimum (m=19456 KiB, t=2, p=1) or invalid: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

impl HashParams {
    /// Refuses parameters weaker than OWASP's minimum (equivalent trade-offs with more iterations
    /// and less memory are not accepted: keep it simple and strong).
    pub fn validate(&self) -> Result<(), HashError> {
        if self.memory_kib < OWASP_MIN.memory_kib
            || self.iterations < OWASP_MIN.iterations
            || self.parallelism == 0
        {
            return Err(HashError::Params(format!(
                "m={} t={} p={}",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        Ok(())
    }

    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes a secret into a PHC string with a fresh random salt.
pub fn hash_secret(secret: &str, params: HashParams) -> Result<String, HashError> {
    params.validate()?;
    params
        .argon2()?
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
