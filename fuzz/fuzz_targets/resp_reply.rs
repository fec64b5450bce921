#![no_main]
//! The Redis reply parser (RESP2) the limiter's own connections read with: whatever the server,
//! or anything posing as it, sends, parsing never panics, and a declared size reserves nothing
//! before its bytes arrive. The connection reads in pieces and parses again from the same place,
//! so a whole reply must be recognised at the same length however it was cut: every shorter
//! prefix of it is incomplete, and the reply alone parses to the same length.
use infergate_ratelimit::redis::parse_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(used)) = parse_reply(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len(), "{used} of {} bytes", data.len());
    assert_eq!(parse_reply(&data[..used]), Ok(Some(used)));
    // Every cut of a short reply; a long one at most 512 cuts apart (each parse reads it whole).
    let step = (used / 512).max(1);
    for cut in (0..used).step_by(step).chain([used - 1]) {
        assert_eq!(parse_reply(&data[..cut]), Ok(None), "cut at {cut} of {used}");
    }
});
