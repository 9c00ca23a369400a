//! Channel patterns in NATS syntax, used by every backend.
//!
//! Channels are dot-separated tokens (`orders.eu.created`). In a pattern `*`
//! stands for exactly one token and `>` (last token only) for one or more
//! tokens. Backends translate patterns into their own syntax (MQTT `+`/`#`,
//! AMQP `*`/`#`, ...); allow-lists are patterns too, and [`Pattern::covers`]
//! decides whether a subscription stays inside one.
//!
//! [`Pattern::parse`] is the one check of a channel name, for every way one
//! comes in (a guest's `send` and subscriptions, the HTTP ingress, `courier
//! publish`, the configuration): at most [`MAX_CHANNEL_BYTES`] bytes, no
//! control characters or white space, and none of `/ + #`, which other
//! brokers use as separators and wildcards, so that a channel means the same
//! on every backend.

use std::fmt;

use crate::BrokerError;

/// The longest channel name, in bytes: what every backend can carry (an
/// AMQP routing key is a short string of at most 255 bytes).
pub const MAX_CHANNEL_BYTES: usize = 255;

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens; always last.
    Rest,
}

/// A validated channel pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses a pattern, rejecting empty tokens and a `>` that is not last.
    pub fn parse(source: &str) -> Result<Self, BrokerError> {
        if source.is_empty() {
            return Err(BrokerError::invalid("empty channel"));
        }
        crate::message::check_text("a channel", source, MAX_CHANNEL_BYTES)?;
        if let Some(c) = source.chars().find(|c| matches!(c, '/' | '+' | '#')) {
            return Err(BrokerError::invalid(format!(
                "channel `{source}` contains `{c}`: channels are dot-separated tokens, \
                 with `*` and `>` as wildcards"
            )));
        }
        let parts: Vec<&str> = source.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "" => {
                    return Err(BrokerError::invalid(format!(
                        "channel `{source}` has an empty token"
                    )));
                }
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                ">" => {
                    return Err(BrokerError::invalid(format!(
                        "channel `{source}`: `>` may only be the last token"
                    )));
                }
                p if p.chars().any(char::is_whitespace) => {
                    return Err(BrokerError::invalid(format!(
                        "channel `{source}` contains white space"
                    )));
                }
                p => Token::Literal(p.to_string()),
            };
            tokens.push(token);
        }
        Ok(Self {
            source: source.to_string(),
            tokens,
        })
    }

    /// Parses a concrete channel name (no wildcards), as used to publish.
    pub fn parse_literal(source: &str) -> Result<Self, BrokerError> {
        let p = Self::parse(source)?;
        if p.is_literal() {
            Ok(p)
        } else {
            Err(BrokerError::invalid(format!(
                "cannot publish to `{source}`: wildcards are only valid in subscriptions"
            )))
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// `>`: every channel.
    pub fn everything() -> Self {
        Pattern::parse(">").expect("`>` is a pattern")
    }

    /// Whether the pattern has no wildcard.
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether the concrete `topic` matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
                Token::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Token::Literal(l) => match parts.next() {
                    Some(p) if p == l => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Whether every channel matched by `other` is also matched by `self`:
    /// the test for a subscription staying inside an allow-list entry.
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.tokens.iter();
        for mine in &self.tokens {
            match (mine, theirs.next()) {
                (_, None) => return false,
                (Token::Rest, Some(_)) => return true,
                (Token::One, Some(Token::One | Token::Literal(_))) => {}
                (Token::Literal(a), Some(Token::Literal(b))) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }

    /// The pattern in another broker's syntax: tokens joined by `sep`, with
    /// `one` for `*` and `rest` for `>`. Each backend translates with it in
    /// its own crate (MQTT: `/`, `+`, `#`; an AMQP topic exchange: `.`, `*`,
    /// `#`).
    pub fn render(&self, sep: &str, one: &str, rest: &str) -> String {
        let parts: Vec<&str> = self
            .tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.as_str(),
                Token::One => one,
                Token::Rest => rest,
            })
            .collect();
        parts.join(sep)
    }
}

impl std::str::FromStr for Pattern {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, BrokerError> {
        Pattern::parse(s)
    }
}

/// A pattern in configuration: text in NATS syntax, refused with the reason
/// when it is not a valid pattern.
impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Checks that every message goes to a concrete channel (no wildcard), as
/// every backend requires before publishing.
pub fn check_topics(messages: &[crate::Message]) -> Result<(), BrokerError> {
    let mut last: Option<&str> = None;
    for m in messages {
        // A batch usually goes to one topic: check each run of it once.
        if last != Some(m.topic.as_str()) {
            Pattern::parse_literal(&m.topic)?;
            last = Some(&m.topic);
        }
    }
    Ok(())
}

/// Whether any pattern in `allow` matches the concrete `topic`.
pub fn allowed_topic(allow: &[Pattern], topic: &str) -> bool {
    allow.iter().any(|a| a.matches(topic))
}

/// Whether any pattern in `allow` covers the subscription pattern `wanted`.
pub fn allowed_pattern(allow: &[Pattern], wanted: &Pattern) -> bool {
    allow.iter().any(|a| a.covers(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn matching() {
        assert!(p("a.b").matches("a.b"));
        assert!(!p("a.b").matches("a.b.c"));
        assert!(!p("a.b").matches("a"));
        assert!(p("a.*").matches("a.b"));
        assert!(!p("a.*").matches("a.b.c"));
        assert!(!p("a.*").matches("a"));
        assert!(p("a.>").matches("a.b.c"));
        assert!(!p("a.>").matches("a"));
        assert!(p(">").matches("x"));
        assert!(p("*.b.>").matches("a.b.c.d"));
        assert!(!p("a.*").matches("a."));
    }

    #[test]
    fn parse_errors() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a..b").is_err());
        assert!(Pattern::parse("a.>.b").is_err());
        assert!(Pattern::parse("a b").is_err());
        for bad in [
            "a/b",
            "a+",
            "a.#",
            "a\0b",
            "a\u{7f}",
            "tab\there",
            "é\u{85}",
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{bad:?}");
        }
        let long = "x".repeat(MAX_CHANNEL_BYTES + 1);
        assert!(
            Pattern::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("256 bytes")
        );
        assert!(Pattern::parse(&long[1..]).is_ok());
        assert!(Pattern::parse("ünïcode.ok").is_ok());
        assert!(Pattern::parse_literal("a.*").is_err());
        assert!(Pattern::parse_literal("a.b").is_ok());
    }

    #[test]
    fn covering() {
        assert!(p(">").covers(&p("a.b")));
        assert!(p(">").covers(&p("a.>")));
        assert!(p("a.>").covers(&p("a.*")));
        assert!(p("a.>").covers(&p("a.b.>")));
        assert!(!p("a.>").covers(&p("a")));
        assert!(!p("a.>").covers(&p(">")));
        assert!(p("a.*").covers(&p("a.b")));
        assert!(p("a.*").covers(&p("a.*")));
        assert!(!p("a.*").covers(&p("a.>")));
        assert!(!p("a.b").covers(&p("a.*")));
        assert!(!p("in").covers(&p("out")));
        assert!(p("in").covers(&p("in")));
    }

    #[test]
    fn translation() {
        assert_eq!(p("a.*.>").render("/", "+", "#"), "a/+/#");
        assert_eq!(p("in").render("/", "+", "#"), "in");
    }
}
