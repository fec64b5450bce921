//! Caps on open connections, per client address and in all.
//!
//! Each accepted connection registers here (actix's `on_connect` hook) and holds a
//! [`ConnectionGuard`] in its connection data until it closes. A connection over a cap is not cut
//! at accept time (actix gives the hook no way to refuse); its first request is answered with a
//! JSON `429 too_many_connections` (per address) or `503` (in all) and the connection is closed,
//! so an address holding many idle or stalled connections cannot starve the others, and nothing
//! crashes. Slow *headers* are bounded by actix's client request timeout; slow *bodies* by the
//! body deadline ([`crate::body`]).
//!
//! Trusted proxies are exempt from the per-address cap: every client behind them shares their
//! address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

#[derive(Debug)]
pub struct ConnectionTracker {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    max_per_ip: usize,
    max_total: usize,
    exempt: Vec<IpNet>,
}

/// Held in a connection's data for as long as it is open.
#[derive(Debug)]
pub struct ConnectionGuard {
    tracker: Arc<ConnectionTracker>,
    ip: Option<IpAddr>,
    /// Which cap this connection is over, if any, as the error to answer with.
    pub over: Option<Over>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    PerIp,
    Total,
}

impl ConnectionTracker {
    pub fn new(max_per_ip: usize, max_total: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            per_ip: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            max_per_ip,
            max_total,
            exempt,
        })
    }

    /// Registers a connection from `peer`.
    pub fn open(self: &Arc<Self>, peer: Option<IpAddr>) -> ConnectionGuard {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let ip = peer
            .map(|p| p.to_canonical())
            .filter(|ip| !self.exempt.iter().any(|n| n.contains(ip)));
        let mut over = (total > self.max_total).then_some(Over::Total);
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            *n += 1;
            if *n > self.max_per_ip {
                over = over.or(Some(Over::PerIp));
            }
        }
        ConnectionGuard {
            tracker: self.clone(),
            ip,
            over,
        }
    }

    /// Open connections in all.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Open connections from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        let map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.tracker.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self
                .tracker
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// The peer address of an accepted connection, for actix's `on_connect` hook (plain or TLS).
pub fn peer_of(conn: &dyn std::any::Any) -> Option<IpAddr> {
    use actix_web::rt::net::TcpStream;
    if let Some(s) = conn.downcast_ref::<TcpStream>() {
        return s.peer_addr().ok().map(|a| a.ip());
    }
    if let Some(s) = conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>() {
        return s.get_ref().0.peer_addr().ok().map(|a| a.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_open_connections_and_release_on_drop() {
        let t = ConnectionTracker::new(2, 3, vec!["10.0.0.0/8".parse().unwrap()]);
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        let g1 = t.open(Some(a));
        let g2 = t.open(Some(a));
        let g3 = t.open(Some(a));
        assert_eq!((g1.over, g2.over, g3.over), (None, None, Some(Over::PerIp)));
        let p = t.open(Some("10.1.1.1".parse().unwrap()));
        assert_eq!(p.over, Some(Over::Total));
        drop((g1, g2, g3, p));
        assert_eq!((t.total(), t.from_ip(a)), (0, 0));
        let g = t.open(Some(a));
        assert_eq!(g.over, None);
    }
}
