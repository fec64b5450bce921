#![no_main]
//! Path normalisation: an accepted path has no dot segment, `;` parameter or control character.
use infergate_gateway::path::decode_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(decoded) = decode_path(raw) {
        for seg in decoded.split(['/', '\\']) {
            assert!(!seg.contains(';'));
            assert!(seg.trim() != "." && seg.trim() != "..");
        }
        assert!(!decoded.chars().any(char::is_control));
    }
});
