//! The HTTP endpoint: ingress into the broker, Prometheus metrics, health
//! and readiness; over HTTPS when `[host]` has a certificate ([`crate::tls`]).
//!
//! `POST /v1/channels/{channel}` publishes the body. Its `Content-Type`
//! becomes the message's content type, `Courier-Reply-To: CHANNEL` its
//! reply-to, and each `Courier-Meta-KEY: VALUE` header one metadata entry
//! `KEY` = `VALUE` (header names are case-insensitive: keys arrive in lower
//! case). Any other `Courier-` header is refused, as are reserved keys
//! (`courier-…`), a reply-to that is not a channel and keys or values a
//! broker cannot carry: `400` with the reason, nothing published.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use courier_broker::message::{check_text, is_reserved};
use courier_broker::pattern::allowed_topic;
use courier_broker::{Backend, BrokerError, ErrorKind, Message, Pattern};
use courier_runtime::Runtime;
use courier_runtime::config::ingress::IngressToken;
use courier_runtime::readiness::{ClientReadiness, GuestReadiness};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::tls::TlsListener;

/// Header giving the message's reply-to channel.
pub const REPLY_TO_HEADER: &str = "courier-reply-to";
/// Prefix of the headers giving the message's metadata, one entry each.
pub const META_HEADER_PREFIX: &str = "courier-meta-";
/// Longest metadata key accepted at the ingress, in bytes.
pub const MAX_META_KEY_BYTES: usize = 255;
/// Longest metadata value accepted at the ingress, in bytes.
pub const MAX_META_VALUE_BYTES: usize = 4096;
/// How long `/readyz` waits for a client that is not connected yet to
/// answer its connection attempt (which itself runs on, with the client's
/// timeout).
pub const READY_WAIT: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub ingress: Arc<dyn Backend>,
    pub metrics: Option<PrometheusHandle>,
    pub max_body: usize,
    /// Bearer tokens the ingress requires; none: it is open (loopback only).
    pub tokens: Arc<BTreeMap<String, IngressToken>>,
}

/// Binds `addr` and serves in the background — HTTPS with `tls`, else
/// plain HTTP — until `shutdown` resolves; then it stops accepting
/// connections and lets the requests under way finish (the task ends when
/// they have).
pub async fn serve(
    addr: std::net::SocketAddr,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let max_body = state.max_body;
    let app = Router::new()
        .route("/v1/channels/{channel}", post(publish))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    Ok(match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config)?;
            tracing::info!("listening on https://{local}");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("https server: {e}");
                }
            })
        }
        None => {
            tracing::info!("listening on http://{local}");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("http server: {e}");
                }
            })
        }
    })
}

/// The token a request carries (`Authorization: Bearer …`), when the
/// ingress requires one: 401 without a known token. Tokens are compared in
/// constant time and never logged.
fn authorize<'a>(
    tokens: &'a BTreeMap<String, IngressToken>,
    headers: &HeaderMap,
) -> Result<Option<(&'a str, &'a IngressToken)>, Unauthorized> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found = given.and_then(|given| {
        tokens
            .iter()
            .find(|(_, t)| same(t.token.expose().as_bytes(), given.as_bytes()))
    });
    match found {
        Some((name, token)) => Ok(Some((name.as_str(), token))),
        None => Err(Unauthorized),
    }
}

/// A request without a known bearer token.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required (Authorization: Bearer TOKEN)\n",
        )
            .into_response()
    }
}

/// Byte strings compared in time that depends on their length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn publish(
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

async fn metrics(State(state): State<AppState>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::NOT_FOUND, "metrics are off\n".into()),
    }
}

/// The body of `/healthz`.
#[derive(Serialize)]
struct Health<'a> {
    /// `ok`, or `failing` when no guest can run.
    status: &'a str,
    guests: &'a [GuestReadiness],
}

/// The body of `/readyz`.
#[derive(Serialize)]
struct Ready<'a> {
    /// `ready` or `not-ready`.
    status: &'a str,
    /// What is not ready, one line each.
    #[serde(rename = "not-ready")]
    not_ready: Vec<String>,
    clients: &'a [ClientReadiness],
    guests: &'a [GuestReadiness],
}

/// Liveness: `200` while the host can run at least one of its guests (or
/// has none), `503` when none can (every guest's workers died, or the host
/// is stopping) — a restart is the cure. The body names each guest's state.
async fn healthz(State(state): State<AppState>) -> Response {
    let guests: Vec<_> = state
        .runtime
        .guests()
        .iter()
        .map(|g| GuestReadiness {
            name: g.name().to_string(),
            status: g.status(),
        })
        .collect();
    let alive = guests.is_empty() || guests.iter().any(|g| g.status.is_alive());
    let (code, status) = if alive {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failing")
    };
    json(
        code,
        &Health {
            status,
            guests: &guests,
        },
    )
}

/// Readiness: `200` when every client is connected and every guest runs,
/// else `503` naming what is not ready (`not-ready`, one line each).
async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.runtime.readiness(READY_WAIT).await;
    let ready = readiness.is_ready();
    let (code, status) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not-ready")
    };
    json(
        code,
        &Ready {
            status,
            not_ready: readiness.not_ready(),
            clients: &readiness.clients,
            guests: &readiness.guests,
        },
    )
}

/// A JSON response, one line.
fn json(code: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(body) => (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{body}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the JSON body: {e}\n"),
        )
            .into_response(),
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
