//! Generates cases and runs each on a host with two `scripted` guests, on
//! the backend of a [`Target`], holding every report against the model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::checker::{Channels, Checker, GUESTS};
use crate::reference::{Action, Script, Violation};

/// How long a step may take to settle before the test says what is missing.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

/// The guests' `ack-wait-ms` and `handler-timeout-ms`.
const ACK_WAIT_MS: u64 = 150;
const HANDLER_TIMEOUT_MS: u64 = 200;

/// How long a remote broker may hold an unsettled delivery before it hands
/// it over again (the deadline the host gives it), and a margin. A case on
/// a remote broker ends by listening this long for anything the model does
/// not expect, since such a broker cannot be asked what it still holds.
fn redelivery_window() -> Duration {
    courier_runtime::dispatcher::broker_ack_wait(
        Duration::from_millis(ACK_WAIT_MS),
        Duration::from_millis(HANDLER_TIMEOUT_MS),
    ) + Duration::from_millis(500)
}

/// A backend the model runs on.
pub struct Target {
    /// The name in the closing line.
    pub name: &'static str,
    /// The body of `[clients.default]`.
    pub client: String,
    /// The first token of every channel (backends sharing a broker must not
    /// share channels).
    pub prefix: &'static str,
    /// Whether this is the embedded broker, which can say how many
    /// deliveries it holds unsettled: a stronger sign of quiet.
    pub embedded: bool,
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    batch_size: usize,
    concurrency: usize,
    max_attempts: u32,
    manual: bool,
    steps: Vec<Step>,
}

/// Messages published together to one guest.
#[derive(Debug, Clone)]
struct Step {
    guest: usize,
    scripts: Vec<Script>,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Ok),
        3 => Just(Action::Complete),
        1 => Just(Action::CompleteTwice),
        1 => Just(Action::Abandon),
        1 => Just(Action::NoId),
        1 => Just(Action::Forged),
        1 => Just(Action::Foreign),
        1 => Just(Action::Resubscribe),
        1 => Just(Action::Err),
        1 => Just(Action::Trap),
        1 => Just(Action::Loop),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let script = prop::collection::vec(action(), 1..=3).prop_map(Script);
    let step = (0..GUESTS.len(), prop::collection::vec(script, 1..=5))
        .prop_map(|(guest, scripts)| Step { guest, scripts });
    (
        1..=4usize,
        1..=2usize,
        1..=3u32,
        any::<bool>(),
        prop::collection::vec(step, 1..=4),
    )
        .prop_map(
            |(batch_size, concurrency, max_attempts, manual, steps)| Case {
                batch_size,
                concurrency,
                max_attempts,
                manual,
                steps,
            },
        )
}

/// What the runs covered, for the closing line.
#[derive(Default)]
struct Tally {
    cases: AtomicU64,
    steps: AtomicU64,
    messages: AtomicU64,
    calls: AtomicU64,
}

/// Runs `cases` generated cases (or `COURIER_MODEL_CASES`) on `target`,
/// from `COURIER_MODEL_SEED` or a random seed, and panics with the seed and
/// the disagreement if the host and the model part.
pub fn run(target: &Target, cases: u32) {
    if let Ok(filter) = std::env::var("COURIER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let cases = env_number("COURIER_MODEL_CASES").map_or(cases, |n| n as u32);
    let seed = env_number("COURIER_MODEL_SEED").unwrap_or_else(rand::random);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 8,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let tally = Tally::default();
    let result = runner.run(&case(), |case| {
        rt.block_on(run_case(target, &case, cache.path(), &tally))
            .map_err(|v| TestCaseError::fail(v.0))
    });
    if let Err(e) = result {
        panic!(
            "{}: the host disagrees with the model (seed {seed}; rerun with \
             COURIER_MODEL_SEED={seed}): {e}",
            target.name
        );
    }
    eprintln!(
        "model on {}: seed {seed}: {} cases, {} steps, {} messages, {} handler calls, all as \
         the model says",
        target.name,
        tally.cases.load(Ordering::Relaxed),
        tally.steps.load(Ordering::Relaxed),
        tally.messages.load(Ordering::Relaxed),
        tally.calls.load(Ordering::Relaxed),
    );
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn config(target: &Target, channels: &Channels, case: &Case, cache: &std::path::Path) -> String {
    let mut toml = format!(
        "[clients.default]\n{}\n[host]\nsummary-secs = 0\ncompile-cache = true\n\
         cache-dir = \"{}\"\n",
        target.client,
        cache.display()
    );
    for g in GUESTS {
        toml.push_str(&format!(
            r#"
            [guests.{g}]
            component = "{component}"
            subscribe = ["{input}"]
            allow-publish = ["{log}"]
            mode = "point-to-point"
            batch-size = {batch}
            concurrency = {concurrency}
            ack = "{ack}"
            ack-wait-ms = {ACK_WAIT_MS}
            max-attempts = {max}
            backoff-ms = 5
            backoff-max-ms = 20
            dead-letter = "{dead}"
            handler-timeout-ms = {HANDLER_TIMEOUT_MS}
            env = {{ LOG = "{log}", CHANNELS = "{input}" }}
            "#,
            component = test_programs::SCRIPTED,
            input = channels.input(g),
            log = channels.log(g),
            dead = channels.dead(g),
            batch = case.batch_size,
            concurrency = case.concurrency,
            ack = if case.manual { "manual" } else { "auto" },
            max = case.max_attempts,
        ));
    }
    toml
}

/// Forwards every report and dead letter of the case to one queue, in the
/// order each channel carries them; one subscription per channel, since not
/// every backend has wildcards.
async fn collect(
    backend: &dyn Backend,
    channels: &Channels,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Message>,
    tokio::task::JoinSet<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for g in GUESTS {
        for channel in [channels.log(g), channels.dead(g)] {
            let pattern = Pattern::parse(&channel).expect("channel");
            let mut sub = backend
                .subscribe(SubscriptionSpec::broadcast(pattern))
                .await
                .expect("watch");
            let tx = tx.clone();
            tasks.spawn(async move {
                while let Some(Ok(d)) = sub.next().await {
                    let m = d.message.clone();
                    let _ = d.acker.ack().await;
                    if tx.send(m).is_err() {
                        break;
                    }
                }
            });
        }
    }
    (rx, tasks)
}

async fn run_case(
    target: &Target,
    case: &Case,
    cache: &std::path::Path,
    tally: &Tally,
) -> Result<(), Violation> {
    let channels = Channels::new(courier_test_support::unique(target.prefix));
    let config = Config::from_toml(&config(target, &channels, case, cache)).expect("valid config");
    let runtime = Runtime::new(config).expect("runtime");
    let backend = runtime.clients().get("default").await.expect("connect");
    let (mut rx, collectors) = collect(backend.as_ref(), &channels).await;
    runtime.start().await.expect("start");
    let mut checker = Checker::new(case.max_attempts, case.manual);
    let mut result = Ok(());
    'steps: for (s, step) in case.steps.iter().enumerate() {
        let guest = GUESTS[step.guest];
        let other = 1 - step.guest;
        let mut messages = Vec::new();
        for (i, script) in step.scripts.iter().enumerate() {
            let key = format!("{guest}{s}m{i}");
            let foreign = checker.last_id[other]
                .clone()
                .unwrap_or_else(|| "none".into());
            checker.models[step.guest].publish(&key, script.clone());
            messages.push(Message::new(
                channels.input(guest),
                format!("{key} {} {foreign}", script.words()),
            ));
        }
        tally
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        backend.publish(messages).await.expect("publish");
        let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
        loop {
            match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                Ok(Some(m)) => {
                    if let Err(v) = event(&mut checker, &channels, &m, case.batch_size) {
                        result = Err(v);
                        break 'steps;
                    }
                }
                Ok(None) => unreachable!("the collectors hold the sender"),
                Err(_) => {
                    let broker_quiet =
                        !target.embedded || runtime.clients().embedded().unsettled() == Some(0);
                    if checker.quiet() && runtime.idle() && broker_quiet {
                        break;
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                result = Err(Violation(format!(
                    "step {s} did not settle within {STEP_DEADLINE:?}: {}",
                    checker.outstanding()
                )));
                break 'steps;
            }
        }
        if let Err(v) = checker.settled(&runtime) {
            result = Err(v);
            break;
        }
        tally.steps.fetch_add(1, Ordering::Relaxed);
    }
    if result.is_ok() && !target.embedded {
        // Whatever the broker still holds shows up within its redelivery
        // window; the model expects nothing more.
        if let Ok(Some(m)) = tokio::time::timeout(redelivery_window(), rx.recv()).await {
            result = event(&mut checker, &channels, &m, case.batch_size).and_then(|()| {
                Err(Violation(format!(
                    "after the last step settled: {}",
                    String::from_utf8_lossy(&m.data)
                )))
            });
        }
    }
    runtime.stop().await;
    drop(collectors);
    tally.cases.fetch_add(1, Ordering::Relaxed);
    tally.calls.fetch_add(checker.calls, Ordering::Relaxed);
    result
}

fn event(
    checker: &mut Checker,
    channels: &Channels,
    m: &Message,
    batch_size: usize,
) -> Result<(), Violation> {
    let Some(event) = channels.parse(m) else {
        return Err(Violation(format!("an unreadable report on {}", m.topic)));
    };
    checker.event(event, batch_size)
}
