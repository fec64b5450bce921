//! Sources of setting strings.

use std::collections::HashMap;
use std::path::Path;

/// Something that maps a variable name to a string.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// A fixed map: what tests use.
#[derive(Debug, Default, Clone)]
pub struct MapSource(pub HashMap<String, String>);

impl MapSource {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        MapSource(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Source for MapSource {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// The process environment over a `.env` file: a variable set in the environment wins over the
/// same name in `.env`, as with every dotenv loader.
#[derive(Debug, Default)]
pub struct ProcessEnv {
    dotenv: HashMap<String, String>,
}

impl ProcessEnv {
    /// Reads `.env` from `dir` if present. A malformed `.env` is an error naming the file.
    pub fn with_dotenv_in(dir: &Path) -> Result<Self, crate::ConfigError> {
        let path = dir.join(".env");
        let mut dotenv = HashMap::new();
        if path.is_file() {
            let iter = dotenvy::from_path_iter(&path).map_err(|e| crate::ConfigError::File {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            for item in iter {
                let (k, v) = item.map_err(|e| crate::ConfigError::File {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                dotenv.insert(k, v);
            }
        }
        Ok(Self { dotenv })
    }
}

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }
}
