#![no_main]
//! Trusted-host patterns and Host header matching.
use infergate_policy::HostMatcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (pattern, host) = s.split_once('\n').unwrap_or((s, s));
    if let Ok(m) = HostMatcher::new(&[pattern]) {
        let _ = m.allows(host);
    }
    let m = HostMatcher::new(&["api.example.com", "*.example.org"]).unwrap();
    let _ = m.allows(s);
});
