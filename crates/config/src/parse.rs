//! Parsers for setting strings, each returning a [`ConfigError`] that names the setting.

use std::net::SocketAddr;

use infergate_policy::HostMatcher;
use infergate_types::{RATE_SPEC_ACCEPTED, RateSpec};
use ipnet::IpNet;

use crate::ConfigError;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const BOOL_ACCEPTED: &str = "true, false, 1, 0, yes, no, on or off";

pub fn boolean(setting: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::invalid(setting, value, BOOL_ACCEPTED)),
    }
}

pub fn rate(setting: &str, value: &str) -> Result<RateSpec, ConfigError> {
    value
        .parse::<RateSpec>()
        .map_err(|_| ConfigError::invalid(setting, value, RATE_SPEC_ACCEPTED))
}

pub fn positive_u64(setting: &str, value: &str) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::invalid(
            setting,
            value,
            "a positive whole number",
        )),
    }
}

pub fn socket_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::invalid(setting, value, "IP:PORT, e.g. 127.0.0.1:8000 or [::]:8000")
    })
}

/// A list given either as JSON (`["a","b"]`, as pydantic settings read them) or comma-separated.
pub fn list(setting: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(trimmed).map_err(|_| {
            ConfigError::invalid(
                setting,
                value,
                "a JSON list of strings or a comma-separated list",
            )
        });
    }
    Ok(trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// `TRUSTED_HOSTS`: host names, `*.domain` wildcards or `*`; an empty list would refuse every
/// request, so it is an error too.
pub fn hosts(setting: &str, values: &[String]) -> Result<HostMatcher, ConfigError> {
    const ACCEPTED: &str = "host names, *.domain wildcards, or * for any host";
    if values.is_empty() {
        return Err(ConfigError::invalid(setting, "(empty)", ACCEPTED));
    }
    HostMatcher::new(values)
        .map_err(|e| ConfigError::invalid(setting, values.join(","), format!("{e}: {ACCEPTED}")))
}

pub fn cidrs(setting: &str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::invalid(
                        setting,
                        v,
                        "CIDRs or addresses, e.g. 10.0.0.0/8, 127.0.0.1",
                    )
                })
        })
        .collect()
}

/// An `http://host:port[/base]` upstream URL (the proxy speaks plain HTTP/1.1 to the model server).
pub fn upstream_url(setting: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim().trim_end_matches('/');
    let accepted = "an http:// URL with a host, e.g. http://127.0.0.1:9000";
    let rest = v
        .strip_prefix("http://")
        .ok_or_else(|| ConfigError::invalid(setting, value, accepted))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(ConfigError::invalid(setting, value, accepted));
    }
    Ok(v.to_string())
}

/// Reads a YAML configuration file (empty = all defaults). Returns the document and the file's
/// directory, which relative paths inside it are resolved against; `None` gives the defaults and
/// an empty base (the working directory).
pub fn yaml_file<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<(T, PathBuf), ConfigError> {
    let Some(p) = path else {
        return Ok((T::default(), PathBuf::new()));
    };
    let file_error = |detail: String| ConfigError::File {
        path: p.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(p).map_err(|e| file_error(e.to_string()))?;
    let doc = if text.trim().is_empty() {
        T::default()
    } else {
        serde_yaml::from_str(&text).map_err(|e| file_error(e.to_string().replace('\n', " ")))?
    };
    Ok((doc, p.parent().map(Path::to_path_buf).unwrap_or_default()))
}

/// Serializes a duration as whole seconds (for `check-config` output).
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Serializes a duration as milliseconds.
pub fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_json_or_commas() {
        assert_eq!(list("X", "a, b,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(list("X", r#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert!(list("X", "[broken").is_err());
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(upstream_url("U", "http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            upstream_url("U", "http://h:1/base").unwrap(),
            "http://h:1/base"
        );
        assert!(upstream_url("U", "ftp://h").is_err());
        assert!(upstream_url("U", "http://").is_err());
    }

    #[test]
    fn booleans_and_numbers() {
        assert!(boolean("B", "Yes").unwrap());
        assert!(!boolean("B", "off").unwrap());
        assert!(boolean("B", "maybe").is_err());
        assert!(positive_u64("N", "0").is_err());
        assert!(positive_u64("N", "-5").is_err());
        assert_eq!(positive_u64("N", "7").unwrap(), 7);
    }
}
