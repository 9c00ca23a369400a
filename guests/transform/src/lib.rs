//! `transform`: a realistic event-processing guest. Each message is a JSON
//! order; the guest parses, validates and enriches it ([`orders::transform`])
//! and sends the enriched order to the channel `out` (or the one in `OUT`),
//! one send per batch, with content type `application/json`. An order that
//! does not validate goes to `REJECTED` (default `orders.rejected`) with the
//! reason in its `error` metadata, so one bad order does not fail the batch
//! around it.

use courier_guest::{Error, Guest, Message, env_or, export, send};

struct Transform;

impl Guest for Transform {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        let out = env_or("OUT", "out");
        let mut enriched = Vec::with_capacity(ms.len());
        let mut rejected = Vec::new();
        for m in ms {
            match orders::transform(&m.data) {
                Ok(data) => enriched.push(Message {
                    topic: out.clone(),
                    content_type: Some("application/json".into()),
                    reply_to: None,
                    data,
                    metadata: None,
                }),
                Err(e) => rejected.push(Message {
                    topic: String::new(),
                    content_type: m.content_type,
                    reply_to: None,
                    data: m.data,
                    metadata: Some(vec![("error".into(), e.to_string())]),
                }),
            }
        }
        if !enriched.is_empty() {
            send(&out, enriched)?;
        }
        if !rejected.is_empty() {
            let to = env_or("REJECTED", "orders.rejected");
            for m in &mut rejected {
                m.topic = to.clone();
            }
            send(&to, rejected)?;
        }
        Ok(())
    }
}

export!(Transform);
