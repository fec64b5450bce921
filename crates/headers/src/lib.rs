//! Response hardening shared by every HTTP service: security headers and CORS (the trusted-host
//! list is policy: `infergate_policy::HostMatcher`).
//!
//! - [`SecurityHeaders`]: the header set added to every response, built once at startup so the hot
//!   path only clones pre-validated `HeaderValue`s (a reference-count bump each, no parsing).
//! - [`CorsPolicy`]: the CORS policy from configured origins, its header values built once.
//! - [`formatted`]: a header value formatted on the stack, for values that change per response;
//!   [`Text`] puts one together from strings and integers without `core::fmt`, for the values
//!   every response carries.
//!
//! With `infergate-service` (the chassis), the only library crates that know actix-web: the header
//! types are its. A crate of its own so the header set and CORS policy are one value both
//! services build once, and the libraries below stay framework-free.
#![forbid(unsafe_code)]

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A header value formatted into a stack buffer, for values computed per response (timings,
/// rate-limit state): `formatted(format_args!("{}.{:06}", s, us))` without the `String` that
/// `format!` would allocate. Longer than 96 bytes, or not a valid header value: empty. Callers
/// format numbers and fixed names, far below that.
pub fn formatted(args: std::fmt::Arguments<'_>) -> HeaderValue {
    use std::io::Write;
    const CAP: usize = 96;
    let mut buf = [0u8; CAP];
    let mut rest = &mut buf[..];
    let len = match rest.write_fmt(args) {
        Ok(()) => CAP - rest.len(),
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header value put together on the stack from strings and integers, for the values every
/// response carries (`X-Process-Time`, the remaining count in `RateLimit`). [`formatted`] goes
/// through `core::fmt` (~700 instructions a value under callgrind); this writes the digits
/// directly (itoa). Past [`Text::CAP`] bytes the value is empty, as [`formatted`]'s is.
pub struct Text {
    buf: [u8; Self::CAP],
    len: usize,
    overflow: bool,
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl Text {
    pub const CAP: usize = 96;

    pub const fn new() -> Self {
        Text {
            buf: [0; Self::CAP],
            len: 0,
            overflow: false,
        }
    }

    pub fn str(mut self, s: &str) -> Self {
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(slot) => {
                slot.copy_from_slice(s.as_bytes());
                self.len += s.len();
            }
            None => self.overflow = true,
        }
        self
    }

    pub fn u64(self, n: u64) -> Self {
        self.str(itoa::Buffer::new().format(n))
    }

    /// `n` in at least `width` digits, zero-padded (`{:06}`).
    pub fn u64_padded(mut self, n: u64, width: usize) -> Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n);
        for _ in digits.len()..width {
            self = self.str("0");
        }
        self.str(digits)
    }

    pub fn value(&self) -> HeaderValue {
        let bytes = if self.overflow {
            &[][..]
        } else {
            self.buf.get(..self.len).unwrap_or_default()
        };
        HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The script and stylesheet of the self-hosted API docs page, shared by every service (each
/// serves its own `docs.html` and `/openapi.json`). They work offline under [`CSP_DOCS`].
pub const DOCS_JS: &str = include_str!("../static/docs.js");
pub const DOCS_CSS: &str = include_str!("../static/docs.css");

/// Strict policy for JSON API responses: nothing may be loaded, framed or used as a base.
pub const CSP_API: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Relaxed only as far as the self-hosted docs page needs: its own script, style and the spec.
pub const CSP_DOCS: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The security headers, pre-built.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    common: Vec<(HeaderName, HeaderValue)>,
    csp_api: HeaderValue,
    csp_docs: HeaderValue,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl SecurityHeaders {
    pub fn new() -> Self {
        let common = vec![
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::X_XSS_PROTECTION,
                HeaderValue::from_static("1; mode=block"),
            ),
            (
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("geolocation=(), microphone=(), camera=()"),
            ),
        ];
        Self {
            common,
            csp_api: HeaderValue::from_static(CSP_API),
            csp_docs: HeaderValue::from_static(CSP_DOCS),
        }
    }

    /// Adds the headers to a response. `docs_page` selects the relaxed CSP. Headers an upstream
    /// already set are overwritten: the gateway's policy is the one that holds.
    pub fn apply(&self, headers: &mut HeaderMap, docs_page: bool) {
        for (name, value) in &self.common {
            headers.insert(name.clone(), value.clone());
        }
        let csp = if docs_page {
            &self.csp_docs
        } else {
            &self.csp_api
        };
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
}

/// The CORS policy from configured origins, its header values built once. The gateway's CORS
/// layer (`services/gateway/src/pipeline/cors.rs`) applies it; written here rather than taken
/// from actix-cors, whose middleware boxed every request's future, re-checked the origin and
/// re-inserted the same header set on every response (about 3 % of a proxied request's CPU,
/// docs/performance.md), and answered foreign preflights in its own error shape.
#[derive(Clone, Debug)]
pub struct CorsPolicy {
    origins: Vec<String>,
    any_origin: bool,
    credentials: Option<HeaderValue>,
    methods: HeaderValue,
    expose: HeaderValue,
    max_age: HeaderValue,
}

/// The methods a preflight is told; a browser refuses the others itself.
const CORS_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";

/// The response headers a browser script may read: request id, timing, every rate-limit header.
const CORS_EXPOSE: &str = "x-request-id, x-process-time, x-ratelimit-limit, \
x-ratelimit-remaining, x-ratelimit-reset, x-ratelimit-limit-requests, \
x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, \
x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-ratelimit-shadow, ratelimit, \
ratelimit-policy, retry-after";

impl CorsPolicy {
    /// `origins` as configured (`*` allows any, answered `*`); none: no cross-origin caller.
    pub fn new(origins: &[String], allow_credentials: bool, max_age_secs: usize) -> Self {
        CorsPolicy {
            any_origin: origins.iter().any(|o| o == "*"),
            origins: origins.to_vec(),
            credentials: allow_credentials.then(|| HeaderValue::from_static("true")),
            methods: HeaderValue::from_static(CORS_METHODS),
            expose: HeaderValue::from_static(CORS_EXPOSE),
            max_age: HeaderValue::from(max_age_secs as u64),
        }
    }

    /// Whether any origin is allowed at all (else the layer only refuses preflights).
    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// Whether `origin` may call: listed (ASCII case-insensitively, as origins compare) or `*`.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer's headers to a preflight from an allowed `origin`: the origin, the methods, the
    /// requested headers echoed (any header may be sent), credentials, max age.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        requested: Option<&HeaderValue>,
        out: &mut HeaderMap,
    ) {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        if let Some(h) = requested {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        if let Some(c) = &self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, c.clone());
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        out.append(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
    }

    /// Decorates an actual response. An allowed `origin` is told so, with the exposed headers
    /// and credentials; with CORS on, every response varies by `Origin` (a cache must not hand
    /// one origin's answer to another).
    pub fn decorate(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        if !self.enabled() {
            return;
        }
        if let Some(origin) = origin.filter(|o| self.allows(o.as_bytes())) {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin(origin),
            );
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
            if let Some(c) = &self.credentials {
                out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, c.clone());
            }
        }
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The JSON error body every infergate service answers with:
/// `{"code", "error", "detail", "request_id", "timestamp"}`. Callers add variant-specific fields
/// (`field` on 422, `retry_after` on 429) to the returned map.
pub fn error_body(
    code: &str,
    error: &str,
    detail: &str,
    request_id: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut m = serde_json::Map::with_capacity(6);
    m.insert("code".into(), json!(code));
    m.insert("error".into(), json!(error));
    m.insert("detail".into(), json!(detail));
    m.insert("request_id".into(), json!(request_id));
    m.insert(
        "timestamp".into(),
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_values_fit_or_come_out_empty() {
        assert_eq!(formatted(format_args!("{}.{:06}", 1, 2345)), "1.002345");
        assert_eq!(formatted(format_args!("{}", "x".repeat(97))), "");
        assert_eq!(formatted(format_args!("bad\n")), "");
    }

    #[test]
    fn text_is_what_formatting_writes() {
        for (s, us) in [
            (0, 0),
            (0, 5),
            (1, 2345),
            (12, 999_999),
            (u64::MAX, 100_000),
        ] {
            assert_eq!(
                Text::new().u64(s).str(".").u64_padded(us, 6).value(),
                formatted(format_args!("{s}.{us:06}"))
            );
        }
        assert_eq!(Text::new().u64_padded(1_234_567, 6).value(), "1234567");
        assert_eq!(
            Text::new()
                .str("\"ip\";r=")
                .u64(41)
                .str(";t=")
                .u64(0)
                .value(),
            "\"ip\";r=41;t=0"
        );
        // Past the buffer, or not a valid value: empty, never a cut value.
        assert_eq!(Text::new().str(&"x".repeat(97)).value(), "");
        assert_eq!(Text::new().str(&"x".repeat(90)).u64(u64::MAX).value(), "");
        assert_eq!(
            Text::new().str(&"x".repeat(96)).value(),
            "x".repeat(96).as_str()
        );
        assert_eq!(Text::new().str("bad\n").value(), "");
    }

    #[test]
    fn applies_every_header_and_picks_the_csp() {
        let h = SecurityHeaders::new();
        let mut map = HeaderMap::new();
        h.apply(&mut map, false);
        assert_eq!(map.get("x-frame-options").unwrap(), "DENY");
        assert_eq!(map.get("content-security-policy").unwrap(), CSP_API);
        assert_eq!(map.len(), 7);
        h.apply(&mut map, true);
        assert_eq!(map.get("content-security-policy").unwrap(), CSP_DOCS);
    }
}
