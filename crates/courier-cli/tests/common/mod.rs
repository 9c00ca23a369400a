//! Helpers shared by the CLI's integration tests.

use std::time::Duration;

/// Whether a broker listens on 127.0.0.1:`port`. A missing broker skips the
/// test on a laptop and fails it in CI (`CI=true`).
pub fn broker(name: &str, port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is not running on {addr}, and CI needs it (run scripts/brokers.sh)"
    );
    eprintln!("skipping: {name} is not running on {addr}");
    false
}

/// A channel prefix `PREFIX.tPIDxNANOS`, unique to this test run, so runs
/// sharing a broker do not see each other's messages.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.t{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}
