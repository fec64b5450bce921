//! Property tests of every parser an attacker reaches, run in `make test` on stable (the
//! cargo-fuzz targets in `fuzz/` explore the same functions for longer; see docs/security.md).
//! Each property is one that a bug would break: no panic on any input, and the security
//! invariant of the parser (an accepted path has no dot segment, a duplicate key is never
//! accepted, the client address is never one the client invented).
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use infergate_gateway::client_ip::{parse_forwarded_entry, walk_forwarded};
use infergate_gateway::json::{JsonError, parse_strict};
use infergate_gateway::path::decode_path;
use infergate_gateway::validate::Scanner;
use infergate_policy::{CredentialRules, extract_credential};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Path-ish strings: mostly the characters traversal tricks are made of.
fn path_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just(";".to_string()),
            Just("\\".to_string()),
            Just("%2e".to_string()),
            Just("%2f".to_string()),
            Just("%25".to_string()),
            Just("%c0%ae".to_string()),
            Just("%ef%bc%8e".to_string()),
            Just("%u002e".to_string()),
            Just("%20".to_string()),
            "[a-z0-9_-]{1,6}",
            "%[0-9a-fA-F]{2}",
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..12,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn an_accepted_path_has_no_dot_segment_parameter_or_encoding_left(raw in path_like()) {
        if let Ok(decoded) = decode_path(&raw) {
            for seg in decoded.split(['/', '\\']) {
                prop_assert!(!seg.contains(';'), "{raw} -> {decoded}");
                prop_assert!(seg.trim() != "." && seg.trim() != "..", "{raw} -> {decoded}");
            }
            prop_assert!(!decoded.chars().any(char::is_control));
            // Decoding the accepted path once more changes nothing an upstream would act on:
            // it holds no percent-encoding left to decode.
            if decoded.contains('%') {
                prop_assert!(decode_path(&decoded).is_err() || !decoded.contains("%2"));
            }
        }
    }

    #[test]
    fn any_path_bytes_never_panic(raw in "\\PC{0,64}") {
        let _ = decode_path(&raw);
        let _ = Scanner::new().scan_path(&raw);
    }

    #[test]
    fn forwarded_entries_parse_their_own_display(ip in any::<IpAddr>(), port in 1u16..) {
        let ip = ip.to_canonical();
        prop_assert_eq!(parse_forwarded_entry(&ip.to_string()), Some(ip));
        let with_port = match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        };
        prop_assert_eq!(parse_forwarded_entry(&with_port), Some(ip));
    }

    #[test]
    fn the_client_is_never_left_of_an_untrusted_entry(
        entries in proptest::collection::vec(any::<[u8; 4]>(), 0..8),
        noise in "[ ,a-z0-9.:]{0,20}",
    ) {
        // 10.x is trusted; the walk must stop at the first untrusted entry from the right.
        let list: Vec<String> = entries
            .iter()
            .map(|o| IpAddr::from(*o).to_string())
            .collect();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("{noise},{}", list.join(","))) {
            headers.append(HeaderName::from_static("x-forwarded-for"), v);
        }
        let trusted = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let walk = walk_forwarded(peer, &headers, trusted);
        if let Some(first_untrusted) = entries
            .iter()
            .rev()
            .map(|o| IpAddr::from(*o))
            .find(|ip| !trusted(*ip))
        {
            prop_assert_eq!(walk.client, first_untrusted);
        }
    }

    #[test]
    fn strict_json_agrees_with_serde_json_or_names_a_duplicate(doc in json_like()) {
        match (parse_strict(doc.as_bytes()), serde_json::from_str::<serde_json::Value>(&doc)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.to_value(), b),
            (Err(JsonError::Malformed(_)), Err(_)) => {}
            (Err(JsonError::DuplicateKey(path)), Ok(_)) => {
                let last = path.rsplit(['.', ']']).next().unwrap_or("");
                prop_assert!(doc.contains(&format!("\"{last}\"")) || last.is_empty(), "{path} in {doc}");
            }
            (a, b) => prop_assert!(false, "disagree on {doc}: {a:?} vs {b:?}"),
        }
    }

    #[test]
    fn credentials_and_signatures_never_panic(
        header in proptest::option::of("\\PC{0,80}"),
        auth in proptest::option::of("(Bearer |Basic |bearer )?\\PC{0,80}"),
        query in proptest::option::of("[a-z_=&%0-9A-F<>' ]{0,80}"),
    ) {
        let rules = CredentialRules {
            header_name: "X-API-Key".into(),
            query_param: Some("api_key".into()),
        };
        let _ = extract_credential(&rules, header.as_deref(), auth.as_deref(), query.as_deref());
        let s = Scanner::new();
        if let Some(q) = &query {
            let _ = s.scan_query(q, Some("api_key"));
        }
        if let Some(h) = &header {
            let _ = s.scan_header(h.as_bytes());
        }
    }

    #[test]
    fn rate_specs_round_trip_through_display(n in 1u64..1_000_000, unit in 0usize..4) {
        let unit = ["second", "minute", "hour", "day"][unit];
        let spec: infergate_ratelimit::RateSpec = format!("{n}/{unit}").parse().unwrap();
        let again: infergate_ratelimit::RateSpec = spec.to_string().parse().unwrap();
        prop_assert_eq!(spec, again);
    }

    #[test]
    fn rate_specs_hosts_keys_and_tokens_never_panic(s in "\\PC{0,64}") {
        let _ = s.parse::<infergate_ratelimit::RateSpec>();
        if let Ok(m) = infergate_policy::HostMatcher::new(&[s.as_str()]) {
            let _ = m.allows(&s);
        }
        let _ = infergate_keystore::format::parse(&s);
        let _ = infergate_tokens::looks_like_jwt(&s);
    }

    #[test]
    fn generated_keys_parse_and_one_changed_character_is_refused(flip in 0usize..64) {
        let key = infergate_keystore::format::generate("igk").unwrap();
        let token = key.expose().to_string();
        prop_assert!(infergate_keystore::format::parse(&token).is_ok());
        let i = flip % token.len();
        let mut bytes = token.into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(infergate_keystore::format::parse(&changed).is_err() || changed == key.expose());
    }
}

/// Small JSON-ish documents with a bias toward repeated keys.
fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_string()),
        Just("1.5".to_string()),
        Just("\"s\"".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(("[ab]", inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}
