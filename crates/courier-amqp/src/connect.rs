//! Opening a connection to the broker, over TLS when the client asks for it:
//! the one place the publisher and every subscription connect through.

use courier_broker::BrokerError;
use courier_broker::secret::redact_url;
use courier_broker::tls::{ClientTls, Endpoint};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::connection_error;

/// Where the backend connects: its url and, when it speaks TLS, how.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) tls: Option<ClientTls>,
}

impl Target {
    /// The endpoint with its TLS settings resolved (`amqps://` alone turns
    /// TLS on with the system's certificate authorities).
    pub(crate) fn new(endpoint: &Endpoint) -> Result<Self, BrokerError> {
        Ok(Self {
            url: endpoint.url.clone(),
            tls: endpoint.tls("amqps")?,
        })
    }

    /// The url without its credentials, for errors and logs.
    pub(crate) fn shown(&self) -> String {
        redact_url(&self.url)
    }

    /// Connects within `timeout`.
    pub(crate) async fn open(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Connection, BrokerError> {
        let connecting = async {
            match &self.tls {
                None => Connection::connect(&self.url, ConnectionProperties::default()).await,
                Some(tls) => self.open_tls(tls).await,
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| {
                connection_error(format!("no answer within {timeout:?}")).context(self.shown())
            })?
            .map_err(|e| connection_error(e).context(self.shown()))
    }

    /// A TLS connection made with the client's own rustls configuration, so
    /// that `ca-file`, the client certificate, `server-name` and
    /// `insecure-skip-verify` mean what they mean on every backend.
    async fn open_tls(&self, tls: &ClientTls) -> lapin::Result<Connection> {
        let mut uri: AMQPUri = self
            .url
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
                let addrs =
                    runtime.to_socket_addrs((uri.authority.host.clone(), uri.authority.port));
                let tcp = AsyncTcpStream::connect(&runtime, addrs).await?;
                Ok(tcp.into_rustls(&connector, &domain).await?)
            },
            ConnectionProperties::default(),
        )
        .await
    }
}
