//! `flaky`: exercises redelivery and dead letters. A message whose data
//! starts with `abandon` is abandoned, `fail` fails the batch, `trap` traps;
//! any other message is forwarded to `out` (or the channel in the guest's
//! `OUT` environment variable) and completed.

use courier_guest::{Error, Guest, Message, abandon, complete, env_or, export, message, send};

struct Flaky;

impl Guest for Flaky {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        let out = env_or("OUT", "out");
        for m in &ms {
            let data = String::from_utf8_lossy(&m.data);
            if data.starts_with("abandon") {
                abandon(m)?;
            } else if data.starts_with("fail") {
                return Err(Error::Other(format!("flaky: failed on {data}")));
            } else if data.starts_with("trap") {
                panic!("flaky: trapping on {data}");
            } else {
                send(&out, vec![message(out.as_str(), m.data.clone())])?;
                complete(m)?;
            }
        }
        Ok(())
    }
}

export!(Flaky);
