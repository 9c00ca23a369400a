//! `POST /v1/channels/{channel}`: the request's headers read into the
//! message (content type, reply-to, metadata), every part checked, then
//! published; `202` once the broker has it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_broker::message::{check_text, is_reserved};
use courier_broker::pattern::allowed_topic;
use courier_broker::{BrokerError, ErrorKind, Message, Pattern};

use super::AppState;
use super::auth::authorize;

/// Header giving the message's reply-to channel.
pub const REPLY_TO_HEADER: &str = "courier-reply-to";
/// Prefix of the headers giving the message's metadata, one entry each.
pub const META_HEADER_PREFIX: &str = "courier-meta-";
/// Longest metadata key accepted at the ingress, in bytes.
pub const MAX_META_KEY_BYTES: usize = 255;
/// Longest metadata value accepted at the ingress, in bytes.
pub const MAX_META_VALUE_BYTES: usize = 4096;

/// Publishes the body to `channel`, with the headers' content type,
/// reply-to and metadata, once the token (if any) allows it.
pub(super) async fn publish(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let grant = match authorize(&state.tokens, &headers) {
        Ok(grant) => grant,
        Err(refused) => return refused.into_response(),
    };
    if let Err(e) = Pattern::parse_literal(&channel) {
        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    }
    if let Some((name, token)) = grant
        && !allowed_topic(&token.allow_publish, &channel)
    {
        return (
            StatusCode::FORBIDDEN,
            format!("token `{name}` may not publish to `{channel}`\n"),
        )
            .into_response();
    }
    let CourierHeaders { reply_to, metadata } = match courier_headers(&headers) {
        Ok(fields) => fields,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let mut message = Message::new(channel, body);
    message.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    message.reply_to = reply_to;
    message.metadata = metadata;
    match state.ingress.publish(vec![message]).await {
        Ok(()) => {
            metrics::counter!("courier_ingress_messages_total").increment(1);
            (StatusCode::ACCEPTED, "accepted\n").into_response()
        }
        Err(e) => {
            let mut response = (status_of(&e), format!("{e}\n")).into_response();
            if e.kind() == ErrorKind::Busy {
                // Full: the client may try again shortly.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// The reply-to and metadata given by a request's `Courier-` headers,
/// each checked; the first bad one is the error.
fn courier_headers(headers: &HeaderMap) -> Result<CourierHeaders, BrokerError> {
    let mut reply_to = None;
    let mut metadata = Vec::new();
    for (name, value) in headers {
        // Header names arrive in lower case.
        let name = name.as_str();
        if !name.starts_with("courier-") {
            continue;
        }
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            BrokerError::invalid(format!("header `{name}`: the value is not UTF-8"))
        })?;
        if name == REPLY_TO_HEADER {
            if reply_to.is_some() {
                return Err(BrokerError::invalid(format!(
                    "header `{name}` is given more than once"
                )));
            }
            Pattern::parse_literal(value)
                .map_err(|e| e.context(format!("header `{name}`: not a channel")))?;
            reply_to = Some(value.to_string());
        } else if let Some(key) = name.strip_prefix(META_HEADER_PREFIX) {
            if key.is_empty() {
                return Err(BrokerError::invalid(format!(
                    "header `{name}` names no metadata key"
                )));
            }
            if is_reserved(key) {
                return Err(BrokerError::invalid(format!(
                    "header `{name}`: metadata keys starting with `courier-` are Courier's own"
                )));
            }
            check_text("the metadata key", key, MAX_META_KEY_BYTES)
                .and_then(|()| check_text("the value", value, MAX_META_VALUE_BYTES))
                .map_err(|e| e.context(format!("header `{name}`")))?;
            metadata.push((key.to_string(), value.to_string()));
        } else {
            return Err(BrokerError::invalid(format!(
                "unknown header `{name}`: Courier reads `{REPLY_TO_HEADER}` and \
                 `{META_HEADER_PREFIX}KEY`"
            )));
        }
    }
    Ok(CourierHeaders { reply_to, metadata })
}

/// What a request's `Courier-` headers say about its message.
#[derive(Debug)]
struct CourierHeaders {
    reply_to: Option<String>,
    metadata: Vec<(String, String)>,
}

/// The HTTP status of a failed publish, decided by the error's kind.
fn status_of(e: &BrokerError) -> StatusCode {
    match e.kind() {
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Connection | ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn courier_headers_become_reply_to_and_metadata() {
        let CourierHeaders { reply_to, metadata } = courier_headers(&headers(&[
            ("Content-Type", b"text/plain"),
            ("Courier-Reply-To", b"replies.1"),
            ("Courier-Meta-Trace", b"abc"),
            ("courier-meta-trace", b"def"),
            ("Courier-Meta-Region", "\u{e9}u".as_bytes()),
        ]))
        .unwrap();
        assert_eq!(reply_to.as_deref(), Some("replies.1"));
        assert_eq!(
            metadata,
            [
                ("trace".to_string(), "abc".to_string()),
                ("trace".to_string(), "def".to_string()),
                ("region".to_string(), "\u{e9}u".to_string()),
            ]
        );
        let long = "x".repeat(MAX_META_VALUE_BYTES + 1);
        type Given<'a> = &'a [(&'a str, &'a [u8])];
        let refused: [(Given, &str); 8] = [
            (&[("Courier-Reply-To", b"a.*")], "not a channel"),
            (
                &[("Courier-Reply-To", b"a"), ("Courier-Reply-To", b"b")],
                "more than once",
            ),
            (&[("Courier-Meta-Courier-Attempt", b"1")], "Courier's own"),
            (&[("Courier-Meta-", b"1")], "names no metadata key"),
            (&[("Courier-Meta-K", b"a\tb")], "control character U+0009"),
            (&[("Courier-Meta-K", long.as_bytes())], "at most 4096"),
            (&[("Courier-Meta-K", b"\xff")], "not UTF-8"),
            (
                &[("Courier-Replyto", b"a")],
                "unknown header `courier-replyto`",
            ),
        ];
        for (given, expected) in refused {
            let e = courier_headers(&headers(given)).unwrap_err().to_string();
            assert!(e.contains(expected), "{given:?}: {e}");
        }
    }

    #[test]
    fn status_follows_the_kind_not_the_text() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "timed out");
        assert_eq!(
            status_of(&BrokerError::connection("nats", refused)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&BrokerError::timeout("publish", Duration::from_secs(1))),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status_of(&BrokerError::invalid("bad header")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&BrokerError::busy("embedded", "full")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&BrokerError::other("connection refused")),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
