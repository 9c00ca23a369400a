//! `key=value` arguments of the benchmarks.

use std::collections::BTreeMap;

use anyhow::Context;

/// `key=value` arguments, with defaults.
pub(crate) struct Args(BTreeMap<String, String>);

impl Args {
    pub(crate) fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .ok()
                .with_context(|| format!("bad value `{v}` for `{key}`")),
            None => Ok(default),
        }
    }
    pub(crate) fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
}

pub(crate) fn args_of(list: &[&str]) -> Args {
    Args(
        list.iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}
