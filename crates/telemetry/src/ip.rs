//! IP addresses as text, for the access log and the `X-Forwarded-For` the gateway sends: every
//! request formats its client's address at least twice. std's `Display` for `Ipv4Addr` formats
//! into a scratch buffer through `core::fmt` (four integer formats and three separators, then a
//! padded write), ~1,300 instructions an address under callgrind; [`text`] writes an IPv4
//! address's digits straight into a stack buffer and hands them out as a `&str` ([`Text`] is the
//! same as `Display`). IPv6 addresses (and IPv4-mapped ones) keep std's formatting, whose rules
//! (`::` for the longest zero run, `::ffff:1.2.3.4`) are not worth copying.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An address as `Display`: the same text as std's, faster for IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text(pub IpAddr);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => f.pad(Buf::v4(v4).as_str()),
            IpAddr::V6(v6) => fmt::Display::fmt(&v6, f),
        }
    }
}

/// An address's text on the stack, for a `&str` log field or a header value: [`Text`]'s text
/// with no `core::fmt` for IPv4.
pub fn text(ip: IpAddr) -> Buf {
    match ip {
        IpAddr::V4(v4) => Buf::v4(v4),
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut out = Buf::empty();
            let mut rest = &mut out.buf[..];
            // The longest IPv6 text (an IPv4-mapped address in full) is 45 bytes.
            if write!(rest, "{v6}").is_ok() {
                out.len = Buf::CAP - rest.len();
            }
            out
        }
    }
}

/// `ip` as a `String` (for a header value), with [`Text`]'s formatting.
pub fn to_string(ip: IpAddr) -> String {
    text(ip).as_str().to_owned()
}

/// An address as text, on the stack ([`text`]).
pub struct Buf {
    buf: [u8; Self::CAP],
    len: usize,
}

impl Buf {
    const CAP: usize = 46;

    fn empty() -> Self {
        Buf {
            buf: [0; Self::CAP],
            len: 0,
        }
    }

    fn v4(ip: Ipv4Addr) -> Self {
        let mut out = Self::empty();
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            if octet >= 100 {
                out.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                out.push(b'0' + octet / 10 % 10);
            }
            out.push(b'0' + octet % 10);
        }
        out
    }

    fn push(&mut self, b: u8) {
        // At most 4 × 3 digits and 3 dots: 15 bytes, well inside the buffer.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // ASCII only: digits, dots, hex digits and colons.
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_what_std_writes() {
        for s in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.30.199",
            "::1",
            "::ffff:1.2.3.4",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(Text(ip).to_string(), ip.to_string(), "{s}");
            assert_eq!(to_string(ip), s);
            assert_eq!(text(ip).as_str(), s);
        }
        // Every octet value in every position.
        for n in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(n, 0, 0, 0),
                Ipv4Addr::new(1, n, 2, 3),
                Ipv4Addr::new(255, 255, n, 255),
                Ipv4Addr::new(7, 7, 7, n),
            ] {
                assert_eq!(Text(IpAddr::V4(ip)).to_string(), ip.to_string());
                assert_eq!(text(IpAddr::V4(ip)).as_str(), ip.to_string());
            }
        }
    }
}
