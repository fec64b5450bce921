//! The Redis names of one key store: one hash tag per prefix, so all of a store's data lives in
//! one Redis Cluster slot (see the store's module documentation for the layout).

use crate::KeyStoreError;

/// The longest accepted prefix.
const PREFIX_MAX_LEN: usize = 64;

/// The Redis names of one store (see the [store's module documentation](super)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNames {
    prefix: String,
}

impl KeyNames {
    /// Checks the prefix: 1 to 64 characters, none of them a brace (it would break the hash
    /// tag), whitespace or a control character.
    pub fn new(prefix: &str) -> Result<Self, KeyStoreError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= PREFIX_MAX_LEN
            && !prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(KeyStoreError::Invalid {
                origin: "the redis key store configuration".into(),
                name: "prefix".into(),
                detail: format!(
                    "{prefix:?} must be 1-{PREFIX_MAX_LEN} characters without braces, \
                     whitespace or control characters"
                ),
            });
        }
        Ok(Self {
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash tag every key name starts with: `{P:keys}`.
    pub fn hash_tag(&self) -> String {
        format!("{{{}:keys}}", self.prefix)
    }

    /// `{P:keys}:k:<id>`: one key's JSON record.
    pub fn record(&self, id: &str) -> String {
        format!("{}:k:{id}", self.hash_tag())
    }

    /// `{P:keys}:ids`: the sorted set of ids by creation time.
    pub fn ids(&self) -> String {
        format!("{}:ids", self.hash_tag())
    }

    /// `{P:keys}:audit`: the audit log.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.hash_tag())
    }

    /// `{P:keys}:op:<token>`: a write's idempotency token.
    /// One key's usage: a hash of `<date>:r|i|o` counters and `last` (Unix ms).
    pub fn usage(&self, id: &str) -> String {
        format!("{}:u:{id}", self.hash_tag())
    }

    pub fn op_token(&self, token: &str) -> String {
        format!("{}:op:{token}", self.hash_tag())
    }

    /// `P:keys:changes`: the pub/sub channel. Channels are not keys and need no hash tag.
    pub fn channel(&self) -> String {
        format!("{}:keys:changes", self.prefix)
    }
}
