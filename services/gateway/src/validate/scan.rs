//! Attack signatures in the path, query string and headers (see [`super`]): the [`Scanner`].

use std::borrow::Cow;
use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};

use percent_encoding::percent_decode_str;
use regex::RegexSet;
use siphasher::sip128::{Hasher128, SipHasher13};
use thread_local::ThreadLocal;

use crate::error::GatewayError;

const SQLI: &[&str] = &[
    r"(?i)\bunion\b[\s(/*+]+(all[\s(/*+]+)?select\b",
    r"(?i)'\s*(or|and)\s+('|\d|\w+\s*(=|like|<|>))",
    r"(?i)\bor\s+1\s*=\s*1\b",
    r"(?i);\s*(drop|delete|insert|update|alter|create|truncate|exec|execute|shutdown)\b",
    r"(?i)'\s*(--|#|/\*)",
    r"(?i)\b(drop|truncate)\s+(table|database)\b",
    r"(?i)\b(sleep|benchmark|pg_sleep)\s*\(",
    r"(?i)\bwaitfor\s+delay\b",
    r"(?i)\bxp_cmdshell\b",
    r"(?i)\binformation_schema\b",
];

const XSS: &[&str] = &[
    r"(?i)<\s*/?\s*script\b",
    r"(?i)\b(javascript|vbscript)\s*:",
    r"(?i)\bon(error|load|click|mouseover|focus|blur|submit|change|input|keydown|keyup|toggle|animationstart)\s*=",
    r"(?i)<\s*(iframe|object|embed|svg|img|body|meta|base|form)\b",
    r"(?i)\bsrcdoc\s*=",
    r"(?i)data\s*:\s*text/html",
];

const TRAVERSAL: &[&str] = &[
    r"(^|[/\\])\.\.([/\\]|$)",
    r"(?i)/etc/(passwd|shadow|hosts)\b",
    r"(?i)[a-z]:\\windows\\",
];

/// Compiled signature sets, built once.
#[derive(Debug)]
pub struct Scanner {
    /// Every signature in one set: clean input (nearly all of it) is scanned once, and only a hit
    /// pays for finding out which category it was.
    any: RegexSet,
    sqli: RegexSet,
    xss: RegexSet,
    traversal: RegexSet,
    /// Paths and header values each worker thread found clean lately ([`Seen`]).
    seen: ThreadLocal<RefCell<Seen>>,
}

/// What was scanned: the same bytes get different verdicts as a path (traversal counts) and as
/// a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Path = 0,
    Header = 1,
}

/// Slots of a thread's [`Seen`] table (a power of two: a fingerprint's low bits pick the slot).
const SEEN_SLOTS: usize = 256;

/// Values a worker thread found clean lately. A client sends the same path and the same
/// `Content-Type`, `Origin`, `User-Agent` and SDK headers on every request, and a verdict is a
/// function of the bytes alone, so a value found clean is not scanned again while it stays here.
///
/// A value is kept as a fingerprint, never as its bytes: a header the scanner reads may carry a
/// secret (`Proxy-Authorization`, an upstream's own token), which must not outlive its request
/// in memory. The fingerprint is SipHash-1-3 with a 128-bit output and a random key per thread
/// (as the memory limiter fingerprints its buckets): nobody without the key can make a value
/// that shares a clean one's fingerprint, and two values sharing one by chance is a 2^-128 event.
///
/// Direct-mapped: a fingerprint's low bits pick its slot, and a different clean value landing
/// there replaces it. Only clean verdicts are kept, so the table can save a scan but never change
/// a verdict: a flood of new values only evicts entries, each of them scanned as it would be
/// without the table. 256 slots of 32 bytes a thread.
struct Seen {
    key: (u64, u64),
    slots: Box<[Option<u128>]>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key.
        f.debug_struct("Seen").finish_non_exhaustive()
    }
}

impl Default for Seen {
    fn default() -> Self {
        // std's `RandomState` is keyed from the OS; two of its outputs make this table's key.
        let random = std::hash::RandomState::new();
        Seen {
            key: (random.hash_one(0u8), random.hash_one(1u8)),
            slots: vec![None; SEEN_SLOTS].into_boxed_slice(),
        }
    }
}

impl Seen {
    fn fingerprint(&self, kind: Kind, value: &[u8]) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.key.0, self.key.1);
        hasher.write_u8(kind as u8);
        hasher.write(value);
        hasher.finish128().as_u128()
    }

    fn slot(fingerprint: u128) -> usize {
        (fingerprint as usize) & (SEEN_SLOTS - 1)
    }

    /// `Ok` when `value` was found clean as `kind` lately, else its fingerprint, to remember
    /// once it is found clean.
    fn lookup(&self, kind: Kind, value: &[u8]) -> Result<(), u128> {
        let fingerprint = self.fingerprint(kind, value);
        if self.slots[Self::slot(fingerprint)] == Some(fingerprint) {
            Ok(())
        } else {
            Err(fingerprint)
        }
    }

    fn remember(&mut self, fingerprint: u128) {
        self.slots[Self::slot(fingerprint)] = Some(fingerprint);
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// Undoes percent-encoding until nothing changes (at most three rounds: an attacker gains nothing
/// from a fourth layer because no server in the chain decodes that often).
fn decoded(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    let mut cur: Cow<'_, str> = if plus_is_space && s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    for _ in 0..3 {
        if !cur.contains('%') {
            break;
        }
        let next = percent_decode_str(&cur).decode_utf8_lossy().into_owned();
        if next == *cur {
            break;
        }
        cur = Cow::Owned(next);
    }
    cur
}

impl Scanner {
    pub fn new() -> Self {
        let build =
            |set: &[&str]| RegexSet::new(set).unwrap_or_else(|e| panic!("built-in pattern: {e}"));
        let all: Vec<&str> = SQLI.iter().chain(XSS).chain(TRAVERSAL).copied().collect();
        Self {
            any: build(&all),
            sqli: build(SQLI),
            xss: build(XSS),
            traversal: build(TRAVERSAL),
            seen: ThreadLocal::new(),
        }
    }

    /// `scan`'s verdict on `value`, skipped for a value this thread found clean lately.
    fn judged(
        &self,
        kind: Kind,
        value: &[u8],
        scan: impl FnOnce() -> Result<(), GatewayError>,
    ) -> Result<(), GatewayError> {
        let seen = self.seen.get_or_default();
        let fingerprint = match seen.borrow().lookup(kind, value) {
            Ok(()) => return Ok(()),
            Err(fingerprint) => fingerprint,
        };
        scan()?;
        seen.borrow_mut().remember(fingerprint);
        Ok(())
    }

    fn category(&self, text: &str, traversal: bool) -> Option<&'static str> {
        if text.contains('\0') {
            return Some("NUL byte injection");
        }
        if !self.any.is_match(text) {
            return None;
        }
        if traversal && self.traversal.is_match(text) {
            return Some("path traversal");
        }
        if self.sqli.is_match(text) {
            return Some("SQL injection");
        }
        if self.xss.is_match(text) {
            return Some("cross-site scripting (XSS)");
        }
        None
    }

    /// Scans a raw request path.
    pub fn scan_path(&self, raw_path: &str) -> Result<(), GatewayError> {
        self.judged(Kind::Path, raw_path.as_bytes(), || {
            let text = decoded(raw_path, false);
            match self.category(&text, true) {
                Some(category) => Err(GatewayError::SuspiciousInput {
                    location: "path",
                    category,
                }),
                None => Ok(()),
            }
        })
    }

    /// Scans a raw query string, skipping the credential parameter (keys are checked elsewhere and
    /// must not be echoed into error paths).
    pub fn scan_query(
        &self,
        raw_query: &str,
        skip_param: Option<&str>,
    ) -> Result<(), GatewayError> {
        for pair in raw_query.split('&') {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if skip_param.is_some_and(|p| p == name) {
                continue;
            }
            let text = decoded(pair, true);
            // Traversal is a property of the request path: `?url=https://x/docs/../a` is a
            // legitimate value, and the upstream never resolves it as a path.
            if let Some(category) = self.category(&text, false) {
                return Err(GatewayError::SuspiciousInput {
                    location: "query string",
                    category,
                });
            }
        }
        Ok(())
    }

    /// Scans a header value.
    pub fn scan_header(&self, value: &[u8]) -> Result<(), GatewayError> {
        self.judged(Kind::Header, value, || {
            // Nearly every value is valid UTF-8 (ASCII): validating is cheaper than the lossy walk.
            let text = match std::str::from_utf8(value) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(value),
            };
            let text = decoded(&text, false);
            match self.category(&text, false) {
                Some(category) => Err(GatewayError::SuspiciousInput {
                    location: "headers",
                    category,
                }),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_in_paths_queries_and_headers() {
        let s = Scanner::new();
        assert!(s.scan_path("/models/../etc/passwd").is_err());
        assert!(s.scan_path("/v1/%2e%2e%2fsecret").is_err());
        assert!(s.scan_path("/v1/%252e%252e%252fsecret").is_err());
        assert!(s.scan_path("/v1/chat/completions").is_ok());
        assert!(s.scan_path("/v1/models/llama-3.1-8b").is_ok());
        assert!(s.scan_query("id=1'%20OR%20'1'='1", None).is_err());
        assert!(
            s.scan_query("q=1%20UNION%20SELECT%20password", None)
                .is_err()
        );
        assert!(s.scan_query("x=<script>alert(1)</script>", None).is_err());
        assert!(s.scan_query("x=%3Cscript%3E", None).is_err());
        assert!(
            s.scan_query("limit=10&order=desc&q=select+a+model", None)
                .is_ok()
        );
        assert!(s.scan_query("api_key=abc'--", Some("api_key")).is_ok());
        assert!(
            s.scan_header(b"text/html,application/xhtml+xml,*/*;q=0.8")
                .is_ok()
        );
        assert!(
            s.scan_header(b"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0")
                .is_ok()
        );
        assert!(
            s.scan_header(b"\"Chromium\";v=\"118\", \"Not=A?Brand\";v=\"99\"")
                .is_ok()
        );
        assert!(s.scan_header(b"<script>alert(1)</script>").is_err());
        assert!(s.scan_header(b"1; DROP TABLE users").is_err());
    }

    /// The table of values found clean saves scans, never verdicts: each value gets the verdict
    /// of a scanner that has seen nothing, however often and in whatever order values come, with
    /// far more values than slots (so entries collide and replace each other), and a value found
    /// clean as a header is still judged again as a path.
    #[test]
    fn values_seen_clean_keep_their_verdicts() {
        let s = Scanner::new();
        let mut headers: Vec<Vec<u8>> = vec![
            b"application/json".to_vec(),
            b"../../etc/passwd".to_vec(),
            b"<script>alert(1)</script>".to_vec(),
            b"1; DROP TABLE users".to_vec(),
            b"OpenAI/Python 1.54.0".to_vec(),
            vec![b'a'; 4096],
        ];
        headers.extend((0..4 * SEEN_SLOTS).map(|i| format!("value-{i}").into_bytes()));
        headers.extend((0..SEEN_SLOTS).map(|i| format!("x{i}' OR '1'='1").into_bytes()));
        let verdict = |v: &[u8]| Scanner::new().scan_header(v).is_ok();
        let expected: Vec<bool> = headers.iter().map(|v| verdict(v)).collect();
        assert!(expected.contains(&false) && expected.contains(&true));
        for round in 0..3 {
            for (i, v) in headers.iter().enumerate().rev().skip(round) {
                assert_eq!(
                    s.scan_header(v).is_ok(),
                    expected[i],
                    "round {round}, header {i}"
                );
            }
        }
        // And it does save them: a clean value just scanned is held, a refused one never.
        let held = |kind, v: &[u8]| {
            s.seen
                .get()
                .is_some_and(|t| t.borrow().lookup(kind, v).is_ok())
        };
        assert!(s.scan_header(b"application/json").is_ok());
        assert!(held(Kind::Header, b"application/json"));
        assert!(!held(Kind::Path, b"application/json"));
        assert!(s.scan_header(b"1; DROP TABLE users").is_err());
        assert!(!held(Kind::Header, b"1; DROP TABLE users"));
        // Clean as a header (traversal is a property of paths), refused as a path, both ways.
        assert!(s.scan_header(b"/v1/../admin").is_ok());
        assert!(s.scan_path("/v1/../admin").is_err());
        assert!(s.scan_path("/v1/chat/completions").is_ok());
        assert!(s.scan_header(b"/v1/chat/completions").is_ok());
        assert!(s.scan_path("/v1/../admin").is_err());
    }
}
