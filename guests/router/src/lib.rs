//! `router`: sends each message's data to the channel named by its `route`
//! metadata. The host refuses channels outside the guest's publish
//! allow-list, and the refusal fails the batch.

use courier_guest::{Error, Guest, Message, export, message, meta, send};

struct Router;

impl Guest for Router {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        for m in ms {
            let route = meta(&m, "route")
                .ok_or_else(|| Error::Other("message has no `route` metadata".into()))?
                .to_string();
            send(&route, vec![message(route.as_str(), m.data)])?;
        }
        Ok(())
    }
}

export!(Router);
