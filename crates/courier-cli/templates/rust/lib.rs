//! `{{name}}`: sends each message's data upper-cased to the channel `out`.

use courier_guest::{Error, Guest, Message, export, message, send};

struct Handler;

impl Guest for Handler {
    fn handler(messages: Vec<Message>) -> Result<(), Error> {
        let out = messages
            .iter()
            .map(|m| message("out", String::from_utf8_lossy(&m.data).to_uppercase()))
            .collect();
        send("out", out)
    }
}

export!(Handler);
