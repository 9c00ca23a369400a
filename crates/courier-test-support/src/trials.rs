//! A test harness for integration tests that need brokers, on
//! `libtest-mimic`: the test binary sets `harness = false` in its
//! `[[test]]` entry and its `main` lists the tests with what each needs.
//!
//! Before a test runs, its [`Need`]s are checked. One that is not met
//! makes the test *ignored*, with the reason on its line
//! (`test conformance::rps::… ... ignored (redis-server is not listening on
//! 127.0.0.1:6379)`), never passed; when `CI=true` it is a failure that
//! names what is missing. The output, filtering by name (`cargo test --test
//! conformance -- nats`), `--ignored`, `--list` and the closing line (`test
//! result: ok. N passed; M failed; K ignored; …`) are libtest's.
//!
//! ```no_run
//! use courier_test_support::{Broker, Need, Trials};
//!
//! fn main() -> std::process::ExitCode {
//!     let mut trials = Trials::new();
//!     trials.tokio("redis::round_trip", &[Need::Broker(Broker::Redis)], || async {
//!         // ...
//!     });
//!     trials.run()
//! }
//! ```

use std::future::Future;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::brokers::{Broker, ci, find_program};
use crate::polyglot::Language;

/// Something a test needs from the machine; checked just before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The shared broker, listening on its port ([`Broker::port`]).
    Broker(Broker),
    /// The broker's program, installed, to run a private broker
    /// ([`PrivateBroker`](crate::private::PrivateBroker)).
    Installed(Broker),
    /// A command-line tool on `PATH` (`redis-cli`, `mosquitto_pub`, …).
    Tool(&'static str),
    /// A guest language's toolchain ([`Language::check`]).
    Toolchain(Language),
}

impl Need {
    /// `Ok` when the need is met, else why not.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Need::Broker(broker) => broker.check(),
            Need::Installed(broker) => broker.program().map(drop),
            Need::Tool(tool) => find_program(tool)
                .map(drop)
                .ok_or_else(|| format!("`{tool}` is not installed")),
            Need::Toolchain(language) => language.check(),
        }
    }
}

/// The first need of `needs` that is not met, as the trial's outcome:
/// ignored with the reason, or (in CI) failed.
fn unmet(needs: &[Need]) -> Option<Result<Completion, Failed>> {
    let why = needs.iter().find_map(|n| n.check().err())?;
    Some(if ci() {
        Err(format!(
            "{why}, and CI (CI=true) needs it; scripts/setup.sh and scripts/brokers.sh provide it"
        )
        .into())
    } else {
        Ok(Completion::ignored_with(why))
    })
}

/// The tests of one test binary.
#[derive(Default)]
pub struct Trials {
    trials: Vec<Trial>,
    /// Why each test marked with [`Trials::ignored`] is, by name.
    known: Vec<(String, String)>,
}

impl Trials {
    /// No tests yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the test `name`: `body` runs if every need of `needs` is met,
    /// and passes unless it panics.
    pub fn test(
        &mut self,
        name: impl Into<String>,
        needs: &[Need],
        body: impl FnOnce() + Send + 'static,
    ) -> &mut Self {
        let needs = needs.to_vec();
        self.trials
            .push(Trial::ignorable_test(name, move || match unmet(&needs) {
                Some(outcome) => outcome,
                None => {
                    body();
                    Ok(Completion::Completed)
                }
            }));
        self
    }

    /// Adds the test `name` whose body is async: it runs on a Tokio
    /// runtime of its own (multi-threaded, two workers, timers and I/O on),
    /// as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` did.
    pub fn tokio<F, Fut>(&mut self, name: impl Into<String>, needs: &[Need], body: F) -> &mut Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        self.test(name, needs, move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a Tokio runtime")
                .block_on(body())
        })
    }

    /// Marks the test added last as ignored for `reason` (a known issue):
    /// it runs only with `--ignored` or `--include-ignored`, and the reason
    /// is printed when it is left out.
    pub fn ignored(&mut self, reason: &str) -> &mut Self {
        if let Some(last) = self.trials.pop() {
            self.known
                .push((last.name().to_string(), reason.to_string()));
            self.trials.push(last.with_ignored_flag(true));
        }
        self
    }

    /// Runs the tests the command line selects, the way libtest does, and
    /// returns the exit code (failure if any test failed).
    pub fn run(mut self) -> ExitCode {
        let mut args = Arguments::from_args();
        if args.test_threads.is_none() {
            args.test_threads = std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|n| n.parse().ok());
        }
        self.trials.sort_by(|a, b| a.name().cmp(b.name()));
        if !args.list && !args.ignored && !args.include_ignored {
            for trial in &self.trials {
                if args.is_filtered_out(trial) {
                    continue;
                }
                if let Some((name, reason)) = self.known.iter().find(|(n, _)| n == trial.name()) {
                    eprintln!("note: {name} is ignored: {reason}");
                }
            }
        }
        libtest_mimic::run(&args, self.trials).exit_code()
    }
}
