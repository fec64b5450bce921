// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use infergate_ratelimit::{RATE_SPEC_ACCEPTED, RateSpec, RateSpecError};

fn spec(limit: u64, secs: u64) -> RateSpec {
    RateSpec {
        limit,
        period: Duration::from_secs(secs),
    }
}

#[test]
fn accepts_every_documented_form() {
    let cases = [
        ("100/second", spec(100, 1)),
        ("100/minute", spec(100, 60)),
        ("100/hour", spec(100, 3600)),
        ("100/day", spec(100, 86_400)),
        ("5/s", spec(5, 1)),
        ("5/m", spec(5, 60)),
        ("5/h", spec(5, 3600)),
        ("5/d", spec(5, 86_400)),
        ("7/sec", spec(7, 1)),
        ("7/min", spec(7, 60)),
        ("3/seconds", spec(3, 1)),
        ("3/minutes", spec(3, 60)),
        ("3/hours", spec(3, 3600)),
        ("3/days", spec(3, 86_400)),
        ("1/second", spec(1, 1)),
        ("18446744073709551615/day", spec(u64::MAX, 86_400)),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<RateSpec>(), Ok(want), "{text}");
    }
}

#[test]
fn unit_is_case_insensitive_and_whitespace_tolerated() {
    for text in [
        "100/MINUTE",
        "100/Minute",
        "100/M",
        "100 / minute",
        "  100/minute  ",
        "\t100 /\tmin\n",
    ] {
        assert_eq!(text.parse::<RateSpec>(), Ok(spec(100, 60)), "{text:?}");
    }
}

#[test]
fn rejects_malformed_specs() {
    let cases = [
        ("0/minute", RateSpecError::InvalidLimit),
        ("-5/minute", RateSpecError::InvalidLimit),
        ("+5/minute", RateSpecError::InvalidLimit),
        ("1.5/minute", RateSpecError::InvalidLimit),
        ("ten/minute", RateSpecError::InvalidLimit),
        ("/minute", RateSpecError::InvalidLimit),
        ("18446744073709551616/minute", RateSpecError::InvalidLimit),
        ("abc", RateSpecError::MissingUnit),
        ("10", RateSpecError::MissingUnit),
        ("10/", RateSpecError::MissingUnit),
        ("10/  ", RateSpecError::MissingUnit),
        ("", RateSpecError::Empty),
        ("   ", RateSpecError::Empty),
        ("10/fortnight", RateSpecError::UnknownUnit),
        ("10/minute/hour", RateSpecError::UnknownUnit),
        ("10/0s", RateSpecError::InvalidPeriod),
        ("10/99999999s", RateSpecError::InvalidPeriod),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<RateSpec>(), Err(want), "{text:?}");
    }
}

#[test]
fn error_messages_are_short() {
    for err in [
        RateSpecError::Empty,
        RateSpecError::MissingUnit,
        RateSpecError::InvalidLimit,
        RateSpecError::UnknownUnit,
        RateSpecError::InvalidPeriod,
    ] {
        let msg = err.to_string();
        assert!(!msg.is_empty() && msg.len() < 80, "{msg}");
    }
    assert!(RATE_SPEC_ACCEPTED.contains("N/minute"));
}

#[test]
fn new_enforces_bounds() {
    assert_eq!(RateSpec::new(10, Duration::from_secs(60)), Ok(spec(10, 60)));
    assert_eq!(
        RateSpec::new(0, Duration::from_secs(60)),
        Err(RateSpecError::InvalidLimit)
    );
    assert_eq!(
        RateSpec::new(1, Duration::from_millis(999)),
        Err(RateSpecError::InvalidPeriod)
    );
    assert_eq!(
        RateSpec::new(1, Duration::from_millis(1500)),
        Err(RateSpecError::InvalidPeriod)
    );
    assert_eq!(
        RateSpec::new(1, Duration::from_secs(366 * 86_400)),
        Err(RateSpecError::InvalidPeriod)
    );
}

#[test]
fn display_uses_long_unit_names_and_round_trips() {
    let cases = [
        (spec(100, 1), "100/second"),
        (spec(100, 60), "100/minute"),
        (spec(100, 3600), "100/hour"),
        (spec(100, 86_400), "100/day"),
        (spec(100, 90), "100/90s"),
        (spec(3, 7200), "3/7200s"),
    ];
    for (value, text) in cases {
        assert_eq!(value.to_string(), text);
        assert_eq!(text.parse::<RateSpec>(), Ok(value), "{text}");
    }
    for text in ["5/s", "5/MIN", " 5 / h ", "5/days"] {
        let parsed: RateSpec = text.parse().unwrap();
        assert_eq!(parsed.to_string().parse::<RateSpec>(), Ok(parsed));
    }
}

#[test]
fn serde_uses_the_string_form() {
    let parsed: RateSpec = serde_json::from_str("\"100/minute\"").unwrap();
    assert_eq!(parsed, spec(100, 60));
    let parsed: RateSpec = serde_json::from_str("\" 20 / Hour \"").unwrap();
    assert_eq!(parsed, spec(20, 3600));
    assert_eq!(
        serde_json::to_string(&spec(100, 60)).unwrap(),
        "\"100/minute\""
    );

    let err = serde_json::from_str::<RateSpec>("\"0/minute\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("0/minute"), "{err}");
    assert!(err.contains(RATE_SPEC_ACCEPTED), "{err}");
    assert!(serde_json::from_str::<RateSpec>("100").is_err());

    #[derive(serde::Deserialize)]
    struct Limits {
        per_ip: RateSpec,
        per_key: RateSpec,
    }
    let limits: Limits =
        serde_json::from_str(r#"{"per_ip": "100/minute", "per_key": "1000/h"}"#).unwrap();
    assert_eq!(limits.per_ip, spec(100, 60));
    assert_eq!(limits.per_key, spec(1000, 3600));
}
