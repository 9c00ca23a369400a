//! NATS: message → headers → message. Whatever `to_headers` accepts comes
//! back equal, except what docs/backends.md says is lost (`Nats-` headers,
//! metadata order across keys); what it refuses is exactly what a NATS header
//! cannot carry, refused with an error and not a panic. Headers as other
//! clients send them decode without a panic.
#![no_main]

use std::str::FromStr;

use arbitrary::Arbitrary;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use courier_broker::ErrorKind;
use courier_fuzz::{ArbitraryMessage, sorted_by_key};
use courier_nats::headers::{CONTENT_TYPE, NATS_PREFIX, REPLY_TO, from_nats, to_headers};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    message: ArbitraryMessage,
    reply_in_header: bool,
    /// Headers as another client may send them (invalid ones are skipped,
    /// as async-nats cannot build them).
    raw: Vec<(String, String)>,
    raw_reply: Option<String>,
}

fn bad_value(v: &str) -> bool {
    v.contains(['\r', '\n'])
}

fn bad_key(k: &str) -> bool {
    k.is_empty() || k.chars().any(|c| !c.is_ascii_graphic() || c == ':')
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let rih = input.reply_in_header;
    let refused =
        m.metadata.iter().any(|(k, v)| {
            bad_key(k) || bad_value(v) || k == CONTENT_TYPE || (rih && k == REPLY_TO)
        }) || m.content_type.as_deref().is_some_and(bad_value)
            || (rih && m.reply_to.as_deref().is_some_and(bad_value));
    match to_headers(&m, rih) {
        Err(e) => {
            assert!(refused, "refused a message NATS can carry: {e}\n{m:?}");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
        }
        Ok(h) => {
            assert!(!refused, "accepted a message NATS cannot carry: {m:?}");
            let reply = if rih { None } else { m.reply_to.as_deref() };
            let back = from_nats(&m.topic, reply, Some(&h), m.data.clone(), rih);
            let mut expected = m.clone();
            expected.metadata = sorted_by_key(&m.metadata)
                .into_iter()
                .filter(|(k, _)| !k.starts_with(NATS_PREFIX))
                .collect();
            assert_eq!(back, expected);
        }
    }

    let mut raw = HeaderMap::new();
    for (k, v) in &input.raw {
        if let (Ok(k), Ok(v)) = (HeaderName::from_str(k), HeaderValue::from_str(v)) {
            raw.append(k, v);
        }
    }
    let back = from_nats(
        "t",
        input.raw_reply.as_deref(),
        Some(&raw),
        m.data.clone(),
        rih,
    );
    let last = |name: &str| raw.get_last(name).map(|v| v.as_str().to_string());
    assert_eq!(back.content_type, last(CONTENT_TYPE));
    if rih {
        assert_eq!(back.reply_to, last(REPLY_TO));
    }
    assert!(
        back.metadata
            .iter()
            .all(|(k, _)| !k.starts_with(NATS_PREFIX))
    );
});
