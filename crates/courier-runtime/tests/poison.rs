//! A stream of poison (memory hogs, traps, outputs over the size limit)
//! leaves the host's memory bounded and good messages flowing.
//!
//! In a test binary of its own: it measures the resident memory of its
//! process, which the world tests, run side by side in one process, would
//! share (another test's guest growing its memory in the same window made it
//! fail about once in twenty runs).

#[path = "world/harness.rs"]
#[allow(dead_code, unused_imports)] // the world tests use the rest of it
mod harness;

use harness::{Harness, PROBE, next};

/// The host's resident memory, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kib << 10
}

#[tokio::test]
async fn a_stream_of_poison_leaves_host_memory_bounded() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let mut dlq = h.watch("dlq").await;
    // Warm up: an instance, a trap, a replacement.
    h.publish("cmd", "alloc 64").await;
    next(&mut dlq).await;
    assert_eq!(h.probe(&mut r, "echo").await, "ok");
    let before = rss_bytes();
    const ROUNDS: usize = 25;
    for _ in 0..ROUNDS {
        // Over the memory limit, a trap, a huge output, and good work.
        for cmd in ["alloc 64", "trap", "send-big out 4000000", "echo"] {
            h.publish("cmd", cmd).await;
        }
    }
    let mut letters = 0;
    let mut reports = Vec::new();
    while letters < 2 * ROUNDS || reports.len() < 2 * ROUNDS {
        tokio::select! {
            l = next(&mut dlq) => {
                let cmd = String::from_utf8(l.data.to_vec()).unwrap();
                assert!(cmd == "alloc 64" || cmd == "trap", "dead letter {cmd}");
                letters += 1;
            }
            m = next(&mut r) => reports.push(String::from_utf8(m.data.to_vec()).unwrap()),
        }
    }
    let ok = reports.iter().filter(|r| *r == "ok").count();
    let too_big = reports
        .iter()
        .filter(|r| r.starts_with("err:") && r.contains("more than the limit"))
        .count();
    assert_eq!((ok, too_big), (ROUNDS, ROUNDS), "{reports:?}");
    let after = rss_bytes();
    let grown = after.saturating_sub(before) >> 20;
    eprintln!(
        "poison: {} traps, {ROUNDS} refused outputs of 4 MB, {ROUNDS} good messages; \
         host RSS {} -> {} MiB",
        h.runtime.guest("probe").unwrap().stats().traps,
        before >> 20,
        after >> 20
    );
    assert!(grown < 64, "host memory grew by {grown} MiB");
}
