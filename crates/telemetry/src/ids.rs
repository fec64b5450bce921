//! Request and trace ids, drawn from a userspace CSPRNG: rand's `ThreadRng` (ChaCha12, one per
//! thread, seeded from the OS and reseeded from it every 64 KiB of output). The gateway makes a
//! request id and a trace context for every request; a `getrandom(2)` for each (what
//! `Uuid::new_v4` does) was a syscall or three per request.
//!
//! Ids are unpredictable (they are not secrets, but a guessable trace id lets a client splice
//! its spans into another request's trace), and hex-encoded by uuid's encoder into stack
//! buffers: the only allocation is the value handed out.

use std::sync::Arc;

use rand::Rng;

/// A fresh random (version 4) UUID, hyphenated lower case: the request id of a request that
/// brought none.
pub fn request_id() -> Arc<str> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*id.hyphenated().encode_lower(&mut buf))
}

/// A random 64-bit id (a concurrency lease's): unique across replicas without coordination.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// A fresh W3C `traceparent` (`00-<trace id>-<parent id>-01`, sampled) for a request that
/// continues no trace, with traces off: the upstream's logs can still be joined to ours.
pub fn traceparent() -> Traceparent {
    let mut ids = [0u8; 32];
    rand::rng().fill_bytes(&mut ids);
    // All-zero ids are invalid; one bit makes sure (the odds of needing it are 2^-128).
    ids[15] |= 1;
    ids[23] |= 1;
    let (trace, parent) = ids.split_at(16);
    // uuid's lower-case hex encoder; the parent id is the first 16 digits of the second half.
    let (mut t, mut p) = (uuid::Uuid::encode_buffer(), uuid::Uuid::encode_buffer());
    let trace = uuid::Uuid::from_slice(trace).unwrap_or_default();
    let parent = uuid::Uuid::from_slice(parent).unwrap_or_default();
    let trace = trace.simple().encode_lower(&mut t);
    let parent = &parent.simple().encode_lower(&mut p)[..16];
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    out[3..35].copy_from_slice(trace.as_bytes());
    out[36..52].copy_from_slice(parent.as_bytes());
    Traceparent(out)
}

/// A `traceparent` value made by [`traceparent`], on the stack: the caller copies it into the
/// header map it sends (no value made and copied again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traceparent([u8; 55]);

impl Traceparent {
    pub fn as_str(&self) -> &str {
        // Always ASCII: the template and lower-case hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
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
        let s = a.as_str();
        assert_eq!(s.len(), 55);
        let trace = traceparent_trace_id(s).unwrap();
        assert_eq!(trace, &s[3..35]);
        assert!(s.ends_with("-01"), "{s}");
    }
}
