//! Parsing request bodies as I-JSON (RFC 7493) into a borrowed document: a duplicate object key
//! anywhere is refused, and strings point into the body instead of being copied.
//!
//! JSON parsers disagree on `{"model":"a","model":"b"}`: serde_json keeps the last, Python's
//! `json` too, some keep the first. A gateway that checks one and forwards both lets the upstream
//! run the other. serde_json's `Value` silently keeps the last, so bodies are built through a seed
//! that refuses a repeated key and names where it stood (`requests[1].model`).
//!
//! The document ([`Json`]) borrows every string that has no escape from the body it was parsed
//! from, and keeps an object's members in order in a `Vec` (duplicates are refused, so a lookup
//! finds the one member). Validation and the model allowlist read it; the body forwarded is
//! the original bytes. Only a key whose requests are metered (the token estimate, a rewrite of
//! `max_tokens` or `stream_options`) parses the body into a `serde_json::Value` as well.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON (or nested deeper than serde_json's recursion limit); the parser's message.
    Malformed(String),
    /// The path of the repeated key, e.g. `requests[0].model`.
    DuplicateKey(String),
}

/// A JSON document borrowing its strings from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// An object's members in document order; no name appears twice ([`parse_strict`] refuses it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The member named `key`.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'a> Json<'a> {
    /// The member `key`, when this is an object that has one.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Json::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.as_number()?.as_f64()
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Json::String(_))
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Json::Array(_))
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Json::Number(_))
    }

    /// The same document as a `serde_json::Value` (owned): how the tests hold this parser to
    /// serde_json's reading of the same bytes.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(o) => Value::Object(
                o.0.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Above this many members an object's names are also kept in a hash set, so checking a new
/// name for a duplicate stays O(1): a scan of each name against all before it would make a body
/// of 100 k members cost 5·10⁹ comparisons. Below it the scan is cheaper than hashing.
const SCAN_LIMIT: usize = 16;

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
    type Value = Json<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object member's name, borrowed from the body unless it holds an escape.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let at = Seg::Index(self.at, out.len());
            let seed = Seed {
                at: &at,
                dup: self.dup,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Json::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        let mut names: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(Name)? {
            let repeated = match &mut names {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let seen = out.iter().any(|(k, _)| *k == key);
                    if !seen && out.len() == SCAN_LIMIT {
                        let mut set: HashSet<Cow<'de, str>> =
                            out.iter().map(|(k, _)| k.clone()).collect();
                        set.insert(key.clone());
                        names = Some(set);
                    }
                    seen
                }
            };
            if repeated {
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
            out.push((key, value));
        }
        Ok(Json::Object(Object(out)))
    }
}

/// Parses `bytes` as one JSON document with no duplicate object keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Json<'_>, JsonError> {
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
    fn duplicates_in_large_objects_are_found_through_the_name_set() {
        let members: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!("{{{}}}", members.join(","));
        let doc = parse_strict(body.as_bytes()).unwrap();
        assert_eq!(doc.as_object().map(|o| o.0.len()), Some(40));
        assert_eq!(doc.get("k39").and_then(Json::as_number), Some(&39.into()));
        // Repeated before, at and after the point where the set takes over from the scan.
        for (i, escaped) in [(3, "k\\u0033"), (16, "k16"), (30, "k\\u00330")] {
            let body = format!("{{{},\"{escaped}\":0}}", members.join(","));
            assert_eq!(
                parse_strict(body.as_bytes()),
                Err(JsonError::DuplicateKey(format!("k{i}"))),
                "{body}"
            );
        }
        // 100 k distinct members parse (no quadratic scan).
        let many: Vec<String> = (0..100_000).map(|i| format!("\"m{i}\":0")).collect();
        let body = format!("{{{}}}", many.join(","));
        assert_eq!(
            parse_strict(body.as_bytes())
                .unwrap()
                .as_object()
                .map(|o| o.0.len()),
            Some(100_000)
        );
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let body = br#"{"model":"m","prompt":"a\nb"}"#;
        let doc = parse_strict(body).unwrap();
        let Some(Json::String(Cow::Borrowed(model))) = doc.get("model") else {
            panic!("model not borrowed: {doc:?}");
        };
        assert!(body.as_ptr_range().contains(&model.as_ptr()));
        assert_eq!(doc.get("prompt").and_then(Json::as_str), Some("a\nb"));
    }

    #[test]
    fn ordinary_documents_parse_like_serde_json() {
        let s = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"t":0.5,"n":null,"ok":true,"big":18446744073709551615,"neg":-3,"esc":"\u00e9\"x"}"#;
        assert_eq!(
            parse_strict(s.as_bytes()).unwrap().to_value(),
            serde_json::from_str::<Value>(s).unwrap()
        );
        assert_eq!(
            parse_strict(b"[1,2,3]").unwrap().to_value(),
            json!([1, 2, 3])
        );
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
