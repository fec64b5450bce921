#![no_main]
//! Forwarded-header parsing: `X-Forwarded-For` lines walked right to left, `X-Forwarded-Proto`.
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use infergate_gateway::client_ip::{forwarded_proto_is_https, parse_forwarded_entry, walk_forwarded};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static("x-forwarded-for"), v.clone());
            headers.append(HeaderName::from_static("x-forwarded-proto"), v);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_forwarded_entry(s);
    }
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let trusted = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10);
    let walk = walk_forwarded(peer, &headers, trusted);
    assert!(walk.trusted_hops.iter().all(|ip| trusted(*ip)));
    let _ = forwarded_proto_is_https(&headers);
});
