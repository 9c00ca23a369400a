//! Subscription extensions, read into a backend's typed struct.
//!
//! The world hands extensions over as text pairs (`list<tuple<string,
//! string>>`), and a guest's `subscribe-options` in the configuration are
//! read the same way. [`parse`] deserializes them into a backend's own
//! `serde` struct, reading numbers and booleans from their text, so a backend
//! declares its keys once (with `deny_unknown_fields`) and an unknown key or
//! a bad value is refused with a message naming it.

use std::collections::BTreeMap;

use serde::de::value::{Error as DeError, MapDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::BrokerError;

/// Reads `extensions` into `T`; errors name the backend and the key.
pub fn parse<T: DeserializeOwned>(
    backend: &str,
    extensions: &BTreeMap<String, String>,
) -> Result<T, BrokerError> {
    let map = MapDeserializer::new(
        extensions
            .iter()
            .map(|(k, v)| (k.as_str(), Text(v.as_str()))),
    );
    serde_path_to_error::deserialize(map).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key.is_empty() || key == "." {
            BrokerError::invalid(format!("{backend} subscription extensions: {inner}"))
        } else {
            BrokerError::invalid(format!("{backend} extension `{key}`: {inner}"))
        }
    })
}

/// One extension value: text, read as whatever the field wants.
struct Text<'a>(&'a str);

impl<'de> IntoDeserializer<'de, DeError> for Text<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl Text<'_> {
    fn number<N: std::str::FromStr>(&self, what: &str) -> Result<N, DeError> {
        self.0
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected {what}, got `{}`", self.0)))
    }
}

macro_rules! numbers {
    ($($method:ident $visit:ident $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.number::<$ty>($what)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Text<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            v => Err(de::Error::custom(format!(
                "expected `true` or `false`, got `{v}`"
            ))),
        }
    }

    numbers! {
        deserialize_u8 visit_u8 u8, "a whole number from 0 to 255";
        deserialize_u16 visit_u16 u16, "a whole number from 0 to 65535";
        deserialize_u32 visit_u32 u32, "a whole number";
        deserialize_u64 visit_u64 u64, "a whole number";
        deserialize_i8 visit_i8 i8, "a whole number";
        deserialize_i16 visit_i16 i16, "a whole number";
        deserialize_i32 visit_i32 i32, "a whole number";
        deserialize_i64 visit_i64 i64, "a whole number";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Ext {
        durable: Option<String>,
        #[serde(default)]
        qos: u8,
        #[serde(default)]
        on: bool,
        policy: Option<Policy>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Policy {
        All,
        New,
    }

    fn ext(pairs: &[(&str, &str)]) -> Result<Ext, BrokerError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse("x", &map)
    }

    #[test]
    fn values_are_read_from_text() {
        let e = ext(&[
            ("durable", "d"),
            ("qos", "2"),
            ("on", "true"),
            ("policy", "new"),
        ])
        .unwrap();
        assert_eq!(
            e,
            Ext {
                durable: Some("d".into()),
                qos: 2,
                on: true,
                policy: Some(Policy::New)
            }
        );
        assert_eq!(ext(&[]).unwrap().qos, 0);
    }

    #[test]
    fn errors_name_backend_and_key() {
        let e = ext(&[("qos", "high")]).unwrap_err().to_string();
        assert!(e.contains("x extension `qos`") && e.contains("high"), "{e}");
        let e = ext(&[("qos", "300")]).unwrap_err().to_string();
        assert!(e.contains("`qos`"), "{e}");
        let e = ext(&[("durible", "d")]).unwrap_err().to_string();
        assert!(e.contains("durible") && e.contains("durable"), "{e}");
        let e = ext(&[("policy", "old")]).unwrap_err().to_string();
        assert!(e.contains("`policy`") && e.contains("old"), "{e}");
        let e = ext(&[("on", "yes")]).unwrap_err().to_string();
        assert!(e.contains("`on`") && e.contains("yes"), "{e}");
    }
}
