//! `uppercase`: sends each message's data upper-cased to its `reply-to`, or
//! to the channel `out` (or the one in the guest's `OUT` environment
//! variable), keeping its content type and metadata. `DELAY_MS` makes it
//! sleep that long per batch, to simulate work in tests.

use std::collections::BTreeMap;

use courier_guest::{Error, Guest, Message, env_or, export, send};

struct Uppercase;

impl Guest for Uppercase {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        // One send per destination, in arrival order within each.
        let out = env_or("OUT", "out");
        if let Ok(ms) = env_or("DELAY_MS", "0").parse::<u64>()
            && ms > 0
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let mut by_destination: BTreeMap<String, Vec<Message>> = BTreeMap::new();
        for m in ms {
            let to = m.reply_to.clone().unwrap_or_else(|| out.clone());
            let metadata = m.metadata.map(|md| {
                md.into_iter()
                    .filter(|(k, _)| !k.starts_with("courier-"))
                    .collect::<Vec<_>>()
            });
            let upper = Message {
                topic: to.clone(),
                content_type: m.content_type,
                reply_to: None,
                data: String::from_utf8_lossy(&m.data).to_uppercase().into_bytes(),
                metadata: metadata.filter(|md| !md.is_empty()),
            };
            by_destination.entry(to).or_default().push(upper);
        }
        for (to, messages) in by_destination {
            send(&to, messages)?;
        }
        Ok(())
    }
}

export!(Uppercase);
