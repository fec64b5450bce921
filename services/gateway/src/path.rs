//! The request path, decoded once and checked, so that what is routed and authorised is what the
//! upstream will act on.
//!
//! Traversal filters that pattern-match the raw path miss the forms servers disagree on:
//! `..;/` (Tomcat's path parameters), overlong UTF-8 (`%c0%ae`), full-width dots (`%ef%bc%8e`),
//! IIS's `%u002e`, trailing spaces (`..%20`), and layers of encoding (`%252e`). Instead of
//! listing them, the path is decoded exactly once and refused if any of these hold:
//!
//! - a `%` not followed by two hex digits (`%u002e`, a lone `%`);
//! - the decoded bytes are not valid UTF-8 (this refuses every overlong form), or hold a control
//!   character;
//! - the decoded path still holds a percent-encoding (double encoding: an upstream that decodes
//!   again would see another path than the one checked);
//! - an encoded separator (`%2f`, `%5c`): the gateway and the upstream would split it differently;
//! - a segment (split at `/` and `\`) holding `;`, or made of nothing but dots and white space,
//!   counting the Unicode dot look-alikes some stacks fold to `.`.
//!
//! The gateway forwards the path bytes exactly as received; once these checks pass, decoding them
//! once (what every HTTP server does) gives exactly the decoded path that was routed and
//! authorised.

use std::borrow::Cow;

/// Why a path was refused (the `category` of the `suspicious_input` error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    BadEncoding,
    InvalidUtf8,
    ControlCharacter,
    DoubleEncoding,
    EncodedSeparator,
    DotSegment,
    SegmentParameter,
}

impl PathError {
    pub fn category(self) -> &'static str {
        match self {
            PathError::BadEncoding => "invalid percent-encoding",
            PathError::InvalidUtf8 => "invalid or overlong UTF-8",
            PathError::ControlCharacter => "control character",
            PathError::DoubleEncoding => "path traversal (double percent-encoding)",
            PathError::EncodedSeparator => "path traversal (encoded path separator)",
            PathError::DotSegment => "path traversal",
            PathError::SegmentParameter => "path traversal (a ; parameter in a path segment)",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters some stacks normalise to `.` (NFKC or "best fit" mappings).
fn is_dot_like(c: char) -> bool {
    matches!(
        c,
        '.' | '\u{FF0E}' | '\u{2024}' | '\u{FE52}' | '\u{3002}' | '\u{FF61}' | '\u{0701}'
    )
}

fn is_dot_segment(seg: &str) -> bool {
    let mut dots = 0;
    for c in seg.chars() {
        if is_dot_like(c) {
            dots += 1;
        } else if !c.is_whitespace() {
            return false;
        }
    }
    dots > 0
}

/// Decodes `raw` once and checks it; returns the decoded path (borrowed when nothing was encoded).
pub fn decode_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    let decoded: Cow<'_, str> = if !bytes.contains(&b'%') {
        Cow::Borrowed(raw)
    } else {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEncoding);
                };
                let b = h << 4 | l;
                if b == b'/' || b == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                out.push(b);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        Cow::Owned(String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)?)
    };
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if matches!(decoded, Cow::Owned(_)) {
        let d = decoded.as_bytes();
        if d.windows(3)
            .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
        {
            return Err(PathError::DoubleEncoding);
        }
    }
    for seg in decoded.split(['/', '\\']) {
        if seg.contains(';') {
            return Err(PathError::SegmentParameter);
        }
        if is_dot_segment(seg) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for p in [
            "/",
            "/v1/chat/completions",
            "/v1/models/meta-llama/Llama-3.1-8B",
            "/v1/files/file-abc123/content",
            "/v1/models/",
            "/docs/docs.js",
            "/v1/models/v1.5",
            "/v1/models/a..b",
        ] {
            assert_eq!(decode_path(p).as_deref(), Ok(p), "{p}");
        }
        assert_eq!(
            decode_path("/v1/models/caf%C3%A9%20x").as_deref(),
            Ok("/v1/models/café x")
        );
        assert_eq!(decode_path("/inf%65rence").as_deref(), Ok("/inference"));
    }

    #[test]
    fn every_traversal_form_is_refused() {
        use PathError::*;
        let cases = [
            ("/v1/../models/load", DotSegment),
            ("/v1/./models", DotSegment),
            ("/v1/..", DotSegment),
            ("/v1/..;/models/load", SegmentParameter),
            ("/v1/%2e%2e;/models/load", SegmentParameter),
            ("/v1/..%3b/models/load", SegmentParameter),
            ("/v1/%2e%2e/models/load", DotSegment),
            ("/v1/%2E%2E/models/load", DotSegment),
            ("/v1/%c0%ae%c0%ae/models/load", InvalidUtf8),
            ("/v1/%e0%80%ae%e0%80%ae/models/load", InvalidUtf8),
            ("/v1/%ef%bc%8e%ef%bc%8e/models/load", DotSegment),
            ("/v1/%u002e%u002e/models/load", BadEncoding),
            ("/v1/..%20/models/load", DotSegment),
            ("/v1/..%09/models/load", ControlCharacter),
            ("/v1/%252e%252e/models/load", DoubleEncoding),
            ("/v1/%25252e%25252e/models/load", DoubleEncoding),
            ("/v1/%2525252e%2525252e/models/load", DoubleEncoding),
            ("/v1/..%2fmodels", EncodedSeparator),
            ("/v1/..%5cmodels", EncodedSeparator),
            ("/v1/..\\models", DotSegment),
            ("/v1/%00", ControlCharacter),
            ("/v1/%", BadEncoding),
            ("/v1/%zz", BadEncoding),
            ("/v1/models;jsessionid=1", SegmentParameter),
            ("/v1/ ./models", DotSegment),
            ("/v1/.\u{b}/models", ControlCharacter),
            ("/v1/%7f", ControlCharacter),
            ("/v1/%c2%85", ControlCharacter),
            ("/v1/caf%C3%A9/../x", DotSegment),
            ("/v1/caf%C3%A9/a;b", SegmentParameter),
            ("/v1/\u{3002}\u{3002}/x", DotSegment),
        ];
        for (p, want) in cases {
            assert_eq!(decode_path(p), Err(want), "{p}");
        }
    }
}
