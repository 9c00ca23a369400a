//! The embedded broker as a backend kind of the registry (`backend =
//! "embedded"`): every client of that kind in one host shares one broker.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use courier_broker::factory::{BackendFactory, NoExtensions};
use courier_broker::{Backend, BrokerError, Features};

use crate::EmbeddedBroker;

/// The embedded broker's factory. It holds the host's broker (in memory
/// unless given one opened on a data directory), made on first use.
#[derive(Default)]
pub struct Embedded {
    broker: OnceLock<EmbeddedBroker>,
}

impl Embedded {
    /// A factory whose clients all use `broker`.
    pub fn new(broker: EmbeddedBroker) -> Self {
        Self {
            broker: OnceLock::from(broker),
        }
    }

    /// The broker its clients use.
    pub fn broker(&self) -> &EmbeddedBroker {
        self.broker.get_or_init(EmbeddedBroker::new)
    }
}

/// The embedded broker has no client options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedOptions {}

#[async_trait]
impl BackendFactory for Embedded {
    const KIND: &'static str = "embedded";
    const REMOTE: bool = false;
    type Options = EmbeddedOptions;
    type Extensions = NoExtensions;

    fn features(_: &EmbeddedOptions) -> Features {
        Features::ALL
    }

    async fn connect(
        &self,
        _endpoint: &courier_broker::tls::Endpoint,
        _options: &EmbeddedOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        Ok(Arc::new(self.broker().clone()))
    }
}
