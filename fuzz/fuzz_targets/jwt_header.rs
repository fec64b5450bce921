#![no_main]
//! JWT header parsing, as the gateway meets a bearer token: the shape check, then the header.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if infergate_tokens::looks_like_jwt(s) {
        let _ = jsonwebtoken::decode_header(s);
    }
});
