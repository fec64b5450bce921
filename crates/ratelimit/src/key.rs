//! Bucket identities.
//!
//! A key is built on every request, so it holds only inline data (`IpAddr`)
//! and `Arc<str>` handles that the caller already owns: building one costs a
//! reference-count increment, never a heap allocation.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::RateSpec;

/// What a limit is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Per client IP address.
    Ip,
    /// Per API key.
    Key,
    /// Per role shared by several keys.
    Role,
    /// Per route template, for a given subject.
    Endpoint,
    /// Tokens per key in a sliding window (`tokens_per_minute`).
    Tokens,
    /// Tokens per key in a daily quota (`tokens_per_day`), a fixed window.
    TokensDaily,
    /// Requests in flight per key (`max_concurrent`): leases, not a window.
    Concurrency,
}

impl Dimension {
    /// Stable lowercase name, used in key names, headers and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Key => "key",
            Self::Role => "role",
            Self::Endpoint => "endpoint",
            Self::Tokens => "tokens",
            Self::TokensDaily => "tokens_daily",
            Self::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is being counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address.
    Ip(IpAddr),
    /// An API key's id. Never the secret: key names end up in logs and in a
    /// shared backend's key space.
    Key(Arc<str>),
    /// A role name.
    Role(Arc<str>),
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Self::Ip(_) => "ip",
            Self::Key(_) => "key",
            Self::Role(_) => "role",
        }
    }
}

/// Appends `s` with `%` and `:` percent-escaped, so that `:` can separate the
/// parts of a [`BucketKey`] name unambiguously whatever a key id, role or
/// route template contains.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    while let Some(pos) = memchr::memchr2(b':', b'%', rest) {
        out.extend_from_slice(&rest[..pos]);
        out.extend_from_slice(if rest[pos] == b':' { b"%3A" } else { b"%25" });
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
}

/// Appends an address as `IpAddr`'s `Display` writes it. IPv4 digit by digit: a Redis-limited
/// request names its client in a key on every call, and `core::fmt` costs several times this.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        // `::` compression and embedded IPv4 forms are std's to decide.
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Text a name writer produced (every part is a `&str`), for the `Display` impls.
fn write_name(f: &mut fmt::Formatter<'_>, write: impl FnOnce(&mut Vec<u8>)) -> fmt::Result {
    let mut name = Vec::with_capacity(64);
    write(&mut name);
    f.write_str(std::str::from_utf8(&name).map_err(|_| fmt::Error)?)
}

impl Subject {
    /// Appends the subject as a key name writes it: `ip:203.0.113.9`, `key:abc%3A1`.
    pub fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.kind().as_bytes());
        out.push(b':');
        match self {
            Self::Ip(ip) => push_ip(out, *ip),
            Self::Key(id) | Self::Role(id) => push_escaped(out, id),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(f, |out| self.write_name(out))
    }
}

/// Identifies one bucket (together with the period of the spec it is checked
/// against: a backend keeps separate buckets for, say, `10/second` and
/// `1000/hour` on the same key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// Which configured limit this bucket serves.
    pub dimension: Dimension,
    /// Who is counted.
    pub subject: Subject,
    /// Route template for endpoint limits; `None` for global ones.
    pub scope: Option<Arc<str>>,
}

impl BucketKey {
    /// A key for a limit counted per subject across all routes.
    pub fn new(dimension: Dimension, subject: Subject) -> Self {
        Self {
            dimension,
            subject,
            scope: None,
        }
    }

    /// A key for an endpoint limit: `subject` counted on the route `scope`.
    pub fn endpoint(scope: Arc<str>, subject: Subject) -> Self {
        Self {
            dimension: Dimension::Endpoint,
            subject,
            scope: Some(scope),
        }
    }

    /// Per-IP key.
    pub fn ip(ip: IpAddr) -> Self {
        Self::new(Dimension::Ip, Subject::Ip(ip))
    }

    /// Per-API-key key (`id` is the key's id, never its secret).
    pub fn key(id: Arc<str>) -> Self {
        Self::new(Dimension::Key, Subject::Key(id))
    }

    /// Per-role key.
    pub fn role(role: Arc<str>) -> Self {
        Self::new(Dimension::Role, Subject::Role(role))
    }
}

impl BucketKey {
    /// Appends the key's backend name: `ip:203.0.113.9`, `key:abc123`,
    /// `endpoint:/inference:key:abc123`. The dimension is omitted when it
    /// equals the subject's kind; `:` and `%` inside ids, roles and scopes are
    /// percent-escaped so distinct keys always render differently. Bytes, not
    /// `core::fmt`: the Redis backend names every bucket of every call.
    pub fn write_name(&self, out: &mut Vec<u8>) {
        let dimension = self.dimension.as_str();
        match &self.scope {
            Some(scope) => {
                out.extend_from_slice(dimension.as_bytes());
                out.push(b':');
                push_escaped(out, scope);
                out.push(b':');
            }
            None if dimension == self.subject.kind() => {}
            None => {
                out.extend_from_slice(dimension.as_bytes());
                out.push(b':');
            }
        }
        self.subject.write_name(out);
    }
}

/// The key's backend name ([`BucketKey::write_name`]).
impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(f, |out| self.write_name(out))
    }
}

/// One limit to enforce on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitCheck {
    /// The bucket counted.
    pub key: BucketKey,
    /// The limit applied to it.
    pub spec: RateSpec,
    /// Units this request takes: 1 for a request count, the reservation for a token limit.
    pub cost: u64,
    /// `Some`: a fixed-window quota whose windows start this many milliseconds after the
    /// epoch-aligned ones (a daily budget resetting at a configured UTC hour); `None`: the
    /// sliding window every request limit uses.
    pub fixed_offset_ms: Option<u64>,
    /// A shadow limit is counted and reported (its status says whether it would have
    /// refused) but never refuses: how a new limit is rolled out safely.
    pub shadow: bool,
}

impl LimitCheck {
    /// Pairs a bucket with its limit: one unit, sliding window.
    pub fn new(key: BucketKey, spec: RateSpec) -> Self {
        Self {
            key,
            spec,
            cost: 1,
            fixed_offset_ms: None,
            shadow: false,
        }
    }

    /// The same check in shadow mode (`shadow == true`) or enforced.
    pub fn shadowed(self, shadow: bool) -> Self {
        Self { shadow, ..self }
    }

    /// The same check taking `cost` units.
    pub fn costing(self, cost: u64) -> Self {
        Self { cost, ..self }
    }

    /// The same check as a fixed-window quota with boundaries `offset_ms` past the
    /// epoch-aligned ones.
    pub fn fixed(self, offset_ms: u64) -> Self {
        Self {
            fixed_offset_ms: Some(offset_ms),
            ..self
        }
    }

    /// The same check with another limit (the fallback's per-replica share), cost and window
    /// kept.
    pub fn with_spec(&self, spec: RateSpec) -> Self {
        Self {
            spec,
            ..self.clone()
        }
    }

    pub(crate) fn grid(&self) -> crate::window::Grid {
        crate::window::Grid {
            period_ms: self.spec.period_ms(),
            fixed_offset_ms: self.fixed_offset_ms,
        }
    }
}
