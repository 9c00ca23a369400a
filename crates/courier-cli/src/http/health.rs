//! `/healthz` (is the host alive and able to run a guest), `/readyz` (is
//! every client connected and every guest running) and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_runtime::readiness::{ClientReadiness, GuestReadiness};
use serde::Serialize;

use super::AppState;

/// How long `/readyz` waits for a client that is not connected yet to
/// answer its connection attempt (which itself runs on, with the client's
/// timeout).
pub const READY_WAIT: Duration = Duration::from_secs(1);

/// `/metrics`: the Prometheus text, when metrics are on.
pub(super) async fn metrics(State(state): State<AppState>) -> (StatusCode, String) {
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
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
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
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
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
