//! argon2id cost parameters and the floor below which nothing is hashed.
//!
//! The floor is OWASP's minimum for argon2id (19 MiB of memory, 2 iterations, 1 lane).
//! Equivalent trade-offs with more iterations and less memory are not accepted: simple and strong.

/// argon2id cost parameters, recorded in every PHC string (so raising them keeps old hashes
/// verifiable).
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

/// argon2 allows at most this many lanes.
pub const MAX_LANES: u32 = 255;
/// argon2 needs at least this much memory per lane.
pub const MIN_KIB_PER_LANE: u32 = 8;

impl Default for HashParams {
    fn default() -> Self {
        OWASP_MIN
    }
}

/// Which parameter falls short (with its value); `Display` says what is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashParamsRefused {
    #[error("memory_kib at least 19456 (OWASP's argon2id minimum is m=19456 KiB, t=2, p=1)")]
    Memory(u32),
    #[error("iterations at least 2 (OWASP's argon2id minimum is m=19456 KiB, t=2, p=1)")]
    Iterations(u32),
    #[error("parallelism of 1-255 lanes, with at least 8 KiB of memory per lane")]
    Lanes(u32),
}

impl HashParams {
    /// Refuses parameters weaker than [`OWASP_MIN`] or that argon2 cannot run.
    pub fn check(&self) -> Result<(), HashParamsRefused> {
        if self.memory_kib < OWASP_MIN.memory_kib {
            return Err(HashParamsRefused::Memory(self.memory_kib));
        }
        if self.iterations < OWASP_MIN.iterations {
            return Err(HashParamsRefused::Iterations(self.iterations));
        }
        if self.parallelism < OWASP_MIN.parallelism
            || self.parallelism > MAX_LANES
            || self.memory_kib / MIN_KIB_PER_LANE < self.parallelism
        {
            return Err(HashParamsRefused::Lanes(self.parallelism));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_accepted_and_anything_below_it_refused() {
        assert_eq!(OWASP_MIN.check(), Ok(()));
        let p = |memory_kib, iterations, parallelism| HashParams {
            memory_kib,
            iterations,
            parallelism,
        };
        assert_eq!(p(65_536, 3, 4).check(), Ok(()));
        assert_eq!(
            p(19_455, 2, 1).check(),
            Err(HashParamsRefused::Memory(19_455))
        );
        assert_eq!(
            p(19_456, 1, 1).check(),
            Err(HashParamsRefused::Iterations(1))
        );
        assert_eq!(p(19_456, 2, 0).check(), Err(HashParamsRefused::Lanes(0)));
        assert_eq!(
            p(1 << 20, 2, 256).check(),
            Err(HashParamsRefused::Lanes(256))
        );
        assert_eq!(
            p(19_456, 2, 2_500).check(),
            Err(HashParamsRefused::Lanes(2_500))
        );
    }
}
