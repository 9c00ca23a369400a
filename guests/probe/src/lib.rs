//! `probe`: a test guest that runs commands found in its messages and reports
//! each outcome on `probe.result` (or the channel in the guest's `RESULTS`
//! environment variable), to exercise every function of the world
//! and every error case from integration tests.
//!
//! Each message's data is one command (words separated by spaces; `-` stands
//! for an empty string). The report's data is `ok`, `ok:<detail>` or
//! `err:<error>`; its metadata has `cmd` (the command), `attempt` and
//! `delivery-id` of the message that carried it.

use courier_guest::{
    Client, DELIVERY_ID, Error, Guest, Message, abandon, attempt, complete, delivery_id, describe,
    env_or, export, message, producer, send, subscribe,
};

struct Probe;

fn word(s: &str) -> &str {
    if s == "-" { "" } else { s }
}

fn outcome(r: Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err:{}", describe(&e)),
    }
}

/// Runs one command; `None` means the command reports nothing.
fn run(m: &Message, cmd: &str) -> Result<Option<String>, Error> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let arg = |i: usize| words.get(i).copied().unwrap_or("");
    let report = match words.first().copied().unwrap_or("") {
        "echo" => "ok".into(),
        "connect" => outcome(Client::connect(word(arg(1))).map(drop)),
        "send" => {
            let r = Client::connect(word(arg(1)))
                .and_then(|c| producer::send(c, word(arg(2)), &[message(arg(4), arg(3))]));
            outcome(r)
        }
        "send-meta" => {
            let mut m = message(word(arg(1)), "meta");
            m.metadata = Some(
                arg(2)
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            outcome(send(word(arg(1)), vec![m]))
        }
        "send-big" => {
            let bytes: usize = arg(2).parse().unwrap_or(0);
            outcome(send(word(arg(1)), vec![message("", vec![b'x'; bytes])]))
        }
        "subscribe" => {
            let channels: Vec<&str> = match arg(1) {
                "-" | "" => Vec::new(),
                list => list.split(',').collect(),
            };
            let extensions: Vec<(&str, &str)> = match words.get(2) {
                Some(list) => list
                    .split(',')
                    .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                    .collect(),
                None => Vec::new(),
            };
            outcome(subscribe(&channels, &extensions))
        }
        "complete-self" => outcome(complete(m)),
        "complete-twice" => {
            complete(m)?;
            outcome(complete(m))
        }
        "abandon-self" => outcome(abandon(m)),
        "complete-forged" => outcome(complete(&with_id(m, "forged-123"))),
        "complete-foreign" => outcome(complete(&with_id(m, arg(1)))),
        "fail" => return Err(Error::Other("probe: fail requested".into())),
        "trap" => panic!("probe: trap requested"),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mib: usize = arg(1).parse().unwrap_or(0);
            let v = vec![1u8; mib << 20];
            std::hint::black_box(&v);
            "ok".into()
        }
        "env" => format!("ok:{}", std::env::vars().count()),
        "read-file" => match std::fs::read_to_string(arg(1)) {
            Ok(_) => "ok".into(),
            Err(e) => format!("err:other:{e}"),
        },
        _ => "err:other:unknown command".into(),
    };
    Ok(Some(report))
}

/// A copy of `m` with another delivery id and other data, so that neither the
/// id nor an exact match finds the original delivery.
fn with_id(m: &Message, id: &str) -> Message {
    let mut forged = m.clone();
    forged.data = b"forged".to_vec();
    let mut md: Vec<(String, String)> = forged
        .metadata
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != DELIVERY_ID)
        .collect();
    md.push((DELIVERY_ID.into(), id.into()));
    forged.metadata = Some(md);
    forged
}

impl Guest for Probe {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        let results = env_or("RESULTS", "probe.result");
        for m in &ms {
            let cmd = String::from_utf8_lossy(&m.data).into_owned();
            if let Some(report) = run(m, &cmd)? {
                let mut r = message(results.as_str(), report);
                r.metadata = Some(vec![
                    ("cmd".into(), cmd.clone()),
                    ("attempt".into(), attempt(m).to_string()),
                    ("delivery-id".into(), delivery_id(m).unwrap_or("").into()),
                ]);
                send(&results, vec![r])?;
            }
        }
        Ok(())
    }
}

export!(Probe);
