//! Trusted-host matching: which `Host` headers a service answers (`TRUSTED_HOSTS`). Pure string
//! work, so configuration parses the list into a [`HostMatcher`] once and hands it over.

/// A parsed `TRUSTED_HOSTS` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostMatcher {
    /// The patterns as configured (trimmed), for `check-config` and error messages.
    patterns: Vec<String>,
    any: bool,
    exact: Vec<String>,
    /// Suffixes including the dot: `*.example.com` is stored as `.example.com`.
    wildcard: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host pattern {0:?} is not a host name, an IP address, *.domain or *")]
pub struct HostPatternError(pub String);

fn valid_host_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
}

impl HostMatcher {
    /// Parses patterns: `*` (any host), `*.example.com`, or an exact name / IP address.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, HostPatternError> {
        let mut m = HostMatcher::default();
        for p in patterns {
            m.patterns.push(p.as_ref().trim().to_string());
            let p = p.as_ref().trim().to_ascii_lowercase();
            let p = p.trim_start_matches('[').trim_end_matches(']').to_string();
            if p == "*" {
                m.any = true;
            } else if let Some(suffix) = p.strip_prefix("*.") {
                if !valid_host_chars(suffix) || suffix.contains('*') {
                    return Err(HostPatternError(p));
                }
                m.wildcard.push(format!(".{suffix}"));
            } else if valid_host_chars(&p) {
                m.exact.push(p);
            } else {
                return Err(HostPatternError(p));
            }
        }
        Ok(m)
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Checks a `Host` header value; the port is ignored, names compare case-insensitively.
    pub fn allows(&self, host_header: &str) -> bool {
        if self.any {
            return true;
        }
        let host = strip_port(host_header.trim());
        if host.is_empty() {
            return false;
        }
        self.exact.iter().any(|e| e.eq_ignore_ascii_case(host))
            || self.wildcard.iter().any(|suffix| {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            })
    }
}

impl serde::Serialize for HostMatcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.patterns.serialize(s)
    }
}

/// `example.com:8000` → `example.com`; `[::1]:8000` → `::1`; a bare IPv6 address stays whole.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        // More than one colon without brackets is a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wildcard_port_and_case() {
        let m = HostMatcher::new(&["localhost", "*.example.com", "127.0.0.1", "::1"]).unwrap();
        assert!(m.allows("localhost:8000"));
        assert!(m.allows("LOCALHOST"));
        assert!(m.allows("api.example.com"));
        assert!(m.allows("a.b.example.com:443"));
        assert!(!m.allows("example.com"));
        assert!(!m.allows("evil-example.com"));
        assert!(!m.allows("example.com.evil.net"));
        assert!(m.allows("127.0.0.1:9"));
        assert!(m.allows("[::1]:8000"));
        assert!(!m.allows(""));
        assert!(!m.allows("attacker.net"));
    }

    #[test]
    fn star_allows_everything_and_bad_patterns_fail() {
        assert!(HostMatcher::new(&["*"]).unwrap().allows("anything"));
        assert!(HostMatcher::new(&["bad host"]).is_err());
        assert!(HostMatcher::new(&["*.*.com"]).is_err());
    }
}
