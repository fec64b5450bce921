//! What the scripts answer: their integers (one space-separated bulk string from check.lua, an
//! array from the others), checked to be the non-negative values they must be, and a bucket's
//! stored fields as a [`Window`].

use super::unavailable;
use super::wire::{Value, decimal};
use crate::RateLimitError;
use crate::window::{Grid, Window};

/// A script's integers: an array of them, or (check.lua, the hot one) one bulk string of them
/// separated by spaces, which is one reply to parse instead of one per element. `None` for
/// anything else.
pub(super) fn integers(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Bulk(text) => parse_integers(text),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Decimal integers separated by single spaces (`1 1765000000000 -1 1 ...`), each an optional
/// `-` and digits whose value fits an `i64`; anything else is `None`. Into a vector sized once.
fn parse_integers(text: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(text.iter().filter(|&&b| b == b' ').count() + 1);
    for field in text.split(|&b| b == b' ') {
        out.push(decimal(field)?);
    }
    Some(out)
}

/// Converts a script's integers to the non-negative values they must be.
pub(super) fn unsigned(values: &[i64]) -> Result<Vec<u64>, RateLimitError> {
    values
        .iter()
        .map(|&v| u64::try_from(v).map_err(|_| unavailable("unexpected script reply")))
        .collect()
}

/// A bucket as stored: `exists, s, c, p` from a script reply. The scripts
/// only report window starts on the period's grid; anything else would break
/// window.rs's arithmetic, so it is refused rather than trusted.
pub(super) fn stored(fields: &[u64], grid: Grid) -> Result<Option<Window>, RateLimitError> {
    match *fields {
        [0, _, _, _] => Ok(None),
        [1, start_ms, current, previous] if grid.on_grid(start_ms) => Ok(Some(Window {
            start_ms,
            current,
            previous,
        })),
        _ => Err(unavailable("unexpected script reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_parse_as_std_parses_them_and_nothing_else() {
        let std_parse = |text: &str| {
            text.split(' ')
                .map(|n| n.parse::<i64>().unwrap())
                .collect::<Vec<_>>()
        };
        for text in [
            "0",
            "1 1765000000000 -1 1 1765000000000 7 3 1",
            "-9223372036854775808 9223372036854775807 -0 007",
            "9007199254740991 -1 0 0 0",
        ] {
            assert_eq!(
                parse_integers(text.as_bytes()),
                Some(std_parse(text)),
                "{text}"
            );
        }
        for bad in [
            "",
            " ",
            "1  2",
            "1 ",
            " 1",
            "-",
            "+1",
            "1a",
            "1.0",
            "--1",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
        ] {
            assert_eq!(parse_integers(bad.as_bytes()), None, "{bad:?}");
        }
        let array = Value::Array(vec![Value::Int(3), Value::Int(-1)]);
        assert_eq!(integers(&array), Some(vec![3, -1]));
        let mixed = Value::Array(vec![Value::Int(3), Value::Bulk(b"1".to_vec())]);
        assert_eq!(integers(&mixed), None);
        assert_eq!(integers(&Value::Error("ERR".into())), None);
    }
}
