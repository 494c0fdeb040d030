//! Scalars read as Jackson reads them for the Java control plane (REFERENCE §1.3): `"5"` → 5,
//! `1` → `"1"`, `"true"` → true. Used with `#[serde(deserialize_with = ...)]` on request DTOs.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The floats read as an `i64`: strictly between -2^63 and 2^63. (An integer just beyond the
/// i64 range reaches us as the float ±2^63, so the ends are excluded; i64::MIN itself is read
/// as an integer.)
fn in_i64_range(f: f64) -> bool {
    const BOUND: f64 = (1u64 << 63) as f64;
    f > -BOUND && f < BOUND
}

/// Integers as Jackson reads them: a number (a fraction is truncated, as Jackson's
/// `ACCEPT_FLOAT_AS_INT` does: `1.9` → 1), or a string holding an integer.
pub fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| in_i64_range(*f)) {
                Ok(Some(f.trunc() as i64))
            } else {
                Err(D::Error::custom(format!("expected an integer, got {n}")))
            }
        }
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected an integer, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!(
            "expected an integer, got {}",
            kind_of(&other)
        ))),
    }
}

pub fn lenient_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!(
            "expected a number, got {}",
            kind_of(&other)
        ))),
    }
}

/// Booleans as Jackson reads them: `true`/`false`, or a string holding one.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(D::Error::custom(format!("expected a boolean, got \"{s}\""))),
        },
        Some(other) => Err(D::Error::custom(format!(
            "expected a boolean, got {}",
            kind_of(&other)
        ))),
    }
}

/// Strings as Jackson reads them: a string, or a scalar number/boolean turned into its text.
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "expected a string, got {}",
            kind_of(&other)
        ))),
    }
}

/// A scalar as the text Jackson binds to a `String`; `None` for JSON null.
fn scalar_text<E: serde::de::Error>(v: serde_json::Value, what: &str) -> Result<Option<String>, E> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(E::custom(format!(
            "expected {what} of strings, got {} in it",
            kind_of(&other)
        ))),
    }
}

/// A list of strings as Jackson reads it: scalar items become their text, null items are dropped.
pub fn lenient_string_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(scalar_text::<D::Error>(item, "an array")?);
            }
            Ok(Some(out))
        }
        Some(other) => Err(D::Error::custom(format!(
            "expected an array of strings, got {}",
            kind_of(&other)
        ))),
    }
}

/// A string → string map as Jackson reads it: scalar values become their text, null stays null.
pub fn lenient_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, Option<String>>>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| Ok((k, scalar_text::<D::Error>(v, "an object")?)))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(D::Error::custom(format!(
            "expected an object of strings, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A nested object (or null), and never an array: serde's derived struct readers also take a
/// JSON array of the field values in order, which Jackson refuses for an object (400).
pub fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    ObjectOnly::<T>::deserialize(d).map(|o| o.0)
}

/// A list of objects (null items kept as `None`), or null; see [`object_only`].
pub fn object_only_list<'de, D, T>(d: D) -> Result<Option<Vec<Option<T>>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<ObjectOnly<T>>>::deserialize(d)?;
    Ok(list.map(|items| items.into_iter().map(|o| o.0).collect()))
}

/// `T` read from a JSON object only; null is `None`.
pub struct ObjectOnly<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::MapAccessDeserializer;
        use serde::de::{MapAccess, Visitor};

        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_map(self)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }

        d.deserialize_option(ObjectVisitor(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}
