//! The HTTP endpoint: ingress into the broker, Prometheus metrics, health.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use courier_broker::pattern::allowed_topic;
use courier_broker::{Backend, BrokerError, ErrorKind, Message, Pattern};
use courier_runtime::Runtime;
use courier_runtime::config::ingress::IngressToken;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

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

/// Binds `addr` and serves in the background until `shutdown` resolves;
/// then it stops accepting connections and lets the requests under way
/// finish (the task ends when they have).
pub async fn serve(
    addr: std::net::SocketAddr,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let max_body = state.max_body;
    let app = Router::new()
        .route("/v1/channels/{channel}", post(publish))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("http server: {e}");
        }
    }))
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
    let mut message = Message::new(channel, body);
    message.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match state.ingress.publish(vec![message]).await {
        Ok(()) => {
            metrics::counter!("courier_ingress_messages_total").increment(1);
            (StatusCode::ACCEPTED, "accepted\n").into_response()
        }
        Err(e) => (status_of(&e), format!("{e}\n")).into_response(),
    }
}

/// The HTTP status of a failed publish, decided by the error's kind.
fn status_of(e: &BrokerError) -> StatusCode {
    match e.kind() {
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Connection => StatusCode::SERVICE_UNAVAILABLE,
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

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let guests = state.runtime.guests().len();
    (
        StatusCode::OK,
        format!("{{\"status\":\"ok\",\"guests\":{guests}}}\n"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
            status_of(&BrokerError::other("connection refused")),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
