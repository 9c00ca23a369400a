//! The world tests' harness: a runtime on the embedded broker started from
//! TOML that names the built guests, and subscriptions that watch channels.

use std::time::Duration;

use courier_broker::{Backend, Message, Subscription};
use courier_runtime::{Config, Runtime};
use courier_test_support::messages::{self, watch};
use courier_test_support::{guests, wait_until_async};

pub use courier_test_support::messages::{next, next_delivery};

/// How long the host may take to go idle.
pub const WAIT: Duration = Duration::from_secs(10);

/// A started runtime plus subscriptions that watch channels of the embedded broker.
pub struct Harness {
    pub runtime: Runtime,
}

impl Harness {
    /// Starts a runtime from TOML where `{probe}` etc. name the built guests.
    pub async fn start(toml: &str) -> Self {
        let config = Config::from_toml(&guests::fill(toml)).expect("valid test config");
        let runtime = Runtime::new(config).expect("runtime");
        runtime.start().await.expect("start");
        Self { runtime }
    }

    pub fn broker(&self) -> &courier_embedded::EmbeddedBroker {
        self.runtime.clients().embedded()
    }

    pub async fn watch(&self, ch: &str) -> Box<dyn Subscription> {
        watch(self.broker(), ch).await
    }

    pub async fn publish(&self, topic: &str, data: &str) {
        self.broker()
            .publish(vec![Message::new(topic, data.to_string())])
            .await
            .unwrap();
    }

    /// Sends `cmd` to the probe on channel `cmd` and returns the probe's report.
    pub async fn probe(&self, results: &mut Box<dyn Subscription>, cmd: &str) -> String {
        self.publish("cmd", cmd).await;
        let report = next(results).await;
        assert_eq!(report.meta("cmd"), Some(cmd), "report for another command");
        String::from_utf8(report.data.to_vec()).unwrap()
    }

    /// Waits until the host holds no message and the broker has none unsettled.
    pub async fn wait_idle(&self) {
        wait_until_async(WAIT, "the host going idle", || {
            self.runtime.idle() && self.broker().unsettled() == Some(0)
        })
        .await;
    }
}

/// Asserts nothing arrives on `sub` for a short while.
pub async fn nothing(sub: &mut Box<dyn Subscription>) {
    messages::nothing(sub, Duration::from_millis(300)).await
}

/// The probe guest, subscribed to `cmd`, reporting on `probe.result`.
pub const PROBE: &str = r#"
[clients.default]
backend = "embedded"
[clients.other]
backend = "embedded"
[clients.secret]
backend = "embedded"
[guests.probe]
component = "{probe}"
clients = ["other"]
subscribe = ["cmd"]
allow-subscribe = ["cmd", "extra.>"]
allow-publish = ["probe.result", "out", "out2"]
max-attempts = 2
backoff-ms = 10
dead-letter = "dlq"
handler-timeout-ms = 500
memory-limit-mib = 32
max-message-bytes = 1024
"#;
