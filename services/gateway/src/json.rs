//! Parsing request bodies as I-JSON (RFC 7493): a duplicate object key anywhere is refused.
//!
//! JSON parsers disagree on `{"model":"a","model":"b"}`: serde_json keeps the last, Python's
//! `json` too, some keep the first. A gateway that checks one and forwards both lets the upstream
//! run the other. serde_json's `Value` silently keeps the last, so bodies are built through a seed
//! that refuses a repeated key and names where it stood (`requests[1].model`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON (or nested deeper than serde_json's recursion limit); the parser's message.
    Malformed(String),
    /// The path of the repeated key, e.g. `requests[0].model`.
    DuplicateKey(String),
}

/// A step of the path from the document root to the value being built.
enum Seg<'a> {
    Root,
    Key(&'a Seg<'a>, &'a str),
    Index(&'a Seg<'a>, usize),
}

impl Seg<'_> {
    fn render(&self, out: &mut String) {
        match self {
            Seg::Root => {}
            Seg::Key(parent, k) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(parent, i) => {
                parent.render(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

struct Seed<'a> {
    at: &'a Seg<'a>,
    dup: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let at = Seg::Index(self.at, out.len());
            let seed = Seed {
                at: &at,
                dup: self.dup,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let mut path = String::new();
                Seg::Key(self.at, &key).render(&mut path);
                *self.dup.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate object key"));
            }
            let value = {
                let at = Seg::Key(self.at, &key);
                map.next_value_seed(Seed {
                    at: &at,
                    dup: self.dup,
                })?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses `bytes` as one JSON document with no duplicate object keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let dup = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Seed {
        at: &Seg::Root,
        dup: &dup,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => match dup.into_inner() {
            Some(path) => Err(JsonError::DuplicateKey(path)),
            None => Err(JsonError::Malformed(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicates_anywhere_are_named_by_path() {
        let dup = |s: &str| match parse_strict(s.as_bytes()) {
            Err(JsonError::DuplicateKey(p)) => p,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(dup(r#"{"prompt":"hi","model":"a","model":"b"}"#), "model");
        assert_eq!(
            dup(r#"{"requests":[{"prompt":"x"},{"model":"a","model":"a"}]}"#),
            "requests[1].model"
        );
        assert_eq!(dup(r#"{"a":{"b":{"c":1,"c":2}}}"#), "a.b.c");
        // The same key escaped differently is still the same key.
        assert_eq!(dup(r#"{"model":"a","mod\u0065l":"b"}"#), "model");
    }

    #[test]
    fn ordinary_documents_parse_like_serde_json() {
        let s = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"t":0.5,"n":null,"ok":true,"big":18446744073709551615}"#;
        assert_eq!(
            parse_strict(s.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(s).unwrap()
        );
        assert_eq!(parse_strict(b"[1,2,3]").unwrap(), json!([1, 2, 3]));
        assert!(matches!(parse_strict(b"{"), Err(JsonError::Malformed(_))));
        assert!(matches!(
            parse_strict(b"{} {}"),
            Err(JsonError::Malformed(_))
        ));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(JsonError::Malformed(_))
        ));
    }
}
