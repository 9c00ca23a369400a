//! Opening a connection to the broker, over TLS when the client asks for it:
//! the one place the publisher and every subscription connect through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier_broker::BrokerError;
use courier_broker::secret::redact_url;
use courier_broker::tls::{ClientTls, Endpoint};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::connection_error;

/// Where the backend connects: its url and, when it speaks TLS, how. The
/// url may list the nodes of a cluster separated by commas: a connection is
/// made to the node that answered last, else to the next ones in turn.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) urls: Vec<String>,
    pub(crate) tls: Option<ClientTls>,
    /// The url tried first next time (the last that answered).
    first: Arc<AtomicUsize>,
}

impl Target {
    /// The endpoint with its TLS settings resolved (`amqps://` alone turns
    /// TLS on with the system's certificate authorities).
    pub(crate) fn new(endpoint: &Endpoint) -> Result<Self, BrokerError> {
        let urls: Vec<String> = endpoint
            .url
            .split(',')
            .map(|u| u.trim().to_string())
            .collect();
        if urls.iter().any(String::is_empty) {
            return Err(BrokerError::invalid(format!(
                "amqp url `{}`: an empty url in the comma-separated list",
                shown(&urls)
            )));
        }
        Ok(Self {
            urls,
            tls: endpoint.tls("amqps")?,
            first: Arc::default(),
        })
    }

    /// The url without its credentials, for errors and logs.
    pub(crate) fn shown(&self) -> String {
        shown(&self.urls)
    }

    /// Connects within `timeout`: to the url that answered last, else to
    /// the next ones in turn, until one answers or the time is up.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Connection, BrokerError> {
        let deadline = Instant::now() + timeout;
        let first = self.first.load(Ordering::Relaxed);
        let mut last_error = None;
        for k in 0..self.urls.len() {
            let i = (first + k) % self.urls.len();
            let url = &self.urls[i];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let connecting = async {
                match &self.tls {
                    None => Connection::connect(url, ConnectionProperties::default()).await,
                    Some(tls) => open_tls(url, tls).await,
                }
            };
            match tokio::time::timeout(left, connecting).await {
                Ok(Ok(connection)) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(connection);
                }
                Ok(Err(e)) => last_error = Some(connection_error(e).context(redact_url(url))),
                Err(_) => {
                    last_error = Some(
                        connection_error(format!("no answer within {timeout:?}"))
                            .context(redact_url(url)),
                    );
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            connection_error(format!("no answer within {timeout:?}")).context(self.shown())
        }))
    }
}

/// The urls joined again, without their credentials.
fn shown(urls: &[String]) -> String {
    urls.iter()
        .map(|u| redact_url(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// A TLS connection to `url` made with the client's own rustls
/// configuration, so that `ca-file`, the client certificate, `server-name`
/// and `insecure-skip-verify` mean what they mean on every backend.
async fn open_tls(url: &str, tls: &ClientTls) -> lapin::Result<Connection> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
    // TLS is set up here, on a plain stream.
    uri.scheme = AMQPScheme::AMQP;
    let connector = RustlsConnector::from(tls.config());
    let domain = tls
        .server_name()
        .map(str::to_string)
        .unwrap_or_else(|| uri.authority.host.clone());
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let addrs = runtime.to_socket_addrs((uri.authority.host.clone(), uri.authority.port));
            let tcp = AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok(tcp.into_rustls(&connector, &domain).await?)
        },
        ConnectionProperties::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_lists_the_nodes_of_a_cluster() {
        let t = Target::new(&Endpoint::plain(
            "amqp://u:secret@127.0.0.1:1/%2f, amqp://u:secret@127.0.0.1:2/%2f",
        ))
        .unwrap();
        assert_eq!(t.urls.len(), 2);
        assert_eq!(t.urls[1], "amqp://u:secret@127.0.0.1:2/%2f");
        assert!(!t.shown().contains("secret"), "{}", t.shown());
        let e = Target::new(&Endpoint::plain("amqp://u:secret@h:1/%2f,"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty url") && !e.contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn connecting_tries_the_next_node() {
        // Two closed ports: both are tried, the error names the last.
        let closed = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap()
        };
        let (a, b) = (closed(), closed());
        let t = Target::new(&Endpoint::plain(format!(
            "amqp://127.0.0.1:{a}/%2f,amqp://127.0.0.1:{b}/%2f"
        )))
        .unwrap();
        let e = t
            .open(Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!(":{b}")), "{e}");
    }
}
