//! Which address a request is from, and what the proxies in front of the gateway said about it.
//!
//! The peer address, unless the peer is a configured trusted proxy: only then are
//! `X-Forwarded-For` / `X-Real-IP` / `X-Forwarded-Proto` believed, or anyone could pick their own
//! rate-limit bucket or claim HTTPS.
//!
//! Several `X-Forwarded-For` lines are one comma-joined list (RFC 9110 §5.3), in order, so a
//! proxy that appends its own line after the client's (HAProxy's `option forwardfor`) is read
//! the same as one that appends to the client's line. The list is walked right to left, skipping
//! trusted proxies; the first untrusted address is the client. Entries may carry a port
//! (`10.0.0.1:4711`, `[2001:db8::1]:4711`), as some load balancers write them. A client that
//! prepends fake entries still lands on the address the last trusted proxy saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::http::header::HeaderMap;

use crate::state::AppState;

/// Parses one list entry: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port` (whitespace trimmed).
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = e.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = e.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The entries of every line of a list header, right to left (the last line's last entry first).
fn entries_rev<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let lines: Vec<&str> = headers
        .get_all(name)
        .map(|v| v.to_str().unwrap_or(","))
        .collect();
    lines.into_iter().rev().flat_map(|l| l.rsplit(','))
}

/// Where the walk over `X-Forwarded-For` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedWalk {
    pub client: IpAddr,
    /// The trusted proxies between the client and the peer, nearest to the client first. With the
    /// client and the peer this is the chain the gateway passes on; entries left of the client are
    /// the client's own claims and are dropped.
    pub trusted_hops: Vec<IpAddr>,
}

/// Walks the forwarded chain for a request from `peer_ip` (assumed trusted).
pub fn walk_forwarded(
    peer_ip: IpAddr,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> ForwardedWalk {
    let mut hops = Vec::new();
    let mut saw_entry = false;
    for entry in entries_rev(headers, "x-forwarded-for") {
        if entry.trim().is_empty() {
            continue;
        }
        saw_entry = true;
        let Some(ip) = parse_forwarded_entry(entry) else {
            // A trusted proxy passed on something that is not an address: nothing left of it can
            // be believed, and the nearest believable address is the last trusted one.
            break;
        };
        if !trusted(ip) {
            hops.reverse();
            return ForwardedWalk {
                client: ip,
                trusted_hops: hops,
            };
        }
        hops.push(ip);
    }
    // Every entry was a trusted proxy (or the chain broke): the leftmost believable one is the
    // client, e.g. an internal health checker behind the load balancer.
    if let Some(client) = hops.pop() {
        hops.reverse();
        return ForwardedWalk {
            client,
            trusted_hops: hops,
        };
    }
    let client = if saw_entry {
        peer_ip
    } else {
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_forwarded_entry)
            .unwrap_or(peer_ip)
    };
    ForwardedWalk {
        client,
        trusted_hops: Vec::new(),
    }
}

fn peer_ip(peer: Option<SocketAddr>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip().to_canonical())
}

/// Where a request came from, as the gateway judged it: worked out once per request (the edge
/// stores it in the request context) and read by every later stage.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The client: the peer, or the first untrusted address of a trusted peer's chain.
    pub client: IpAddr,
    pub peer: IpAddr,
    /// The peer is a configured trusted proxy, so its forwarding headers are believed.
    pub peer_trusted: bool,
    /// The trusted proxies between the client and the peer (empty unless `peer_trusted`).
    pub trusted_hops: Vec<IpAddr>,
    /// TLS on the gateway's listener, or `X-Forwarded-Proto: https` from a trusted peer.
    pub https: bool,
}

impl Origin {
    pub fn of(
        state: &AppState,
        secure_listener: bool,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Self {
        let peer = peer_ip(peer);
        let peer_trusted = !state.cfg.trusted_proxies.is_empty() && state.is_trusted_proxy(peer);
        if !peer_trusted {
            return Origin {
                client: peer,
                peer,
                peer_trusted,
                trusted_hops: Vec::new(),
                https: secure_listener,
            };
        }
        let walk = walk_forwarded(peer, headers, |ip| state.is_trusted_proxy(ip));
        Origin {
            client: walk.client,
            peer,
            peer_trusted,
            trusted_hops: walk.trusted_hops,
            https: secure_listener || forwarded_proto_is_https(headers),
        }
    }

    /// The `X-Forwarded-For` the gateway sends upstream: the client, the trusted proxies after it,
    /// and the peer (just the peer when it is not trusted). What a client wrote left of itself is
    /// dropped.
    pub fn forwarded_for(&self) -> String {
        use infergate_telemetry::ip::{Text, to_string};
        use std::fmt::Write;
        if !self.peer_trusted {
            return to_string(self.peer);
        }
        let mut out = to_string(self.client);
        for hop in self.trusted_hops.iter().chain(std::iter::once(&self.peer)) {
            let _ = write!(out, ", {}", Text(*hop));
        }
        out
    }
}

/// Whether a trusted proxy's `X-Forwarded-Proto` list says HTTPS: its rightmost entry, the one the
/// nearest trusted proxy set or passed on (anything a client added stands left of it, so
/// `https, http` is plain HTTP).
pub fn forwarded_proto_is_https(headers: &HeaderMap) -> bool {
    entries_rev(headers, "x-forwarded-proto")
        .map(str::trim)
        .find(|e| !e.is_empty())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_with_ports_and_brackets() {
        assert_eq!(parse_forwarded_entry(" 10.0.0.1 "), Some(ip("10.0.0.1")));
        assert_eq!(parse_forwarded_entry("10.0.0.1:4711"), Some(ip("10.0.0.1")));
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]:4711"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("::ffff:10.1.2.3"),
            Some(ip("10.1.2.3"))
        );
        for bad in [
            "",
            "unknown",
            "10.0.0.1:",
            "10.0.0.1:99999999",
            "[::1]x",
            "a:b",
            "_hidden",
        ] {
            assert_eq!(parse_forwarded_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn several_lines_are_one_list_walked_right_to_left() {
        let trusted = |i: IpAddr| i == ip("127.0.0.2") || i == ip("10.0.0.9");
        let h = headers(&[
            ("x-forwarded-for", "10.9.0.7"),
            ("x-forwarded-for", "5.5.5.5"),
        ]);
        let w = walk_forwarded(ip("127.0.0.2"), &h, trusted);
        assert_eq!(w.client, ip("5.5.5.5"));
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 6.6.6.6:999, 10.0.0.9")]);
        let w = walk_forwarded(ip("127.0.0.2"), &h, trusted);
        assert_eq!(w.client, ip("6.6.6.6"));
        assert_eq!(w.trusted_hops, vec![ip("10.0.0.9")]);
        // Only trusted entries: the leftmost is the client.
        let h = headers(&[("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(
            walk_forwarded(ip("127.0.0.2"), &h, trusted).client,
            ip("10.0.0.9")
        );
        // Garbage right after the trusted hops: the peer's bucket, never the garbage's left side.
        let h = headers(&[("x-forwarded-for", "7.7.7.7, junk")]);
        assert_eq!(
            walk_forwarded(ip("127.0.0.2"), &h, trusted).client,
            ip("127.0.0.2")
        );
        // No list: X-Real-IP from the trusted peer.
        let h = headers(&[("x-real-ip", "8.8.4.4")]);
        assert_eq!(
            walk_forwarded(ip("127.0.0.2"), &h, trusted).client,
            ip("8.8.4.4")
        );
    }

    #[test]
    fn forwarded_proto_uses_the_rightmost_value() {
        assert!(forwarded_proto_is_https(&headers(&[(
            "x-forwarded-proto",
            "https"
        )])));
        assert!(!forwarded_proto_is_https(&headers(&[(
            "x-forwarded-proto",
            "https, http"
        )])));
        assert!(!forwarded_proto_is_https(&headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ])));
        assert!(forwarded_proto_is_https(&headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-proto", "HTTPS"),
        ])));
        assert!(!forwarded_proto_is_https(&HeaderMap::new()));
    }
}
