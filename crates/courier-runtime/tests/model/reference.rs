//! The reference model of Courier's delivery semantics: a small, pure state
//! machine that says, for each handler call the guest reports, what the
//! guest's settle calls must return and what becomes of each message.
//!
//! States of a message: `Available` (to be handed to the guest, maybe
//! alone), `Accepted`, `DeadLettered`. A call hands messages over
//! (acquired); each message's script says what the guest does with it; then:
//! - `complete` / `nocid` of a held message accepts it (a second one fails);
//!   `abandon` rejects it (a failure of its own); `forged` / `foreign` fail
//!   and change nothing;
//! - a call that returns `ok` accepts what it left unsettled (auto-ack), or,
//!   with manual acks, leaves it to pass its ack deadline: a failure of its
//!   own;
//! - a call that fails (`err`, trap, deadline) charges its unsettled messages
//!   only when it held one message; with several, each is available again,
//!   alone, at the same attempt;
//! - a failure of its own raises a message's attempt, and the
//!   `max-attempts`-th one dead-letters it. A redelivered message (attempt
//!   above 1) is handed over alone.

use std::collections::BTreeMap;
use std::fmt;

/// What the guest does with a message at one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ok,
    Complete,
    CompleteTwice,
    Abandon,
    NoId,
    Forged,
    Foreign,
    Resubscribe,
    Err,
    Trap,
    Loop,
}

impl Action {
    /// The guest's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Complete => "complete",
            Self::CompleteTwice => "complete2",
            Self::Abandon => "abandon",
            Self::NoId => "nocid",
            Self::Forged => "forged",
            Self::Foreign => "foreign",
            Self::Resubscribe => "resub",
            Self::Err => "err",
            Self::Trap => "trap",
            Self::Loop => "loop",
        }
    }
}

/// A message's script: the action of each attempt, the last repeating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<Action>);

impl Script {
    /// The action at `attempt` (from 1).
    pub fn at(&self, attempt: u32) -> Action {
        let i = (attempt as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }

    /// The actions as the guest reads them.
    pub fn words(&self) -> String {
        self.0
            .iter()
            .map(|a| a.word())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be handed over; `alone` when it must be the only message of its call.
    Available {
        alone: bool,
    },
    Accepted,
    DeadLettered,
}

#[derive(Debug, Clone)]
struct Tracked {
    script: Script,
    /// Failures of its own so far; the next attempt is `failures + 1`.
    failures: u32,
    state: State,
}

/// How the reported call ends, as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returns `ok`.
    Ok,
    /// The handler returns `err`: the guest reports an end.
    Err,
    /// A trap or the deadline: no end report.
    Fail,
}

/// What the model expects of one reported call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// Each acted-on message's end line: `KEY ACTION RESULTS`.
    pub lines: Vec<String>,
    /// How the call ends.
    pub outcome: Outcome,
}

/// A disagreement between the host and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One guest's messages, as the model sees them.
#[derive(Debug, Clone)]
pub struct Model {
    max_attempts: u32,
    manual: bool,
    messages: BTreeMap<String, Tracked>,
}

impl Model {
    /// A model of a guest with these settings.
    pub fn new(max_attempts: u32, manual: bool) -> Self {
        Self {
            max_attempts,
            manual,
            messages: BTreeMap::new(),
        }
    }

    /// A message published to the guest.
    pub fn publish(&mut self, key: &str, script: Script) {
        self.messages.insert(
            key.to_string(),
            Tracked {
                script,
                failures: 0,
                state: State::Available { alone: false },
            },
        );
    }

    /// A call the guest reports with `batch` (key, attempt), in order:
    /// checks it could happen, and returns what the guest must see in it.
    pub fn call(&mut self, batch: &[(String, u32)]) -> Result<Prediction, Violation> {
        let v = |s: String| Err(Violation(s));
        for (i, (key, attempt)) in batch.iter().enumerate() {
            if batch[..i].iter().any(|(k, _)| k == key) {
                return v(format!("{key} twice in one call"));
            }
            let Some(m) = self.messages.get(key) else {
                return v(format!("{key} was never published to this guest"));
            };
            match m.state {
                State::Accepted => return v(format!("{key} handed over after it was accepted")),
                State::DeadLettered => {
                    return v(format!("{key} handed over after it was dead-lettered"));
                }
                State::Available { alone } => {
                    if alone && batch.len() > 1 {
                        return v(format!(
                            "{key} must be handed over alone, came in a call of {}",
                            batch.len()
                        ));
                    }
                }
            }
            if *attempt != m.failures + 1 {
                return v(format!(
                    "{key} handed over at attempt {attempt} after {} failures of its own",
                    m.failures
                ));
            }
        }
        let mut held: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let mut lines = Vec::new();
        let mut outcome = Outcome::Ok;
        for (key, attempt) in batch {
            let action = self.messages[key].script.at(*attempt);
            let is_held = held.contains(key);
            let settle = |held: &mut Vec<String>| -> &'static str {
                if let Some(i) = held.iter().position(|k| k == key) {
                    held.remove(i);
                    "ok"
                } else {
                    "err"
                }
            };
            let results = match action {
                Action::Ok | Action::Resubscribe => "ok".to_string(),
                Action::Complete | Action::NoId => {
                    let r = settle(&mut held);
                    if is_held {
                        self.set(key, State::Accepted);
                    }
                    r.to_string()
                }
                Action::CompleteTwice => {
                    let first = settle(&mut held);
                    let second = settle(&mut held);
                    if is_held {
                        self.set(key, State::Accepted);
                    }
                    format!("{first},{second}")
                }
                Action::Abandon => {
                    let r = settle(&mut held);
                    if is_held {
                        self.charge(key);
                    }
                    r.to_string()
                }
                Action::Forged | Action::Foreign => "err".to_string(),
                Action::Err => {
                    lines.push(format!("{key} err err"));
                    outcome = Outcome::Err;
                    break;
                }
                Action::Trap | Action::Loop => {
                    outcome = Outcome::Fail;
                    break;
                }
            };
            lines.push(format!("{key} {} {results}", action.word()));
        }
        match (&outcome, self.manual) {
            (Outcome::Ok, false) => {
                for key in &held {
                    self.set(key, State::Accepted);
                }
            }
            // Manual acks: what the guest left passes its ack deadline.
            (Outcome::Ok, true) => {
                for key in &held {
                    self.charge(key);
                }
            }
            _ if batch.len() == 1 => {
                for key in &held {
                    self.charge(key);
                }
            }
            _ => {
                for key in &held {
                    self.set(key, State::Available { alone: true });
                }
            }
        }
        Ok(Prediction { lines, outcome })
    }

    fn set(&mut self, key: &str, state: State) {
        if let Some(m) = self.messages.get_mut(key) {
            m.state = state;
        }
    }

    /// A failure of the message's own.
    fn charge(&mut self, key: &str) {
        let max = self.max_attempts;
        if let Some(m) = self.messages.get_mut(key) {
            m.failures += 1;
            m.state = if m.failures >= max {
                State::DeadLettered
            } else {
                State::Available { alone: true }
            };
        }
    }

    /// Whether every message is accepted or dead-lettered.
    pub fn settled(&self) -> bool {
        self.messages
            .values()
            .all(|m| matches!(m.state, State::Accepted | State::DeadLettered))
    }

    /// The messages not settled yet, with their state, for a failure report.
    pub fn unsettled(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Available { .. }))
            .map(|(k, m)| format!("{k} (script {}, {} failures)", m.script.words(), m.failures))
            .collect()
    }

    /// The keys the model has dead-lettered.
    pub fn dead_lettered(&self) -> Vec<String> {
        self.keys(State::DeadLettered)
    }

    /// The keys the model has accepted.
    pub fn accepted(&self) -> Vec<String> {
        self.keys(State::Accepted)
    }

    fn keys(&self, state: State) -> Vec<String> {
        self.messages
            .iter()
            .filter(|(_, m)| m.state == state)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `max-attempts` of the guest.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// The model's own tests (run by `main` as `reference::tests::NAME`).
pub mod tests {
    use super::*;
    use Action::*;

    fn call(m: &mut Model, batch: &[(&str, u32)]) -> Result<Prediction, Violation> {
        let batch: Vec<(String, u32)> = batch.iter().map(|(k, a)| (k.to_string(), *a)).collect();
        m.call(&batch)
    }

    pub fn batch_mates_of_a_failure_are_not_charged() {
        let mut m = Model::new(1, false);
        m.publish("a", Script(vec![Ok]));
        m.publish("b", Script(vec![Err]));
        m.publish("c", Script(vec![Ok]));
        let p = call(&mut m, &[("a", 1), ("b", 1), ("c", 1)]).unwrap();
        assert_eq!(p.outcome, Outcome::Err);
        // Each is handed over again, alone, at attempt 1.
        assert!(call(&mut m, &[("a", 1), ("c", 1)]).is_err());
        call(&mut m, &[("a", 1)]).unwrap();
        call(&mut m, &[("b", 1)]).unwrap();
        call(&mut m, &[("c", 1)]).unwrap();
        assert!(m.settled());
        assert_eq!(m.accepted(), ["a", "c"]);
        assert_eq!(m.dead_lettered(), ["b"]);
    }

    pub fn a_second_complete_fails_and_manual_acks_count_attempts() {
        let mut m = Model::new(2, true);
        m.publish("a", Script(vec![CompleteTwice]));
        m.publish("b", Script(vec![Ok]));
        let p = call(&mut m, &[("a", 1), ("b", 1)]).unwrap();
        assert_eq!(p.lines, ["a complete2 ok,err", "b ok ok"]);
        // b was left unsettled: its ack deadline is a failure of its own.
        assert!(call(&mut m, &[("b", 1)]).is_err());
        call(&mut m, &[("b", 2)]).unwrap();
        assert!(call(&mut m, &[("b", 3)]).is_err());
        assert!(m.settled());
        assert_eq!(m.dead_lettered(), ["b"]);
    }
}
