#![no_main]
//! JSON body validation: strict (I-JSON) parsing, then every route's schema check.
use infergate_gateway::json::parse_strict;
use infergate_gateway::validate::check_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_strict(data) {
        // Whatever strict parsing accepts, serde_json reads the same (no duplicate was hidden).
        let plain: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(plain, v);
        for (template, path) in [
            ("/inference", "/inference"),
            ("/inference/batch", "/inference/batch"),
            ("/models/load", "/models/load"),
            ("/api/test", "/api/test"),
            ("/v1/*", "/v1/chat/completions"),
            ("/v1/*", "/v1/completions"),
            ("/v1/*", "/v1/embeddings"),
        ] {
            let _ = check_body(template, path, &v);
        }
    }
});
