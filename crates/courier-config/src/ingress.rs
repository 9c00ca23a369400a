//! `[host.ingress-tokens.NAME]`: who may publish through the HTTP ingress.
//! Each token is a bearer token, read from the environment or a file (never
//! written in the configuration), granted `allow-publish` patterns like a
//! guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use courier_broker::Pattern;
use courier_broker::secret::Secret;
use serde::Deserialize;

use crate::error::{ConfigError, invalid};

/// A token as written: where its value is, and what it may publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressTokenConfig {
    /// The environment variable holding the token.
    pub token_env: Option<String>,
    /// The file holding the token (relative to the config file).
    pub token_file: Option<PathBuf>,
    /// Channel patterns this token may publish to.
    pub allow_publish: Vec<Pattern>,
}

/// A bearer token of the ingress, read.
#[derive(Debug, Clone)]
pub struct IngressToken {
    /// The token; compared in constant time, never shown.
    pub token: Secret,
    /// Channel patterns this token may publish to.
    pub allow_publish: Vec<Pattern>,
}

/// Reads every token's value; `base` is the config file's folder.
pub(crate) fn resolve(
    tokens: &BTreeMap<String, IngressTokenConfig>,
    base: &Path,
) -> Result<BTreeMap<String, IngressToken>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, t) in tokens {
        let key = |k: &str| format!("host.ingress-tokens.{name}.{k}");
        let value = match (&t.token_env, &t.token_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                invalid(
                    key("token-env"),
                    format!("the environment variable `{var}` is not set (or not UTF-8)"),
                )
            })?,
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        invalid(
                            key("token-file"),
                            format!("cannot read `{}`: {e}", path.display()),
                        )
                    })?
                    .trim_end()
                    .to_string()
            }
            _ => {
                return Err(invalid(
                    key("token-env"),
                    "give one of `token-env` and `token-file`",
                ));
            }
        };
        if value.len() < 16 {
            return Err(invalid(
                key("token-env"),
                "the token is shorter than 16 characters: too easy to guess",
            ));
        }
        out.insert(
            name.clone(),
            IngressToken {
                token: Secret::new(value),
                allow_publish: t.allow_publish.clone(),
            },
        );
    }
    Ok(out)
}
