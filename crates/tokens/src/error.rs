//! The one error type of this crate.

/// Why a token could not be issued or was refused, or why the settings cannot be used.
///
/// Messages never contain a token, a secret or key material: they may reach logs and, for the
/// verification variants, clients. [`TokenError::reason`] gives a stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The settings cannot be used; the message names the setting (and file) at fault.
    #[error("invalid JWT configuration: {0}")]
    Config(String),
    /// `exp` is in the past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// No trusted key of the issuer produced this signature.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// `iss` is missing or names no trusted issuer.
    #[error("token issuer is not accepted")]
    InvalidIssuer,
    /// `aud` is missing or is not the audience expected for the issuer.
    #[error("token audience is not accepted")]
    InvalidAudience,
    /// Not a well-formed JWT, or a required claim is missing or has the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`, an unknown algorithm, or one other than the algorithm pinned for the issuer's
    /// keys (HS/RS confusion lands here).
    #[error("token algorithm {0} is not accepted")]
    DisallowedAlgorithm(String),
    /// The token carries no `role` and its issuer has no `default_role`.
    #[error("token has no role claim and its issuer has no default role")]
    MissingRole,
    /// Issuing refused: the key is expired or revoked (or expires within the current second).
    #[error("the key is expired or revoked; no token can be issued for it")]
    KeyExpired,
    /// The token names a `kid` that the issuer's key set does not contain.
    #[error("token key id is not among the issuer's keys")]
    UnknownKey,
    /// The operating system's random generator or the signer failed.
    #[error("internal token error: {0}")]
    Internal(String),
}

impl TokenError {
    /// A stable snake_case label, for metrics and error codes.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Config(_) => "config",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::InvalidSignature => "bad_signature",
            TokenError::InvalidIssuer => "bad_issuer",
            TokenError::InvalidAudience => "bad_audience",
            TokenError::Malformed(_) => "malformed",
            TokenError::DisallowedAlgorithm(_) => "disallowed_algorithm",
            TokenError::MissingRole => "missing_role",
            TokenError::KeyExpired => "key_expired",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Internal(_) => "internal",
        }
    }
}
