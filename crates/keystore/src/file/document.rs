//! The keys file's document (version 2, see the store's module doc): its serde shape, parsing
//! with the legacy section, and reading one version of the file with its fingerprint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::atomic::io_error;
use super::watch::Fingerprint;
use crate::legacy::parse_keys_document;
use crate::{KeyStoreError, StaticKey, StoredKey};

/// The document version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// The file as stored. No `Debug`: `keys` holds plaintext legacy keys.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Document {
    #[serde(default)]
    pub(super) version: Option<u32>,
    /// Kept as parsed YAML so a write carries it over without interpreting (or normalizing) it.
    #[serde(default)]
    pub(super) keys: serde_yaml::Value,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) hashed_keys: BTreeMap<String, StoredKey>,
}

/// `hashed_keys:` with nothing after it is YAML null; read it as no keys.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn parse_error(shown: &str, detail: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Parse {
        path: shown.to_string(),
        detail: detail.to_string(),
    }
}

/// Parses a document and its legacy section. Empty text is an empty store.
pub(super) fn parse_document(
    text: &str,
    shown: &str,
) -> Result<(Document, Vec<StaticKey>), KeyStoreError> {
    if text.trim().is_empty() {
        return Ok((Document::default(), Vec::new()));
    }
    let doc: Document = serde_yaml::from_str(text).map_err(|e| parse_error(shown, e))?;
    if let Some(v) = doc.version
        && v > FORMAT_VERSION
    {
        return Err(parse_error(
            shown,
            format!(
                "version {v} was written by a newer infergate (this one reads up to {FORMAT_VERSION})"
            ),
        ));
    }
    for (id, key) in &doc.hashed_keys {
        if *key.record.id != **id {
            return Err(parse_error(
                shown,
                format!("hashed_keys.{id}: the entry's id is {:?}", key.record.id),
            ));
        }
    }
    // The same parser the gateway uses for a plain keys file, so both read it alike.
    let legacy = parse_keys_document(text, shown)?;
    Ok((doc, legacy))
}

/// Reads the file; a missing file is an empty store. Also returns the fingerprint of exactly
/// the version read (taken from the open handle, so a concurrent rename cannot mix them up).
pub(super) fn read_document(
    path: &Path,
    shown: &str,
) -> Result<(Document, Vec<StaticKey>, Option<Fingerprint>), KeyStoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((Document::default(), Vec::new(), None));
        }
        Err(e) => return Err(io_error("read keys file", path)(e)),
    };
    let fp = Fingerprint::of(&file.metadata().map_err(io_error("read keys file", path))?);
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(io_error("read keys file", path))?;
    let (doc, legacy) = parse_document(&text, shown)?;
    Ok((doc, legacy, Some(fp)))
}
