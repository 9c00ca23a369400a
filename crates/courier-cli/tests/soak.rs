//! Soak: N numbered messages through a `courier run` host whose guest traps
//! on every thousandth one, on the durable embedded broker (`data-dir`,
//! `sync = "always"`) and on NATS JetStream (file storage), with the host's
//! resident memory at the start, its peak, and at the end.
//!
//! The host runs the `flaky` guest point-to-point: it forwards `m-…`
//! messages to `SOAK.out` and traps on `trap-…` ones, which are retried
//! alone and dead-lettered to `SOAK.dead` after `max-attempts`. The test
//! writes the messages to the host's standard input (`--stdin`, one publish
//! each, accepted once published), at most 50,000 ahead of what came out (a
//! publish past the embedded queue's `max-queued-messages`, 100,000, is
//! refused, and `--stdin` then ends the run), and reads both channels from
//! its standard output (`--print`). The checker accounts for every message: each `m-…`
//! handled and each `trap-…` dead-lettered at least once (0 lost),
//! duplicates counted, and the host's own count of dead letters (its last
//! log line) no smaller than the number of trapping messages. Memory is the
//! host process's `VmRSS` once the first message came out (start), its
//! `VmHWM` (peak) and `VmRSS` once every message came out (end), read from
//! `/proc/PID/status` while the host still runs.
//!
//! `COURIER_SOAK_N` sets N (default 20,000, the form that runs with the
//! other tests); `scripts/soak.sh` runs the long form (1,000,000) in
//! release. The JetStream case needs nats-server with JetStream on
//! 127.0.0.1:4222 (`COURIER_TEST_NATS_PORT`); it is ignored with the reason
//! when it is not listening (failed when `CI=true`). It uses the stream
//! `COURIER_SOAK` (subjects `soak.>`), deleted before and after.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

#[cfg(feature = "nats")]
use courier_test_support::{Broker, Need};
use courier_test_support::{Trials, unique};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");

/// Every `TRAP_EVERY`-th message makes the guest trap.
const TRAP_EVERY: usize = 1000;
/// The guest's `max-attempts`: a trapping message is dead-lettered after it.
const MAX_ATTEMPTS: u32 = 3;
/// Bound on waiting with no new message coming out.
const STALL: Duration = Duration::from_secs(120);
/// Bound on the host's exit once its input ended and all is settled.
const EXIT: Duration = Duration::from_secs(120);

fn soak_n() -> usize {
    match std::env::var("COURIER_SOAK_N") {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("COURIER_SOAK_N={v:?} is not a count")),
        Err(_) => 20_000,
    }
}

fn traps(i: usize) -> bool {
    i % TRAP_EVERY == TRAP_EVERY - 1
}

fn payload(i: usize) -> String {
    if traps(i) {
        format!("trap-{i:07}")
    } else {
        format!("m-{i:07}")
    }
}

/// The message number of a printed line, if it is one of ours.
fn index(line: &str) -> Option<usize> {
    line.strip_prefix("m-")
        .or_else(|| line.strip_prefix("trap-"))
        .and_then(|i| i.parse().ok())
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`); `None` once
/// the process is gone.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// [`status_kib`] of the host, which must still run.
fn host_kib(pid: u32, field: &str) -> u64 {
    status_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The counts of the host's last log line, `done: D delivered, A accepted,
/// R redelivered, L dead-lettered, T traps`, by name.
fn totals(log: &str) -> Option<Vec<(String, u64)>> {
    let line = log.lines().rev().find(|l| l.contains("done: "))?;
    let rest = &line[line.find("done: ")? + "done: ".len()..];
    rest.split(", ")
        .map(|part| {
            let (n, name) = part.trim().split_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

struct Target<'a> {
    name: &'a str,
    /// Extra `[host]` lines.
    host: String,
    /// The `[clients.default]` body.
    client: String,
    ns: String,
}

/// The host and what it prints, line by line.
struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn_host(config: &Path, ns: &str, log: &Path) -> Host {
    let log = std::fs::File::create(log).expect("host log");
    let mut child = Command::new(COURIER)
        .args(["run", "--config"])
        .arg(config)
        .args(["--stdin", &format!("{ns}.in")])
        .args(["--print", &format!("{ns}.out")])
        .args(["--print", &format!("{ns}.dead")])
        // Warnings (a few per trap) and the progress and closing lines.
        .env("RUST_LOG", "warn,courier=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn courier");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Host { child, lines }
}

/// What came out, by message number.
struct Seen {
    counts: Vec<u32>,
    distinct: usize,
    strangers: Vec<String>,
}

impl Seen {
    fn new(n: usize) -> Self {
        Self {
            counts: vec![0; n],
            distinct: 0,
            strangers: Vec::new(),
        }
    }

    fn add(&mut self, line: String) {
        match index(&line).filter(|&i| i < self.counts.len() && payload(i) == line) {
            Some(i) => {
                if self.counts[i] == 0 {
                    self.distinct += 1;
                }
                self.counts[i] += 1;
            }
            None if self.strangers.len() < 10 => self.strangers.push(line),
            None => {}
        }
    }

    /// Takes what arrives within `wait`, then whatever else is there.
    fn take(&mut self, lines: &mpsc::Receiver<String>, wait: Duration) -> Output {
        let first = match lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => return Output::Nothing,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Output::Ended,
        };
        self.add(first);
        while let Ok(line) = lines.try_recv() {
            self.add(line);
        }
        Output::Some
    }
}

/// What [`Seen::take`] found.
#[derive(PartialEq)]
enum Output {
    Some,
    Nothing,
    /// The host's standard output is closed: it is exiting.
    Ended,
}

/// How many messages the writer may have published beyond those that came
/// out: half the embedded broker's default `max-queued-messages`.
const WINDOW: usize = 50_000;

/// How many distinct messages came out, for the writer to wait on.
#[derive(Default)]
struct Window {
    out: Mutex<usize>,
    changed: Condvar,
}

impl Window {
    fn came_out(&self, distinct: usize) {
        *self.out.lock().unwrap() = distinct;
        self.changed.notify_all();
    }

    /// Whether message `i` may be written now.
    fn room_for(&self, i: usize) -> bool {
        i < *self.out.lock().unwrap() + WINDOW
    }

    /// Waits until message `i` may be written.
    fn wait_for_room(&self, i: usize) {
        let out = self.out.lock().unwrap();
        drop(
            self.changed
                .wait_while(out, |out| i >= *out + WINDOW)
                .unwrap(),
        );
    }
}

/// One soak at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn soak(t: Target) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = soak_n();
    assert!(n >= TRAP_EVERY, "COURIER_SOAK_N={n}: at least {TRAP_EVERY}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    let log = dir.path().join("courier.log");
    let ns = &t.ns;
    std::fs::write(
        &config,
        format!(
            r#"
[host]
summary-secs = 10
{host}

[clients.default]
{client}

[guests.flaky]
component = "{component}"
subscribe = ["{ns}.in"]
allow-publish = ["{ns}.out"]
mode = "point-to-point"
group = "soak"
batch-size = 100
max-attempts = {MAX_ATTEMPTS}
backoff-ms = 10
backoff-max-ms = 100
dead-letter = "{ns}.dead"
env = {{ OUT = "{ns}.out" }}
"#,
            host = t.host,
            client = t.client,
            component = test_programs::FLAKY,
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut host = spawn_host(&config, ns, &log);
    let pid = host.child.id();
    let host_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut stdin = host.child.stdin.take().expect("stdin");
    let mut seen = Seen::new(n);

    // Start: the first message has come out (the guest is compiled and
    // instantiated, the broker connected).
    writeln!(stdin, "{}", payload(0)).expect("writing to the host");
    stdin.flush().expect("writing to the host");
    let deadline = Instant::now() + STALL;
    while seen.counts[0] == 0 && Instant::now() < deadline {
        if seen.take(&host.lines, Duration::from_millis(200)) == Output::Ended {
            break;
        }
    }
    assert!(
        seen.counts[0] > 0,
        "the first message did not come out within {STALL:?}; host log:\n{}",
        host_log()
    );
    let rss_start = host_kib(pid, "VmRSS");
    let publishing = Instant::now();

    // The rest, from a thread, at most WINDOW ahead of what came out: a
    // client that honours back-pressure (the embedded queue refuses a
    // publish past `max-queued-messages`, and `--stdin` ends the run on it).
    let window = Arc::new(Window::default());
    let writer = {
        let window = window.clone();
        std::thread::spawn(move || {
            let mut out = std::io::BufWriter::new(&mut stdin);
            let written = (1..n)
                .try_for_each(|i| {
                    if !window.room_for(i) {
                        out.flush()?;
                        window.wait_for_room(i);
                    }
                    writeln!(out, "{}", payload(i))
                })
                .and_then(|()| out.flush());
            drop(out);
            (stdin, written)
        })
    };

    // Until every message came out, the output ended, or nothing more came
    // for STALL.
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    while seen.distinct < n {
        match seen.take(&host.lines, Duration::from_millis(200)) {
            Output::Some => {
                last_progress = Instant::now();
                window.came_out(seen.distinct);
            }
            Output::Ended => break,
            Output::Nothing if last_progress.elapsed() > STALL => break,
            Output::Nothing => {}
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            println!(
                "soak {}: {} of {n} out after {:.0?}, host RSS {} MiB",
                t.name,
                seen.distinct,
                started.elapsed(),
                status_kib(pid, "VmRSS").map_or("?".into(), mib)
            );
            last_report = Instant::now();
        }
    }
    let all_out = publishing.elapsed();
    let complete = seen.distinct == n;
    // The writer stops waiting for room.
    window.came_out(n);
    // Read while the host still runs (it exits once its input ends).
    let (rss_end, rss_peak) = if complete {
        (host_kib(pid, "VmRSS"), host_kib(pid, "VmHWM"))
    } else {
        // Stalled or exited: the writer may be blocked on a full pipe.
        let _ = host.child.kill();
        (0, 0)
    };

    // End of input: the host drains and exits.
    let (stdin, written) = writer.join().expect("the writer thread");
    drop(stdin);
    let exited = courier_test_support::eventually(EXIT, || {
        seen.take(&host.lines, Duration::from_millis(50));
        matches!(host.child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = host.child.kill();
    }
    let status = host.child.wait().expect("waiting for the host");
    // Late duplicates: the rest of the output, up to its end.
    while let Ok(line) = host.lines.recv_timeout(Duration::from_secs(5)) {
        seen.add(line);
    }
    let log_text = host_log();
    let tail = &log_text[log_text.floor_char_boundary(log_text.len().saturating_sub(4000))..];

    let trapping = (0..n).filter(|&i| traps(i)).count();
    let handled = (0..n).filter(|&i| !traps(i) && seen.counts[i] > 0).count();
    let dead_lettered = (0..n).filter(|&i| traps(i) && seen.counts[i] > 0).count();
    let lost: Vec<usize> = (0..n).filter(|&i| seen.counts[i] == 0).collect();
    let duplicates: u64 = seen
        .counts
        .iter()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum();
    let totals = totals(&log_text).unwrap_or_default();
    let total = |name: &str| totals.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let shown = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    println!(
        "soak {}: {n} published, {handled} handled, {dead_lettered} dead-lettered, {duplicates} duplicates, \
         {} lost; host RSS {} MiB at start, {} MiB peak, {} MiB at end; {} traps, {} redelivered; \
         {:.0} s ({:.0} msg/s)",
        t.name,
        lost.len(),
        mib(rss_start),
        mib(rss_peak),
        mib(rss_end),
        shown(total("traps")),
        shown(total("redelivered")),
        all_out.as_secs_f64(),
        n as f64 / all_out.as_secs_f64(),
    );
    assert!(
        lost.is_empty(),
        "{} messages never came out, e.g. {:?}; host log:\n{tail}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        seen.strangers.is_empty(),
        "unexpected output: {:?}",
        seen.strangers
    );
    assert_eq!(handled + dead_lettered, n);
    assert_eq!(dead_lettered, trapping);
    assert!(
        exited,
        "the host did not exit within {EXIT:?} of the end of its input; log:\n{tail}"
    );
    assert!(
        status.success(),
        "the host exited with {status}; log:\n{tail}"
    );
    if let Err(e) = written {
        panic!("writing the messages to the host failed: {e}");
    }
    // A good message dead-lettered would print like a handled one: the
    // host's own count says none was.
    let (letters, trapped) = (total("dead-lettered"), total("traps"));
    assert!(
        letters.is_some_and(|l| l >= trapping as u64)
            && trapped.is_some_and(|t| t >= trapping as u64),
        "the host counted {} dead letters and {} traps for {trapping} trapping messages; log:\n{tail}",
        shown(letters),
        shown(trapped),
    );
}

fn durable_embedded_soak() {
    let data = tempfile::tempdir().unwrap();
    soak(Target {
        name: "embedded",
        host: format!("data-dir = \"{}\"", data.path().display()),
        client: "backend = \"embedded\"".into(),
        ns: unique("soak"),
    });
}

#[cfg(feature = "nats")]
const STREAM: &str = "COURIER_SOAK";

/// Deletes the soak's stream, if there is one.
#[cfg(feature = "nats")]
fn delete_stream() -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(async {
            let client = async_nats::connect(Broker::Nats.url())
                .await
                .map_err(|e| format!("connecting to nats-server: {e}"))?;
            let js = async_nats::jetstream::new(client);
            if js.get_stream(STREAM).await.is_ok() {
                js.delete_stream(STREAM)
                    .await
                    .map_err(|e| format!("deleting the stream {STREAM}: {e}"))?;
            }
            Ok(())
        })
}

/// Deletes the soak's stream when dropped, whatever the outcome.
#[cfg(feature = "nats")]
struct Stream;

#[cfg(feature = "nats")]
impl Drop for Stream {
    fn drop(&mut self) {
        if let Err(e) = delete_stream() {
            eprintln!("soak: {e}");
        }
    }
}

#[cfg(feature = "nats")]
fn jetstream_soak() {
    delete_stream().expect("a clean stream");
    let _stream = Stream;
    soak(Target {
        name: "jetstream",
        host: String::new(),
        client: format!(
            "{}\noptions = {{ jetstream = true, stream = \"{STREAM}\", subjects = \"soak.>\", \
             storage = \"file\" }}",
            Broker::Nats.client()
        ),
        ns: unique("soak"),
    });
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.test("durable_embedded_soak", &[], durable_embedded_soak);
    #[cfg(feature = "nats")]
    trials.test(
        "jetstream_soak",
        &[Need::Broker(Broker::Nats)],
        jetstream_soak,
    );
    trials.run()
}
