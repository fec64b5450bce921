//! The deterministic "model": word pieces, truncation, embeddings and stable ids.

use sha2::{Digest, Sha256};

/// Splits text into word pieces where every piece after the first carries the whitespace that
/// preceded it, so concatenating the pieces (as a streaming client does) reproduces the text
/// exactly. Leading whitespace stays with the first piece, trailing whitespace with the last.
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    let mut seen_word = false;
    // Where the whitespace run before the current position began: the next piece starts there.
    let mut gap_start = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                gap_start = i;
            }
            in_word = false;
        } else if !in_word {
            if seen_word {
                out.push(&text[start..gap_start]);
                start = gap_start;
            }
            in_word = true;
            seen_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The echo reply, cut to at most `max_tokens` pieces. Returns the text, its piece count and
/// whether it was cut (OpenAI reports that as `finish_reason: "length"`).
pub(crate) fn echo_reply(input: &str, max_tokens: Option<u64>) -> (String, usize, bool) {
    let full = format!("echo: {input}");
    let all = pieces(&full);
    let limit = max_tokens.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    if all.len() <= limit {
        let n = all.len();
        return (full, n, false);
    }
    let kept: String = all[..limit].concat();
    (kept, limit, true)
}

/// `n` tokens of filler (`t1 t2 …`), one piece each.
pub(crate) fn forced_reply(n: usize) -> String {
    (1..=n)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Token accounting for `usage`: whitespace-separated words, which is all a dev server needs.
pub(crate) fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

pub(crate) const EMBEDDING_DIMS: usize = 16;

/// A unit-length vector derived from SHA-256 of the input: stable across runs and machines, and
/// different inputs give (practically always) different vectors, which is what similarity-based
/// demos need.
pub(crate) fn embedding(input: &str) -> [f32; EMBEDDING_DIMS] {
    let digest = Sha256::digest(input.as_bytes());
    let mut raw = [0f64; EMBEDDING_DIMS];
    for (slot, pair) in raw.iter_mut().zip(digest.chunks_exact(2)) {
        let x = f64::from(u16::from_be_bytes([pair[0], pair[1]]));
        *slot = x / f64::from(u16::MAX) * 2.0 - 1.0;
    }
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut out = [0f32; EMBEDDING_DIMS];
    for (o, x) in out.iter_mut().zip(raw) {
        // A zero norm would need an all-0x7fff/0x8000 digest; fall back to the raw values
        // rather than dividing by zero.
        let v = if norm > 0.0 { x / norm } else { x };
        #[allow(clippy::cast_possible_truncation)]
        {
            *o = v as f32;
        }
    }
    out
}

/// Standard base64 of the little-endian f32s, which is what the OpenAI SDKs request by default
/// (`encoding_format: "base64"`) and decode client-side.
pub(crate) fn embedding_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Response ids are a hash of the request body so that identical requests get identical
/// responses (the determinism contract excludes only `created`).
pub(crate) fn stable_id(prefix: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_roundtrip_exactly() {
        for text in [
            "echo: hello  world ",
            "  lead",
            "one",
            "",
            "a\tb\nc",
            "echo: ",
        ] {
            assert_eq!(pieces(text).concat(), text);
        }
        assert_eq!(pieces("echo: hi there"), vec!["echo:", " hi", " there"]);
    }

    #[test]
    fn truncation_counts_pieces() {
        assert_eq!(
            echo_reply("a b c", Some(2)),
            ("echo: a".to_owned(), 2, true)
        );
        assert_eq!(echo_reply("a b", None), ("echo: a b".to_owned(), 3, false));
        assert_eq!(echo_reply("a", Some(0)), (String::new(), 0, true));
    }

    #[test]
    fn embeddings_are_unit_length_and_stable() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hello!"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
