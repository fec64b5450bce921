//! Which address a request is from.
//!
//! The peer address, unless the peer is a configured trusted proxy: only then are
//! `X-Forwarded-For` / `X-Real-IP` believed, or anyone could pick their own rate-limit bucket.
//! `X-Forwarded-For` is read right to left, skipping trusted proxies, so a client that prepends
//! fake entries still lands on the address the last trusted proxy saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::http::header::HeaderMap;

use crate::state::AppState;

pub fn client_ip(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip().to_canonical());
    if state.cfg.trusted_proxies.is_empty() || !state.is_trusted_proxy(peer_ip) {
        return peer_ip;
    }
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        let mut last = None;
        for part in xff.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                break;
            };
            let ip = ip.to_canonical();
            last = Some(ip);
            if !state.is_trusted_proxy(ip) {
                return ip;
            }
        }
        if let Some(ip) = last {
            return ip;
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer_ip, |ip| ip.to_canonical())
}

/// Whether the request arrived over HTTPS: the listener's own TLS, or `X-Forwarded-Proto: https`
/// from a trusted proxy.
pub fn is_https(
    state: &AppState,
    secure_listener: bool,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> bool {
    if secure_listener {
        return true;
    }
    let peer_trusted = peer.is_some_and(|p| state.is_trusted_proxy(p.ip().to_canonical()));
    peer_trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            })
}
