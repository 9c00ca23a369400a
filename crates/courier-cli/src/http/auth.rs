//! Bearer tokens of the ingress: which token a request carries, compared in
//! constant time, and the 401 without one.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_runtime::config::ingress::IngressToken;

/// The token a request carries (`Authorization: Bearer …`), when the
/// ingress requires one: 401 without a known token. Tokens are compared in
/// constant time and never logged.
pub(super) fn authorize<'a>(
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
pub(super) struct Unauthorized;

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
