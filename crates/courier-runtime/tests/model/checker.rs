//! The reports of one case, held against the reference model as they come.

use std::collections::{BTreeMap, HashMap};

use courier_broker::Message;
use courier_broker::message::ATTEMPTS_KEY;
use courier_runtime::Runtime;

use crate::reference::{Model, Outcome, Prediction, Violation};

/// The guests of every case, point to point, one model each.
pub const GUESTS: [&str; 2] = ["a", "b"];

/// A report of one guest's call, or a dead letter.
pub enum Event {
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

/// The channels of a case, under its namespace `ns`.
pub struct Channels {
    ns: String,
}

impl Channels {
    pub fn new(ns: String) -> Self {
        Self { ns }
    }

    /// The channel guest `g` consumes.
    pub fn input(&self, g: &str) -> String {
        format!("{}.{g}.in", self.ns)
    }

    /// The channel guest `g` reports its calls on.
    pub fn log(&self, g: &str) -> String {
        format!("{}.log.{g}", self.ns)
    }

    /// Guest `g`'s dead-letter channel.
    pub fn dead(&self, g: &str) -> String {
        format!("{}.dl.{g}", self.ns)
    }

    /// Reads a report or a dead letter.
    pub fn parse(&self, m: &Message) -> Option<Event> {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        if let Some(guest) = GUESTS.iter().position(|g| m.topic == self.dead(g)) {
            return Some(Event::DeadLetter {
                guest,
                key: text.split_whitespace().next()?.to_string(),
                attempts: m.meta(ATTEMPTS_KEY).and_then(|a| a.parse().ok()),
            });
        }
        let guest = GUESTS.iter().position(|g| m.topic == self.log(g))?;
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
}

/// Everything one case checks as it goes.
pub struct Checker {
    pub models: Vec<Model>,
    /// Calls that will report an end, by their first delivery id.
    pending: HashMap<String, (usize, Prediction)>,
    /// Dead letters seen, per guest, by key.
    dead: Vec<BTreeMap<String, Option<u32>>>,
    /// The latest delivery id each guest was handed.
    pub last_id: Vec<Option<String>>,
    pub calls: u64,
}

impl Checker {
    pub fn new(max_attempts: u32, manual: bool) -> Self {
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

    pub fn event(&mut self, event: Event, batch_size: usize) -> Result<(), Violation> {
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
                // Reports and dead letters travel on different channels, so
                // a dead letter may come before the report of the call that
                // failed: one the model does not know yet is held against
                // it once the step is quiet (`settled`).
                Ok(())
            }
        }
    }

    /// Whether the reports so far leave nothing outstanding: every call
    /// ended, every message settled in the model, and at least as many dead
    /// letters seen as the model has (more is a disagreement `settled`
    /// names).
    pub fn quiet(&self) -> bool {
        self.pending.is_empty()
            && self
                .models
                .iter()
                .zip(&self.dead)
                .all(|(m, d)| m.settled() && d.len() >= m.dead_lettered().len())
    }

    /// The end-of-step checks: dead letters and counters as the model says.
    pub fn settled(&self, runtime: &Runtime) -> Result<(), Violation> {
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

    /// What is missing, for a step that does not settle.
    pub fn outstanding(&self) -> String {
        let models: Vec<String> = self
            .models
            .iter()
            .zip(&self.dead)
            .enumerate()
            .map(|(i, (m, d))| {
                format!(
                    "{}: unsettled {:?}, dead letters {:?} of {:?}",
                    GUESTS[i],
                    m.unsettled(),
                    d.keys().collect::<Vec<_>>(),
                    m.dead_lettered()
                )
            })
            .collect();
        format!(
            "per the model: {}; calls without an end: {}",
            models.join("; "),
            self.pending.len()
        )
    }
}
