//! Shared input generators of the fuzz targets: an arbitrary [`Message`]
//! whose metadata keys are often the names backends treat specially, so the
//! fuzzer reaches the reserved-key paths and not only random text.

use arbitrary::{Arbitrary, Unstructured};
use courier_broker::Message;

/// Header and field names some backend maps to something else than metadata.
pub const SPECIAL_KEYS: &[&str] = &[
    "Content-Type",
    "Courier-Reply-To",
    "Nats-Msg-Id",
    "Nats-",
    "x-courier-attempt",
    "x-courier-topic",
    "courier-attempt",
    "content-type",
    "reply-to",
    "kafka-key",
    "correlation-id",
    "correlation-id-hex",
    "data",
    "meta:",
    "meta:k",
    "k",
    "K",
    "",
    "a:b",
    "a b",
];

/// A string that is often one of [`SPECIAL_KEYS`], otherwise arbitrary.
pub fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 2)? {
        Ok(u.choose(SPECIAL_KEYS)?.to_string())
    } else {
        String::arbitrary(u)
    }
}

/// A channel-like string: often dotted tokens, sometimes arbitrary text.
pub fn channel(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        let n = u.int_in_range(1..=4)?;
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            tokens.push(*u.choose(&[
                "a", "b", "orders", "eu", "x1", "$sys", "*", ">", "#", "+", "a/b", "é",
            ])?);
        }
        Ok(tokens.join("."))
    } else {
        String::arbitrary(u)
    }
}

/// An arbitrary message, biased towards the keys and channels backends treat
/// specially.
#[derive(Debug, Clone)]
pub struct ArbitraryMessage(pub Message);

impl<'a> Arbitrary<'a> for ArbitraryMessage {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let topic = channel(u)?;
        let content_type = if u.arbitrary()? {
            Some(String::arbitrary(u)?)
        } else {
            None
        };
        let reply_to = if u.arbitrary()? {
            Some(channel(u)?)
        } else {
            None
        };
        let mut metadata = Vec::new();
        for _ in 0..u.int_in_range(0..=6)? {
            let k = key(u)?;
            // Often hex, so that the MQTT correlation data path is reached.
            let v = if k == "correlation-id-hex" && u.ratio(3, 4)? {
                Vec::<u8>::arbitrary(u)?
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            } else {
                String::arbitrary(u)?
            };
            metadata.push((k, v));
        }
        let data = Vec::<u8>::arbitrary(u)?;
        Ok(Self(Message {
            topic,
            content_type,
            reply_to,
            data: data.into(),
            metadata,
        }))
    }
}

/// `metadata` ordered by key, the values of one key in their order: how
/// backends whose headers are a sorted map give metadata back.
pub fn sorted_by_key(metadata: &[(String, String)]) -> Vec<(String, String)> {
    let mut sorted = metadata.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}
