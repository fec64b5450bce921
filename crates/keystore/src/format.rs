//! The API-key format.
//!
//! ```text
//! igk_4f7k2m9x1q0a_Vb3...43 chars...Qz_Ab12Cd
//! └┬┘ └────┬─────┘ └────────┬─────────┘ └─┬──┘
//! prefix   id          secret (base62)   checksum
//! ```
//!
//! - **prefix**: `[a-z][a-z0-9]{1,15}`, configurable (`igk` by default), so secret scanners and
//!   humans can tell what a leaked string is.
//! - **id**: 12 characters of `[a-z0-9]`, public: it names the key in the store, the admin API,
//!   logs and rate-limit buckets.
//! - **secret**: 43 base62 characters drawn uniformly from the OS CSPRNG = 256.03 bits.
//! - **checksum**: CRC-32 of `prefix_id_secret`, 6 base62 characters. A mistyped or truncated
//!   key fails here, before any store lookup or hashing, and scanners can confirm a match offline.
//!
//! Regex (for scanners): [`KEY_REGEX`].

use std::fmt;

// The lengths are shared vocabulary: configuration tells our keys from plaintext ones by them.
pub use infergate_types::key_shape::{
    CHECKSUM_LEN, DEFAULT_PREFIX, ID_LEN, KEY_REGEX, SECRET_LEN, looks_like_key,
};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not an infergate key (expected prefix_id_secret_checksum)")]
    Shape,
    #[error("the key prefix must be 2-16 characters of a-z and 0-9, starting with a letter")]
    Prefix,
    #[error("the key id is malformed")]
    Id,
    #[error("the key secret is malformed")]
    Secret,
    #[error("the key checksum does not match (mistyped or truncated key)")]
    Checksum,
    #[error("the operating system's random generator failed")]
    Random,
}

/// Checks a prefix (`igk`, `rx580`).
pub fn validate_prefix(prefix: &str) -> Result<(), KeyFormatError> {
    let b = prefix.as_bytes();
    let ok = (2..=16).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(KeyFormatError::Prefix)
    }
}

/// A newly minted key. The full key exists only here; `Debug` and `Display` mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub id: String,
    key: String,
    secret_start: usize,
    secret_end: usize,
}

impl GeneratedKey {
    /// The whole key, to show the user exactly once.
    pub fn expose(&self) -> &str {
        &self.key
    }

    /// The secret part, to hash.
    pub fn secret(&self) -> &str {
        &self.key[self.secret_start..self.secret_end]
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedKey({}…)", &self.key[..self.secret_start])
    }
}

/// A syntactically valid key, borrowed from the presented string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub prefix: &'a str,
    pub id: &'a str,
    pub secret: &'a str,
}

/// Draws `n` characters uniformly from `alphabet` using the OS CSPRNG (rejection sampling keeps
/// every character equally likely).
fn random_chars(alphabet: &[u8], n: usize, out: &mut String) -> Result<(), KeyFormatError> {
    let limit = (256 / alphabet.len() * alphabet.len()) as u8;
    let mut buf = [0u8; 64];
    let mut produced = 0;
    while produced < n {
        getrandom::fill(&mut buf).map_err(|_| KeyFormatError::Random)?;
        for &b in &buf {
            if produced == n {
                break;
            }
            if b < limit {
                out.push(alphabet[(b as usize) % alphabet.len()] as char);
                produced += 1;
            }
        }
    }
    Ok(())
}

fn checksum(body: &str) -> String {
    let mut v = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Mints a key with `prefix`.
pub fn generate(prefix: &str) -> Result<GeneratedKey, KeyFormatError> {
    validate_prefix(prefix)?;
    let mut key = String::with_capacity(prefix.len() + 3 + ID_LEN + SECRET_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    let id_start = key.len();
    random_chars(BASE36, ID_LEN, &mut key)?;
    let id = key[id_start..].to_string();
    key.push('_');
    let secret_start = key.len();
    random_chars(BASE62, SECRET_LEN, &mut key)?;
    let secret_end = key.len();
    let sum = checksum(&key);
    key.push('_');
    key.push_str(&sum);
    Ok(GeneratedKey {
        id,
        key,
        secret_start,
        secret_end,
    })
}

/// Appends the checksum to `prefix_id_secret` (for tools and tests that assemble keys).
pub fn with_checksum(body: &str) -> String {
    format!("{body}_{}", checksum(body))
}

/// Parses and checks a presented key without touching any store.
pub fn parse(token: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    let mut parts = token.split('_');
    let (Some(prefix), Some(id), Some(secret), Some(sum), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(KeyFormatError::Shape);
    };
    validate_prefix(prefix)?;
    if id.len() != ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(KeyFormatError::Id);
    }
    if secret.len() != SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Secret);
    }
    let body_len = prefix.len() + 1 + id.len() + 1 + secret.len();
    if sum.len() != CHECKSUM_LEN || checksum(&token[..body_len]) != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey { prefix, id, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_the_regex() {
        let re_ok = |k: &str| {
            let parts: Vec<_> = k.split('_').collect();
            parts.len() == 4 && parts[1].len() == 12 && parts[2].len() == 43 && parts[3].len() == 6
        };
        for prefix in ["igk", "rx580"] {
            let k = generate(prefix).unwrap();
            let p = parse(k.expose()).unwrap();
            assert_eq!(p.prefix, prefix);
            assert_eq!(p.id, k.id);
            assert_eq!(p.secret, k.secret());
            assert!(re_ok(k.expose()));
            assert!(!format!("{k:?}").contains(k.secret()));
        }
        assert_ne!(
            generate("igk").unwrap().expose(),
            generate("igk").unwrap().expose()
        );
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let k = generate("igk").unwrap();
        let key = k.expose().to_string();
        for i in 0..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            if typo != key {
                assert!(parse(&typo).is_err(), "typo at {i} accepted");
            }
        }
        assert_eq!(parse(&key[..key.len() - 1]), Err(KeyFormatError::Checksum));
        assert_eq!(parse("igk_short"), Err(KeyFormatError::Shape));
        assert_eq!(parse("IGK_aaaaaaaaaaaa_x_y"), Err(KeyFormatError::Prefix));
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("igk").is_ok());
        assert!(validate_prefix("rx580").is_ok());
        assert!(validate_prefix("x").is_err());
        assert!(validate_prefix("9ab").is_err());
        assert!(validate_prefix("a_b").is_err());
        assert!(generate("Bad").is_err());
    }
}
