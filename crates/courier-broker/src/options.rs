//! Reading backend options — `[clients.NAME.options]` and subscription
//! extensions — as text, with errors that name the backend and the key.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::BrokerError;

/// Options of one backend, checked against the keys it knows.
pub struct OptionMap<'a> {
    backend: &'static str,
    map: &'a BTreeMap<String, String>,
}

impl<'a> OptionMap<'a> {
    /// Fails on the first key not in `known`.
    pub fn new(
        backend: &'static str,
        map: &'a BTreeMap<String, String>,
        known: &[&str],
    ) -> Result<Self, BrokerError> {
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(BrokerError::invalid(format!(
                "unknown {backend} option `{k}` (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self { backend, map })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(String::as_str)
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The error for a bad value of `key`.
    pub fn invalid(&self, key: &str, expected: &str, value: &str) -> BrokerError {
        BrokerError::invalid(format!(
            "{} option `{key}`: expected {expected}, got `{value}`",
            self.backend
        ))
    }

    /// A `true`/`false` value.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, BrokerError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.invalid(key, "true or false", v)),
        }
    }

    /// A number above zero.
    pub fn positive<T: FromStr + Default + PartialOrd>(
        &self,
        key: &str,
    ) -> Result<Option<T>, BrokerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<T>() {
                Ok(n) if n > T::default() => Ok(Some(n)),
                _ => Err(self.invalid(key, "a number above 0", v)),
            },
        }
    }

    /// A duration in milliseconds (above zero).
    pub fn millis(&self, key: &str, default: Duration) -> Result<Duration, BrokerError> {
        Ok(self
            .positive::<u64>(key)?
            .map_or(default, Duration::from_millis))
    }

    /// Fails when any of `keys` is set without `needed` being true.
    pub fn require(&self, keys: &[&str], needed: (&str, bool)) -> Result<(), BrokerError> {
        match keys.iter().find(|k| self.contains(k)) {
            Some(k) if !needed.1 => Err(BrokerError::invalid(format!(
                "{} option `{k}` needs `{} = true`",
                self.backend, needed.0
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_and_errors_name_backend_and_key() {
        let m = map(&[("on", "true"), ("n", "5"), ("ms", "20")]);
        let o = OptionMap::new("x", &m, &["on", "n", "ms"]).unwrap();
        assert!(o.flag("on", false).unwrap());
        assert_eq!(o.positive::<u16>("n").unwrap(), Some(5));
        assert_eq!(
            o.millis("ms", Duration::ZERO).unwrap(),
            Duration::from_millis(20)
        );
        assert_eq!(
            o.millis("none", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(1)
        );
        let e = OptionMap::new("x", &m, &["on"]).err().unwrap().to_string();
        assert!(
            e.contains("unknown x option `ms`") || e.contains("unknown x option `n`"),
            "{e}"
        );
        let m = map(&[("on", "yes"), ("n", "0")]);
        let o = OptionMap::new("x", &m, &["on", "n"]).unwrap();
        assert!(
            o.flag("on", false)
                .unwrap_err()
                .to_string()
                .contains("x option `on`")
        );
        assert!(
            o.positive::<u16>("n")
                .unwrap_err()
                .to_string()
                .contains("`n`")
        );
        assert!(
            o.require(&["n"], ("on", false))
                .unwrap_err()
                .to_string()
                .contains("needs `on = true`")
        );
    }
}
