//! The API key's shape: `prefix_id_secret_checksum`, as the key store mints and parses it
//! (`infergate_keystore::format`, which holds the full format and its checksum). The lengths
//! live here so that configuration can tell an infergate key from a plaintext one without
//! depending on the key store.

/// Matches a key anywhere in text (for secret scanners).
pub const KEY_REGEX: &str = r"\b[a-z][a-z0-9]{1,15}_[a-z0-9]{12}_[A-Za-z0-9]{43}_[A-Za-z0-9]{6}\b";
/// The prefix of minted keys unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "igk";
/// The public id: 12 characters of `[a-z0-9]`.
pub const ID_LEN: usize = 12;
/// The secret: 43 base62 characters (256 bits).
pub const SECRET_LEN: usize = 43;
/// CRC-32 of `prefix_id_secret`, 6 base62 characters.
pub const CHECKSUM_LEN: usize = 6;

/// Does this string look like a key of this format (so it must never be treated as a legacy
/// plaintext key)? A shape test only: the checksum is the key store's to judge.
pub fn looks_like_key(token: &str) -> bool {
    token.split('_').count() == 4 && token.len() > ID_LEN + SECRET_LEN + CHECKSUM_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_format_from_plaintext() {
        let key = format!(
            "igk_{}_{}_{}",
            "a".repeat(12),
            "B".repeat(43),
            "c".repeat(6)
        );
        assert!(looks_like_key(&key));
        assert!(!looks_like_key("a-long-plaintext-legacy-key"));
        assert!(!looks_like_key("a_b_c_d"));
        assert!(!looks_like_key(&format!("{key}_extra")));
    }
}
