//! Where a credential is read from, how it is masked, and how it is kept away from the upstream.
//!
//! Precedence when several are present: the API-key header, then `Authorization: Bearer`, then the
//! query parameter. The first present one is used; the others are still stripped before proxying.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Longest credential accepted. Anything longer is rejected before any store lookup or hashing, so
/// a client cannot make the gateway hash megabytes.
pub const MAX_CREDENTIAL_LEN: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Header,
    Bearer,
    Query,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Header => "header",
            CredentialSource::Bearer => "bearer",
            CredentialSource::Query => "query",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<'a> {
    pub value: Cow<'a, str>,
    pub source: CredentialSource,
}

/// Which places a credential may come from.
#[derive(Debug, Clone)]
pub struct CredentialRules {
    /// Header carrying an API key, e.g. `X-API-Key` (compared case-insensitively by HTTP libraries).
    pub header_name: String,
    /// Query parameter carrying an API key (`api_key`), or `None` when switched off.
    pub query_param: Option<String>,
}

impl Default for CredentialRules {
    fn default() -> Self {
        Self {
            header_name: "X-API-Key".to_string(),
            query_param: Some("api_key".to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the Authorization header must use the Bearer scheme")]
    MalformedAuthorization,
    #[error("the credential is empty")]
    Empty,
    #[error("the credential is longer than {MAX_CREDENTIAL_LEN} characters")]
    TooLong,
    #[error("the credential contains characters that no key contains")]
    InvalidCharacters,
}

impl CredentialError {
    /// Stable reason label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            CredentialError::MalformedAuthorization => "malformed",
            CredentialError::Empty => "malformed",
            CredentialError::TooLong => "malformed",
            CredentialError::InvalidCharacters => "malformed",
        }
    }
}

fn check(value: &str) -> Result<(), CredentialError> {
    if value.is_empty() {
        return Err(CredentialError::Empty);
    }
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::TooLong);
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CredentialError::InvalidCharacters);
    }
    Ok(())
}

/// Picks the credential a request presents.
///
/// `api_key_header` is the value of the configured API-key header, `authorization` the value of
/// `Authorization`, `query` the raw query string. Returns `Ok(None)` when no credential is present.
pub fn extract_credential<'a>(
    rules: &CredentialRules,
    api_key_header: Option<&'a str>,
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Result<Option<Credential<'a>>, CredentialError> {
    if let Some(value) = api_key_header {
        let value = value.trim();
        check(value)?;
        return Ok(Some(Credential {
            value: Cow::Borrowed(value),
            source: CredentialSource::Header,
        }));
    }
    if let Some(auth) = authorization {
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::MalformedAuthorization);
        }
        let value = rest.trim();
        check(value)?;
        return Ok(Some(Credential {
            value: Cow::Borrowed(value),
            source: CredentialSource::Bearer,
        }));
    }
    if let (Some(param), Some(query)) = (rules.query_param.as_deref(), query) {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == param {
                let decoded = percent_decode_str(&value.replace('+', " "))
                    .decode_utf8()
                    .map_err(|_| CredentialError::InvalidCharacters)?
                    .into_owned();
                check(&decoded)?;
                return Ok(Some(Credential {
                    value: Cow::Owned(decoded),
                    source: CredentialSource::Query,
                }));
            }
        }
    }
    Ok(None)
}

/// Masks a secret for logs and responses: at most its first 8 characters followed by `...`, and
/// never more than a third of it, so short keys do not leak most of themselves.
pub fn mask_secret(secret: &str) -> String {
    let shown = (secret.chars().count() / 3).min(8);
    let prefix: String = secret.chars().take(shown).collect();
    format!("{prefix}...")
}

/// Removes every occurrence of the query parameter `name` from `query`, keeping the rest byte for
/// byte. Borrowed when there was nothing to strip (the common case).
pub fn strip_query_param<'a>(query: &'a str, name: &str) -> Cow<'a, str> {
    let present = query
        .split('&')
        .any(|pair| pair.split_once('=').map_or(pair, |(n, _)| n) == name);
    if !present {
        return Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(n, _)| n) != name)
        .collect();
    Cow::Owned(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CredentialRules {
        CredentialRules::default()
    }

    #[test]
    fn header_wins_over_bearer_and_query() {
        let c = extract_credential(&rules(), Some("k1"), Some("Bearer k2"), Some("api_key=k3"))
            .unwrap()
            .unwrap();
        assert_eq!(c.value, "k1");
        assert_eq!(c.source, CredentialSource::Header);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_are_malformed() {
        let c = extract_credential(&rules(), None, Some("bearer abc"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.value.as_ref(), c.source),
            ("abc", CredentialSource::Bearer)
        );
        assert_eq!(
            extract_credential(&rules(), None, Some("Basic dXNlcjpwYXNz"), None),
            Err(CredentialError::MalformedAuthorization)
        );
        assert_eq!(
            extract_credential(&rules(), None, Some("Bearer "), None),
            Err(CredentialError::Empty)
        );
    }

    #[test]
    fn query_parameter_is_decoded_and_can_be_switched_off() {
        let c = extract_credential(&rules(), None, None, Some("a=1&api_key=ab%2Bc&b=2"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.value.as_ref(), c.source),
            ("ab+c", CredentialSource::Query)
        );
        let off = CredentialRules {
            query_param: None,
            ..rules()
        };
        assert_eq!(
            extract_credential(&off, None, None, Some("api_key=abc")),
            Ok(None)
        );
    }

    #[test]
    fn rejects_oversized_and_control_characters() {
        let long = "a".repeat(MAX_CREDENTIAL_LEN + 1);
        assert_eq!(
            extract_credential(&rules(), Some(&long), None, None),
            Err(CredentialError::TooLong)
        );
        assert_eq!(
            extract_credential(&rules(), None, None, Some("api_key=a%00b")),
            Err(CredentialError::InvalidCharacters)
        );
    }

    #[test]
    fn masking_shows_at_most_eight_characters() {
        assert_eq!(mask_secret("sk-test-0123456789abcdefghij"), "sk-test-...");
        assert_eq!(mask_secret("short"), "s...");
        assert_eq!(mask_secret(""), "...");
    }

    #[test]
    fn strips_only_the_named_parameter() {
        assert_eq!(strip_query_param("a=1&b=2", "api_key"), "a=1&b=2");
        assert_eq!(strip_query_param("a=1&api_key=x&b=2", "api_key"), "a=1&b=2");
        assert_eq!(strip_query_param("api_key=x", "api_key"), "");
        assert_eq!(strip_query_param("api_key", "api_key"), "");
        assert_eq!(strip_query_param("api_keys=1", "api_key"), "api_keys=1");
    }
}
