//! What of a Redis connection string may be shown, and scrubbing its secrets from messages: the
//! URL's password (as written and as decoded) never reaches an error or a log.

/// What may be shown of the connection string, and what must be scrubbed from messages.
#[derive(Clone)]
pub(crate) struct Redaction {
    pub(crate) masked_url: String,
    /// The password as written in the URL and as decoded; never empty strings.
    secrets: Vec<String>,
}

impl Redaction {
    pub(crate) fn new(url: &str) -> Self {
        let mut secrets = Vec::new();
        let masked_url = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                // The last '@' ends the userinfo: a password may itself contain '@'.
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let shown_user = match userinfo.split_once(':') {
                            Some((user, password)) => {
                                secrets.push(password.to_string());
                                format!("{user}:***")
                            }
                            // A lone userinfo part may be a password (`redis://secret@host`).
                            None => {
                                secrets.push(userinfo.to_string());
                                "***".to_string()
                            }
                        };
                        format!("{scheme}://{shown_user}@{host}{tail}")
                    }
                    None => url.to_string(),
                }
            }
            // Not a URL (a bare host or a socket path): it cannot carry credentials.
            None => url.to_string(),
        };
        Self {
            masked_url,
            secrets,
        }
    }

    pub(crate) fn add_secret(&mut self, secret: Option<&str>) {
        if let Some(s) = secret {
            self.secrets.push(s.to_string());
        }
    }

    /// Removes every known secret from a message (an error may echo what it was given).
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}
