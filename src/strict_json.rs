//! JSON as the model files' readers take it: a key given twice in one object is an
//! error, where `serde_json` keeps the last one silently — a file whose two values
//! disagree means something different to every tool that reads it, so it is refused
//! rather than guessed at. Nesting is bounded by `serde_json`'s recursion limit (128),
//! which fails with an error, not a stack overflow.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::limits::cut;

/// Parses `text`; the error is `serde_json`'s (with line and column), or names the
/// duplicated key.
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str::<Strict>(text)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell a non-finite number; serde_json refuses 1e400 itself.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("number {v} is not finite")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "key \"{}\" appears twice in one object",
                    cut(&key)
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(
            parse(r#"{"a": [1, -2, 2.5, "x", null, true], "b": {"c": {}}}"#).unwrap(),
            serde_json::json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": {}}})
        );
        let e = parse(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(
            e.contains("\"a\" appears twice") && e.contains("line 1"),
            "{e}"
        );
        let e = parse(r#"{"x": [{"b": 1, "c": {"d": 0, "d": 0}}]}"#).unwrap_err();
        assert!(e.contains("\"d\" appears twice"), "{e}");
        // The same key in two different objects is fine.
        assert!(parse(r#"{"x": {"d": 0}, "y": {"d": 0}}"#).is_ok());
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_errors() {
        for open in ["[", "{\"a\":"] {
            let deep = open.repeat(100_000);
            let e = parse(&deep).unwrap_err();
            assert!(e.contains("recursion limit"), "{e}");
        }
        assert!(parse("1e400").is_err());
        assert_eq!(parse("18446744073709551616").unwrap().as_u64(), None);
    }
}
