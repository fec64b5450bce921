//! What the scripts answer: their integers (one space-separated bulk string from check.lua, an
//! array from the others), checked to be the non-negative values they must be, and a bucket's
//! stored fields as a [`Window`].

use super::unavailable;
use crate::RateLimitError;
use crate::window::{Grid, Window};

/// A script's integers: an array of them, or (check.lua, the hot one) one bulk string of them
/// separated by spaces, which redis-rs parses in one step where an array costs it a parser
/// step per element.
pub(super) struct Integers(pub(super) Vec<i64>);

impl ::redis::FromRedisValue for Integers {
    fn from_redis_value(v: ::redis::Value) -> Result<Self, ::redis::ParsingError> {
        match v {
            ::redis::Value::BulkString(bytes) => parse_integers(&bytes)
                .map(Integers)
                .ok_or_else(|| ::redis::ParsingError::from("script reply is not integers")),
            other => Vec::<i64>::from_redis_value(other).map(Integers),
        }
    }
}

/// Decimal integers separated by single spaces (`1 1765000000000 -1 1 ...`), each an optional
/// `-` and digits whose value fits an `i64`; anything else is `None`. By hand into a vector
/// sized once: splitting the text and parsing each piece grew the vector four times a call.
fn parse_integers(text: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(text.iter().filter(|&&b| b == b' ').count() + 1);
    for field in text.split(|&b| b == b' ') {
        let (negative, digits) = match field {
            [b'-', rest @ ..] => (true, rest),
            _ => (false, field),
        };
        if digits.is_empty() {
            return None;
        }
        let mut value: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            let digit = i64::from(d - b'0');
            // Negative values accumulate downwards, so i64::MIN parses too.
            value = value.checked_mul(10)?;
            value = if negative {
                value.checked_sub(digit)?
            } else {
                value.checked_add(digit)?
            };
        }
        out.push(value);
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
    }
}
