//! Courier's settlement held against a reference model ([`reference`]), by
//! property-based testing on the embedded broker.
//!
//! Each case starts a host with two `scripted` guests (`a` and `b`, point to
//! point) under random `batch-size`, `concurrency`, `max-attempts` and `ack`
//! mode, then runs random steps: a step publishes a few messages to one
//! guest, each with a random script of guest actions per attempt (complete,
//! complete twice, abandon, complete a forged or the other guest's delivery
//! id, complete without an id, re-subscribe mid-call, return `err`, trap, run
//! past the deadline, or nothing). Every handler call the guests report is
//! checked against the model as it comes — the messages it holds, their
//! attempts, what each settle call returned — and after each step, once the
//! host is quiet: every message accepted or dead-lettered exactly as the
//! model says, each dead letter after exactly `max-attempts` failures of its
//! own, and the guests' counters equal to the model's.
//!
//! `COURIER_MODEL_CASES` sets the case budget (default 24) and
//! `COURIER_MODEL_SEED` the seed; a failure prints the seed to rerun it.

mod reference;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use courier_broker::message::ATTEMPTS_KEY;
use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reference::{Action, Model, Outcome, Prediction, Script, Violation};

/// How long a step may take to settle before the test says what is missing.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

const GUESTS: [&str; 2] = ["a", "b"];

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

#[test]
fn the_host_agrees_with_the_model() {
    if let Ok(filter) = std::env::var("COURIER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let cases: u32 = env_number("COURIER_MODEL_CASES").unwrap_or(24) as u32;
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
        rt.block_on(run_case(&case, cache.path(), &tally))
            .map_err(|v| TestCaseError::fail(v.0))
    });
    if let Err(e) = result {
        panic!(
            "the host disagrees with the model (seed {seed}; rerun with COURIER_MODEL_SEED={seed}): {e}"
        );
    }
    eprintln!(
        "model: seed {seed}: {} cases, {} steps, {} messages, {} handler calls, all as the model says",
        tally.cases.load(Ordering::Relaxed),
        tally.steps.load(Ordering::Relaxed),
        tally.messages.load(Ordering::Relaxed),
        tally.calls.load(Ordering::Relaxed),
    );
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// A report of one guest's call, or a dead letter.
enum Event {
    Start {
        guest: usize,
        batch: Vec<(String, u32)>,
        ids: Vec<String>,
    },
    End {
        guest: usize,
        first: String,
        lines: Vec<String>,
    },
    DeadLetter {
        guest: usize,
        key: String,
        attempts: Option<u32>,
    },
}

fn parse(m: &Message) -> Option<Event> {
    let guest = GUESTS
        .iter()
        .position(|g| m.topic.ends_with(&format!(".{g}")))?;
    let text = String::from_utf8_lossy(&m.data).into_owned();
    if m.topic.starts_with("model.dl.") {
        return Some(Event::DeadLetter {
            guest,
            key: text.split_whitespace().next()?.to_string(),
            attempts: m.meta(ATTEMPTS_KEY).and_then(|a| a.parse().ok()),
        });
    }
    let mut lines = text.lines();
    let head = lines.next()?;
    if head == "start" {
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for line in lines {
            let mut w = line.split_whitespace();
            let key = w.next()?.to_string();
            let attempt = w.next()?.parse().ok()?;
            batch.push((key, attempt));
            ids.push(w.next()?.to_string());
        }
        return Some(Event::Start { guest, batch, ids });
    }
    let first = head.strip_prefix("end ")?.to_string();
    Some(Event::End {
        guest,
        first,
        lines: lines.map(str::to_string).collect(),
    })
}

/// Everything one case checks as it goes.
struct Checker {
    models: Vec<Model>,
    /// Calls that will report an end, by their first delivery id.
    pending: HashMap<String, (usize, Prediction)>,
    /// Dead letters seen, per guest, by key.
    dead: Vec<BTreeMap<String, Option<u32>>>,
    /// The latest delivery id each guest was handed.
    last_id: Vec<Option<String>>,
    calls: u64,
}

impl Checker {
    fn new(max_attempts: u32, manual: bool) -> Self {
        Self {
            models: GUESTS
                .iter()
                .map(|_| Model::new(max_attempts, manual))
                .collect(),
            pending: HashMap::new(),
            dead: vec![BTreeMap::new(); GUESTS.len()],
            last_id: vec![None; GUESTS.len()],
            calls: 0,
        }
    }

    fn event(&mut self, event: Event, batch_size: usize) -> Result<(), Violation> {
        match event {
            Event::Start { guest, batch, ids } => {
                self.calls += 1;
                if batch.len() > batch_size {
                    return Err(Violation(format!(
                        "guest {}: a call of {} messages, batch-size is {batch_size}",
                        GUESTS[guest],
                        batch.len()
                    )));
                }
                let prediction = self.models[guest]
                    .call(&batch)
                    .map_err(|v| Violation(format!("guest {}: {v}", GUESTS[guest])))?;
                if prediction.outcome != Outcome::Fail {
                    self.pending.insert(ids[0].clone(), (guest, prediction));
                }
                self.last_id[guest] = ids.last().cloned();
                Ok(())
            }
            Event::End {
                guest,
                first,
                lines,
            } => {
                let Some((expected_guest, prediction)) = self.pending.remove(&first) else {
                    return Err(Violation(format!(
                        "guest {}: a call {first} ended that should not have",
                        GUESTS[guest]
                    )));
                };
                if expected_guest != guest || prediction.lines != lines {
                    return Err(Violation(format!(
                        "guest {}: call {first} did {lines:?}, the model says {:?}",
                        GUESTS[guest], prediction.lines
                    )));
                }
                Ok(())
            }
            Event::DeadLetter {
                guest,
                key,
                attempts,
            } => {
                if self.dead[guest].insert(key.clone(), attempts).is_some() {
                    return Err(Violation(format!(
                        "guest {}: {key} dead-lettered twice",
                        GUESTS[guest]
                    )));
                }
                // A dead letter follows the report of the call that failed.
                if !self.models[guest].dead_lettered().contains(&key) {
                    return Err(Violation(format!(
                        "guest {}: {key} dead-lettered, the model says: {:?}",
                        GUESTS[guest],
                        self.models[guest].unsettled()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Whether the reports so far leave nothing outstanding.
    fn quiet(&self) -> bool {
        self.pending.is_empty()
            && self
                .models
                .iter()
                .zip(&self.dead)
                .all(|(m, d)| m.settled() && m.dead_lettered().len() == d.len())
    }

    /// The end-of-step checks: dead letters and counters as the model says.
    fn settled(&self, runtime: &Runtime) -> Result<(), Violation> {
        for (i, (model, dead)) in self.models.iter().zip(&self.dead).enumerate() {
            let name = GUESTS[i];
            let expected = model.dead_lettered();
            let seen: Vec<String> = dead.keys().cloned().collect();
            if seen != expected {
                return Err(Violation(format!(
                    "guest {name}: dead letters {seen:?}, the model says {expected:?}"
                )));
            }
            if let Some((key, attempts)) =
                dead.iter().find(|(_, a)| **a != Some(model.max_attempts()))
            {
                return Err(Violation(format!(
                    "guest {name}: {key} dead-lettered with courier-attempts {attempts:?}, \
                     expected {}",
                    model.max_attempts()
                )));
            }
            let stats = runtime.guest(name).expect("guest").stats();
            let accepted = model.accepted().len() as u64;
            if stats.accepted != accepted || stats.dead_lettered != expected.len() as u64 {
                return Err(Violation(format!(
                    "guest {name}: counted {} accepted and {} dead-lettered, the model says \
                     {accepted} and {}",
                    stats.accepted,
                    stats.dead_lettered,
                    expected.len()
                )));
            }
        }
        Ok(())
    }

    fn outstanding(&self) -> String {
        let models: Vec<String> = self
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}: {:?}", GUESTS[i], m.unsettled()))
            .collect();
        format!(
            "unsettled per the model: {}; calls without an end: {}",
            models.join("; "),
            self.pending.len()
        )
    }
}

fn config(case: &Case, cache: &std::path::Path) -> String {
    let mut toml = format!(
        "[host]\nsummary-secs = 0\ncompile-cache = true\ncache-dir = \"{}\"\n",
        cache.display()
    );
    for g in GUESTS {
        toml.push_str(&format!(
            r#"
            [guests.{g}]
            component = "{component}"
            subscribe = ["{g}.in"]
            allow-publish = ["model.log.{g}"]
            mode = "point-to-point"
            batch-size = {batch}
            concurrency = {concurrency}
            ack = "{ack}"
            ack-wait-ms = 150
            max-attempts = {max}
            backoff-ms = 5
            backoff-max-ms = 20
            dead-letter = "model.dl.{g}"
            handler-timeout-ms = 200
            env = {{ LOG = "model.log.{g}", CHANNELS = "{g}.in" }}
            "#,
            component = test_programs::SCRIPTED,
            batch = case.batch_size,
            concurrency = case.concurrency,
            ack = if case.manual { "manual" } else { "auto" },
            max = case.max_attempts,
        ));
    }
    toml
}

async fn watch(runtime: &Runtime, pattern: &str) -> Box<dyn Subscription> {
    runtime
        .clients()
        .embedded()
        .subscribe(SubscriptionSpec::broadcast(
            Pattern::parse(pattern).unwrap(),
        ))
        .await
        .unwrap()
}

async fn run_case(case: &Case, cache: &std::path::Path, tally: &Tally) -> Result<(), Violation> {
    let config = Config::from_toml(&config(case, cache)).expect("valid config");
    let runtime = Runtime::new(config).expect("runtime");
    // Reports and dead letters, through one queue: in the order they were
    // published.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sub = watch(&runtime, "model.>").await;
    let collector = tokio::spawn(async move {
        while let Some(Ok(d)) = sub.next().await {
            let m = d.message.clone();
            let _ = d.acker.ack().await;
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    runtime.start().await.expect("start");
    let broker = runtime.clients().embedded().clone();
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
                format!("{guest}.in"),
                format!("{key} {} {foreign}", script.words()),
            ));
        }
        tally
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        broker.publish(messages).await.expect("publish");
        let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
        loop {
            match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                Ok(Some(m)) => {
                    let Some(event) = parse(&m) else {
                        result = Err(Violation(format!("an unreadable report on {}", m.topic)));
                        break 'steps;
                    };
                    if let Err(v) = checker.event(event, case.batch_size) {
                        result = Err(v);
                        break 'steps;
                    }
                }
                Ok(None) => unreachable!("the collector holds the sender"),
                Err(_) => {
                    if checker.quiet() && runtime.idle() && broker.unsettled() == Some(0) {
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
    runtime.stop().await;
    collector.abort();
    tally.cases.fetch_add(1, Ordering::Relaxed);
    tally.calls.fetch_add(checker.calls, Ordering::Relaxed);
    result
}
