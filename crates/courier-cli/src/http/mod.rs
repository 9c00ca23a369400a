//! The HTTP endpoint: ingress into the broker, Prometheus metrics, health
//! and readiness; over HTTPS when `[host]` has a certificate ([`tls`]).
//!
//! `POST /v1/channels/{channel}` publishes the body. Its `Content-Type`
//! becomes the message's content type, `Courier-Reply-To: CHANNEL` its
//! reply-to, and each `Courier-Meta-KEY: VALUE` header one metadata entry
//! `KEY` = `VALUE` (header names are case-insensitive: keys arrive in lower
//! case). Any other `Courier-` header is refused, as are reserved keys
//! (`courier-…`), a reply-to that is not a channel and keys or values a
//! broker cannot carry: `400` with the reason, nothing published.
//!
//! - [`auth`]: bearer tokens of the ingress.
//! - [`ingress`]: `POST /v1/channels/{channel}`: headers, checks, publish.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`tls`]: the HTTPS listener.

mod auth;
mod health;
mod ingress;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use courier_broker::Backend;
use courier_runtime::Runtime;
use courier_runtime::config::ingress::IngressToken;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use self::health::{healthz, metrics, readyz};
use self::ingress::publish;
use self::tls::TlsListener;

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
