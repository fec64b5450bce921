#![no_main]
//! The API-key format (`prefix_id_secret_checksum`): parsing never panics, and what parses is a key
//! of the documented shape.
use infergate_keystore::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if format::parse(s).is_ok() {
        assert!(format::looks_like_key(s));
    }
});
