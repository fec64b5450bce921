//! Raw HTTP/1.1 over a socket, from any loopback source address (127.0.0.2 plays the trusted
//! proxy), for what a well-behaved client library will not send.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to the gateway on `port` from `source` (any 127.0.0.0/8 address works on Linux).
pub async fn connect_from(source: &str, port: u16) -> TcpStream {
    let src: IpAddr = source.parse().unwrap();
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// Sends `request` from `source` and reads the whole answer (the request should ask for
/// `Connection: close`; reading stops after a quiet spell otherwise).
pub async fn send_from(source: &str, port: u16, request: &[u8]) -> String {
    let mut s = connect_from(source, port).await;
    s.write_all(request).await.unwrap();
    read_all(&mut s).await
}

pub async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response (0 when there was none).
pub fn status(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw response with `Content-Length` framing.
pub fn json_body(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

/// A GET with `headers` (each `Name: value`), `Connection: close`.
pub fn get(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}
