#![no_main]
//! Credential extraction from the API-key header, `Authorization` and the query string.
use infergate_policy::{CredentialRules, extract_credential};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut parts = s.splitn(3, '\n');
    let (h, a, q) = (parts.next(), parts.next(), parts.next());
    let rules = CredentialRules {
        header_name: "X-API-Key".into(),
        query_param: Some("api_key".into()),
    };
    if let Ok(Some(c)) = extract_credential(&rules, h, a, q) {
        assert!(!c.value.is_empty());
    }
});
