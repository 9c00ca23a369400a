//! The two-host takeover workload: two `courier run` hosts share a
//! point-to-point group; one is killed with SIGKILL once a fifth of the
//! messages are handled, and the survivor must handle every message the dead
//! one had not settled.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The configuration both hosts run: `client` is the body of
/// `[clients.default]` (its options included); the guest `uppercase`
/// consumes `{ns}.in` point-to-point in `group`, 20 ms a message, and
/// writes to `{ns}.out`.
pub fn config(client: &str, ns: &str, group: &str) -> String {
    format!(
        r#"
[host]
summary-secs = 0

[clients.default]
{client}

[guests.up]
component = "{component}"
subscribe = ["{ns}.in"]
allow-publish = ["{ns}.>"]
mode = "point-to-point"
group = "{group}"
batch-size = 10
ack-wait-ms = 2000
env = {{ OUT = "{ns}.out", DELAY_MS = "20" }}
"#,
        component = crate::guests::UPPERCASE,
    )
}

fn host(courier: &str, config: &Path) -> Child {
    Command::new(courier)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn courier")
}

/// Runs two hosts of `config` (guest outputs `M0` … `M{n-1}` in any order)
/// until `next` (the next output, `None` after a quiet spell) has given
/// every one or `deadline` passed, killing the first host on the way; then
/// stops the survivor with SIGTERM and checks: nothing missing, and the
/// killed host did part of the work. `name` heads the printed figures.
pub async fn two_hosts_one_killed(
    name: &str,
    courier: &str,
    config: &Path,
    n: usize,
    deadline: Duration,
    mut next: impl AsyncFnMut() -> Option<String>,
) {
    let mut a = host(courier, config);
    let mut b = host(courier, config);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + deadline;
    let mut killed = false;
    while seen.len() < n && Instant::now() < deadline {
        if !killed && seen.len() >= n / 5 {
            a.kill().unwrap(); // SIGKILL
            killed = true;
        }
        if let Some(output) = next().await {
            *seen.entry(output).or_default() += 1;
        }
    }
    let _ = a.kill();
    a.wait().unwrap();
    // Stop the survivor gracefully and read its summary.
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    let mut stderr = String::new();
    b.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    b.wait().unwrap();

    assert!(
        killed,
        "the first host was never killed (saw {})",
        seen.len()
    );
    let missing: Vec<String> = (0..n)
        .map(|i| format!("M{i}"))
        .filter(|m| !seen.contains_key(m))
        .collect();
    let duplicates: usize = seen.values().map(|k| k - 1).sum();
    eprintln!(
        "{name}: {n} published, {} handled, {duplicates} duplicates, {} missing",
        seen.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "never handled: {missing:?}");
    let delivered: usize = stderr
        .lines()
        .find_map(|l| l.split("done: ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no summary from the survivor:\n{stderr}"));
    assert!(
        delivered < n,
        "the survivor handled everything ({delivered}); the killed host did no work"
    );
}
