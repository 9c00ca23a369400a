//! The world tests' harness: a runtime on the embedded broker started from
//! TOML that names the built guests, and subscriptions that watch channels.

use std::time::Duration;

use courier_broker::{Backend, Delivery, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::{Config, Runtime};

pub const WAIT: Duration = Duration::from_secs(10);

/// A started runtime plus subscriptions that watch channels of the embedded broker.
pub struct Harness {
    pub runtime: Runtime,
}

impl Harness {
    /// Starts a runtime from TOML where `{probe}` etc. name the built guests.
    pub async fn start(toml: &str) -> Self {
        let toml = toml
            .replace("{probe}", test_programs::PROBE)
            .replace("{uppercase}", test_programs::UPPERCASE)
            .replace("{flaky}", test_programs::FLAKY)
            .replace("{router}", test_programs::ROUTER)
            .replace("{mistyped}", test_programs::MISTYPED);
        let config = Config::from_toml(&toml).expect("valid test config");
        let runtime = Runtime::new(config).expect("runtime");
        runtime.start().await.expect("start");
        Self { runtime }
    }

    pub fn broker(&self) -> &courier_embedded::EmbeddedBroker {
        self.runtime.clients().embedded()
    }

    pub async fn watch(&self, ch: &str) -> Box<dyn Subscription> {
        self.broker()
            .subscribe(SubscriptionSpec::broadcast(Pattern::parse(ch).unwrap()))
            .await
            .unwrap()
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

    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !(self.runtime.idle() && self.broker().unsettled() == Some(0)) {
            assert!(tokio::time::Instant::now() < deadline, "never went idle");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub async fn next_delivery(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message within the deadline")
        .expect("subscription open")
        .expect("delivery")
}

/// The next message on `sub`, acked.
pub async fn next(sub: &mut Box<dyn Subscription>) -> Message {
    let d = next_delivery(sub).await;
    let m = d.message.clone();
    d.acker.ack().await.unwrap();
    m
}

/// Asserts nothing arrives on `sub` for a short while.
pub async fn nothing(sub: &mut Box<dyn Subscription>) {
    if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!(
            "unexpected message on {}: {:?}",
            d.message.topic, d.message.data
        );
    }
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
