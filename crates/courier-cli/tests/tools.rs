//! `courier publish` and `courier subscribe` against a real broker. Without
//! a NATS server listening its test is ignored with the reason (failed when
//! `CI=true`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitCode, Stdio};

use courier_test_support::{Broker, Need, Trials, unique};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");

/// `courier subscribe ARGS` with client `events` of `config`, once it says
/// it is watching; its standard output is piped.
fn watching(args: &[&str], config: &str) -> Child {
    let mut sub = Command::new(COURIER)
        .arg("subscribe")
        .args(args)
        .args(["--config", config, "--client", "events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("watching") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "subscriber ended early"
        );
    }
    sub
}

#[cfg(feature = "nats")]
fn publish_and_subscribe_through_nats() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!("[clients.events]\n{}\n", Broker::Nats.client()),
    )
    .unwrap();
    let channel = unique("tools");
    let config = config.to_str().unwrap();
    // Publish once the subscriber says it is watching.
    let mut sub = watching(&[&format!("{channel}.*"), "--count", "2"], config);
    let published = Command::new(COURIER)
        .args(["publish", &format!("{channel}.a"), "first", "second"])
        .args(["--config", config, "--client", "events"])
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let mut out = String::new();
    sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(sub.wait().unwrap().success());
    assert_eq!(out, "first\nsecond\n");
}

/// `courier subscribe` stopped by SIGTERM ends as it does at ctrl-c: it
/// closes its subscription, and on Redis Streams the consumer group of a
/// broadcast subscription is removed, not left behind.
#[cfg(feature = "redis")]
fn subscribe_cleans_up_at_sigterm_as_at_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(
        &config,
        format!(
            "[clients.events]\n{}\noptions = {{ streams = true }}\n",
            Broker::Redis.client()
        ),
    )
    .unwrap();
    let redis = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &Broker::Redis.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for signal in ["TERM", "INT"] {
        let channel = unique("tools-sig");
        let mut sub = watching(&[&channel], config.to_str().unwrap());
        let groups = redis(&["XINFO", "GROUPS", &channel]);
        assert!(
            groups.contains("name"),
            "no consumer group while watching: {groups}"
        );
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &sub.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        assert!(
            sub.wait().unwrap().success(),
            "SIG{signal}: not a clean exit"
        );
        let groups = redis(&["XINFO", "GROUPS", &channel]);
        assert!(
            !groups.contains("name"),
            "SIG{signal}: the group was left behind: {groups}"
        );
        redis(&["DEL", &channel]);
    }
}

fn the_embedded_broker_is_not_reachable_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(&config, "[clients.default]\nbackend = \"embedded\"\n").unwrap();
    let out = Command::new(COURIER)
        .args(["publish", "in", "x", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("POST /v1/channels/CHANNEL"), "{stderr}");
    let out = Command::new(COURIER)
        .args([
            "publish",
            "in",
            "x",
            "--config",
            config.to_str().unwrap(),
            "--client",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client named `nope`"));
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    #[cfg(feature = "nats")]
    trials.test(
        "publish_and_subscribe_through_nats",
        &[Need::Broker(Broker::Nats)],
        publish_and_subscribe_through_nats,
    );
    #[cfg(feature = "redis")]
    trials.test(
        "subscribe_cleans_up_at_sigterm_as_at_ctrl_c",
        &[Need::Broker(Broker::Redis), Need::Tool("redis-cli")],
        subscribe_cleans_up_at_sigterm_as_at_ctrl_c,
    );
    trials.test(
        "the_embedded_broker_is_not_reachable_from_outside",
        &[],
        the_embedded_broker_is_not_reachable_from_outside,
    );
    trials.run()
}
