#![no_main]
//! The request-signature scanner over paths, query strings and header values.
use infergate_gateway::validate::Scanner;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    let s = SCANNER.get_or_init(Scanner::new);
    let _ = s.scan_header(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = s.scan_path(text);
        let _ = s.scan_query(text, Some("api_key"));
    }
});
