//! Request and trace ids, drawn from a userspace CSPRNG: rand's `ThreadRng` (ChaCha12, one per
//! thread, seeded from the OS and reseeded from it every 64 KiB of output). The gateway makes a
//! request id and a trace context for every request; a `getrandom(2)` for each (what
//! `Uuid::new_v4` does) was a syscall or three per request.
//!
//! Ids are unpredictable (they are not secrets, but a guessable trace id lets a client splice
//! its spans into another request's trace), and formatted into stack buffers: the only
//! allocation is the value handed out.

use std::sync::Arc;

use actix_web::http::header::HeaderValue;
use rand::Rng;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// A fresh random (version 4) UUID, hyphenated lower case: the request id of a request that
/// brought none.
pub fn request_id() -> Arc<str> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*id.hyphenated().encode_lower(&mut buf))
}

/// A fresh W3C `traceparent` (`00-<trace id>-<parent id>-01`, sampled) for a request that
/// continues no trace, with traces off: the upstream's logs can still be joined to ours.
pub fn traceparent() -> HeaderValue {
    let mut ids = [0u8; 24];
    rand::rng().fill_bytes(&mut ids);
    // All-zero ids are invalid; one bit makes sure (the odds of needing it are 2^-128).
    ids[15] |= 1;
    ids[23] |= 1;
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex_into(&ids[..16], &mut out[3..35]);
    hex_into(&ids[16..], &mut out[36..52]);
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceparent_trace_id;

    #[test]
    fn request_ids_are_v4_uuids_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(&*a, parsed.hyphenated().to_string());
    }

    #[test]
    fn traceparents_are_valid_and_differ() {
        let a = traceparent();
        let b = traceparent();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 55);
        let trace = traceparent_trace_id(s).unwrap();
        assert_eq!(trace, &s[3..35]);
        assert!(s.ends_with("-01"), "{s}");
    }
}
