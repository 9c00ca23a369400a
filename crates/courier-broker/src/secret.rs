//! Secrets — passwords and tokens in broker urls — kept out of everything
//! Courier shows: errors, logs, health records and `Debug` output.
//!
//! Every backend names its broker with [`redact_url`], and takes credentials
//! out of a url with [`credentials`] where its client library does not read
//! them itself (NATS, MQTT). [`Secret`] holds a secret value whose `Debug`
//! and `Display` never print it.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::BrokerError;

/// What stands for a secret wherever one would be shown.
pub const REDACTED: &str = "<redacted>";

/// A secret value: printed as `<redacted>`, read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `url` with its user information (`user:password@`, `token@`) replaced
/// by `<redacted>@`, to name a broker without its credentials.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((start, end)) => format!("{}{REDACTED}@{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Credentials written in a url.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, or the token when there is no password.
    pub user: String,
    /// The password, if one is given.
    pub password: Option<Secret>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &REDACTED)
            .field("password", &self.password)
            .finish()
    }
}

/// Splits `url` into the url without user information and the credentials
/// it held (percent-decoded), if any.
pub fn credentials(url: &str) -> Result<(String, Option<Credentials>), BrokerError> {
    let Some((start, end)) = userinfo(url) else {
        return Ok((url.to_string(), None));
    };
    let info = &url[start..end - 1];
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                BrokerError::invalid(format!(
                    "the credentials in `{}` are not UTF-8 once percent-decoded",
                    redact_url(url)
                ))
            })
    };
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (decode(u)?, Some(Secret::new(decode(p)?))),
        None => (decode(info)?, None),
    };
    let rest = format!("{}{}", &url[..start], &url[end..]);
    Ok((rest, Some(Credentials { user, password })))
}

/// The byte range of `user:password@` in `url` (with the `@`), if any.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |n| start + n);
    let at = url[start..authority_end].rfind('@')? + start;
    Some((start, at + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("nats://alice:s3cret@127.0.0.1:4222"),
            "nats://<redacted>@127.0.0.1:4222"
        );
        assert_eq!(redact_url("nats://tok@h:1/x"), "nats://<redacted>@h:1/x");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        // An `@` after the authority is not user information.
        assert_eq!(redact_url("amqp://h/v@host"), "amqp://h/v@host");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn credentials_are_split_and_decoded() {
        let (rest, c) = credentials("mqtt://bob:p%40ss%3Aword@h:1883").unwrap();
        assert_eq!(rest, "mqtt://h:1883");
        let c = c.unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.password.as_ref().unwrap().expose(), "p@ss:word");
        assert!(!format!("{c:?}").contains("p@ss"));
        let (rest, c) = credentials("nats://t0ken@h").unwrap();
        assert_eq!((rest.as_str(), c.unwrap().password), ("nats://h", None));
        assert_eq!(credentials("nats://h").unwrap(), ("nats://h".into(), None));
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
    }
}
