//! What is wrong with a configuration, naming the file, the dotted key and,
//! where it can be found, the line.

use std::fmt;
use std::path::PathBuf;

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad TOML, unknown key, or wrong type (the message has the line).
    #[error("invalid config file `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("invalid config: {}`{key}`: {message}", Line(*line))]
    Invalid {
        /// The dotted key, e.g. `guests.uppercase.client`.
        key: String,
        /// The line of the file it is on, where known.
        line: Option<usize>,
        /// What is wrong with it.
        message: String,
    },
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "line {n} "),
            None => Ok(()),
        }
    }
}

/// An [`ConfigError::Invalid`] without a line.
pub(crate) fn invalid(key: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        line: None,
        message: message.to_string(),
    }
}
