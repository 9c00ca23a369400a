//! `scripted`: a test guest whose every message says what the guest does
//! with it, attempt by attempt, and which reports each handler call, so that
//! a test can hold Courier's settlement against a reference model.
//!
//! A message's data is `KEY ACTIONS [FOREIGN-ID]`: `ACTIONS` is a
//! comma-separated list, the first for attempt 1, the second for attempt 2,
//! the last for every later attempt. An action is one of
//! - `ok`: nothing (the handler's outcome settles it);
//! - `complete`, `complete2` (twice), `abandon`;
//! - `nocid`: `complete` of a copy without its delivery id (content match);
//! - `forged`: `complete` of a copy with a made-up delivery id;
//! - `foreign`: `complete` of a copy with `FOREIGN-ID` (another guest's);
//! - `resub`: unsubscribe from everything, then subscribe again to the
//!   channels in `CHANNELS` (comma-separated);
//! - `err`: the handler returns `err` here; `trap`: it panics; `loop`: it
//!   spins until its deadline.
//!
//! At the start of each call the guest sends `start` then one line
//! `KEY ATTEMPT DELIVERY-ID` per message to the channel in `LOG`; at the end
//! of a call that returns (`ok` or `err`) it sends `end FIRST-DELIVERY-ID`
//! then one line `KEY ACTION RESULT[,RESULT]` per message it acted on, where
//! a result is `ok` or `err`. A call that traps or spins sends no end.

use courier_guest::{
    DELIVERY_ID, Error, Guest, Message, abandon, attempt, complete, delivery_id, env_or, export,
    message, send, subscribe,
};

struct Scripted;

fn result(r: Result<(), Error>) -> &'static str {
    if r.is_ok() { "ok" } else { "err" }
}

/// A copy of `m` whose delivery id is `id` (none when `id` is `None`).
fn with_id(m: &Message, id: Option<&str>) -> Message {
    let mut copy = m.clone();
    let mut md: Vec<(String, String)> = copy
        .metadata
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != DELIVERY_ID)
        .collect();
    if let Some(id) = id {
        md.push((DELIVERY_ID.into(), id.into()));
    }
    copy.metadata = Some(md);
    copy
}

/// What the call does after a message's action.
enum Next {
    Go(String),
    Fail(String),
}

fn act(m: &Message) -> Next {
    let text = String::from_utf8_lossy(&m.data).into_owned();
    let mut words = text.split_whitespace();
    let key = words.next().unwrap_or("?").to_string();
    let actions: Vec<&str> = words.next().unwrap_or("ok").split(',').collect();
    let foreign = words.next().unwrap_or("none");
    let n = attempt(m) as usize;
    let action = actions[n.clamp(1, actions.len()) - 1];
    let results = match action {
        "ok" => "ok".to_string(),
        "complete" => result(complete(m)).into(),
        "complete2" => format!("{},{}", result(complete(m)), result(complete(m))),
        "abandon" => result(abandon(m)).into(),
        "nocid" => result(complete(&with_id(m, None))).into(),
        "forged" => result(complete(&with_id(m, Some("forged-1")))).into(),
        "foreign" => result(complete(&with_id(m, Some(foreign)))).into(),
        "resub" => {
            let channels = env_or("CHANNELS", "");
            let channels: Vec<&str> = channels.split(',').filter(|c| !c.is_empty()).collect();
            let r = subscribe(&[], &[]).and_then(|()| subscribe(&channels, &[]));
            result(r).into()
        }
        "err" => return Next::Fail(format!("{key} {action} err")),
        "trap" => panic!("scripted: trap on {key}"),
        "loop" => {
            let mut i = 0u64;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        other => format!("unknown-action:{other}"),
    };
    Next::Go(format!("{key} {action} {results}"))
}

fn key(m: &Message) -> String {
    String::from_utf8_lossy(&m.data)
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

impl Guest for Scripted {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        let log = env_or("LOG", "model.log");
        let mut start = String::from("start\n");
        for m in &ms {
            start.push_str(&format!(
                "{} {} {}\n",
                key(m),
                attempt(m),
                delivery_id(m).unwrap_or("-")
            ));
        }
        send(&log, vec![message(log.as_str(), start)])?;
        let first = ms.first().and_then(delivery_id).unwrap_or("-").to_string();
        let mut end = format!("end {first}\n");
        let mut failed = None;
        for m in &ms {
            match act(m) {
                Next::Go(line) => {
                    end.push_str(&line);
                    end.push('\n');
                }
                Next::Fail(line) => {
                    end.push_str(&line);
                    end.push('\n');
                    failed = Some(line);
                    break;
                }
            }
        }
        send(&log, vec![message(log.as_str(), end)])?;
        match failed {
            Some(why) => Err(Error::Other(why)),
            None => Ok(()),
        }
    }
}

export!(Scripted);
