#![no_main]
//! Rate specs (`100/minute`): what parses prints back to itself.
use infergate_ratelimit::RateSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = s.parse::<RateSpec>() {
        let again: RateSpec = spec.to_string().parse().expect("Display parses back");
        assert_eq!(spec, again);
    }
});
