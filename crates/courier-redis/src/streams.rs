//! Redis Streams: durable messages with consumer groups.
//!
//! A channel is the stream `{key-prefix}{channel}`. Competing subscriptions of
//! one group share the consumer group of that name; a broadcast subscription
//! gets a consumer group of its own (removed on close), or a named one with
//! the `durable` option. New entries are read with `XREADGROUP`; entries left
//! unacknowledged for `ack-wait` — by a consumer that crashed, or by a `nack`
//! — are taken over with `XAUTOCLAIM`. A `nack` marks the entry idle enough to
//! be reclaimed once its delay is over (`XCLAIM … IDLE … JUSTID`), so the
//! delay is capped at `ack-wait`. The attempt is the entry's delivery counter.
//! An entry handed back untouched (read ahead but never handed out, or
//! released by the host) has its counter set back one (`RETRYCOUNT`), so
//! that the next consumer to claim it sees the attempt it was at: handing
//! back costs no attempt. Closing hands back only entries not handed out;
//! those the guest still holds stay settleable.
//! Wildcard subscriptions are not supported: a stream is one key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Acker, Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::reconnect::Link;
use courier_broker::{BrokerError, Message};
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::fields::{from_fields, to_fields};
use crate::options::{RedisExtensions, RedisOptions, Start};
use crate::{KIND, connection_error, manager};

/// How long one `XREADGROUP` blocks; also how often stale entries are sought.
pub const BLOCK: Duration = Duration::from_millis(100);

/// Entries fetched at most per read.
const COUNT: usize = 100;

fn key(options: &RedisOptions, topic: &str) -> String {
    format!("{}{topic}", options.key_prefix)
}

/// Appends each message to its channel's stream.
pub async fn publish(
    conn: &mut ConnectionManager,
    options: &RedisOptions,
    messages: Vec<Message>,
) -> Result<(), BrokerError> {
    let mut pipe = redis::pipe();
    for m in &messages {
        let cmd = pipe.cmd("XADD").arg(key(options, &m.topic));
        if let Some(n) = options.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n.get());
        }
        cmd.arg("*");
        for (k, v) in to_fields(m) {
            cmd.arg(k).arg(v);
        }
        cmd.ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(connection_error)
}

static CONSUMERS: AtomicU64 = AtomicU64::new(0);

/// Opens a consumer-group subscription on one stream.
pub async fn subscribe(
    client: &redis::Client,
    mut conn: ConnectionManager,
    options: &RedisOptions,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    if !spec.pattern.is_literal() {
        return Err(BrokerError::unsupported(
            KIND,
            format!(
                "wildcard subscriptions on Redis Streams (`{}`): a stream is one key",
                spec.pattern
            ),
        ));
    }
    let stream = key(options, spec.pattern.as_str());
    let unique = format!(
        "{}-{}",
        std::process::id(),
        CONSUMERS.fetch_add(1, Ordering::Relaxed)
    );
    let extensions: RedisExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    let (group, ephemeral) = match (&spec.mode, extensions.durable) {
        (Mode::Competing { group }, _) => (group.clone(), false),
        (Mode::Broadcast, Some(durable)) => (durable, false),
        (Mode::Broadcast, None) => (format!("courier-{}-{unique}", rand_suffix()), true),
    };
    let start = match extensions.start.unwrap_or_default() {
        Start::New => "$",
        Start::All => "0",
    };
    create_group(&mut conn, &stream, &group, start).await?;
    let reader = manager(client, options).await?;
    Ok(Box::new(StreamSubscription {
        reader,
        conn,
        link: Link::new(KIND, format!("stream `{stream}`, group `{group}`")),
        start,
        topic: spec.pattern.as_str().to_string(),
        stream,
        group,
        consumer: format!("courier-{unique}"),
        ack_wait: spec.ack_wait,
        ephemeral,
        ready: VecDeque::new(),
        held: Held::default(),
        last_claim: Instant::now(),
        closed: false,
    }))
}

/// Creates the consumer group (and the stream) unless it exists.
async fn create_group(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<(), BrokerError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => {
            Err(connection_error(e).context(format!("creating group `{group}` on `{stream}`")))
        }
    }
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CONSUMERS.load(Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

/// Ids of the entries a subscription handed out and that are neither acked
/// nor handed back (rejected ones included: they wait for their
/// redelivery with the right counter), shared with their ackers.
type Held = Arc<Mutex<HashSet<String>>>;

fn held_lock(held: &Held) -> std::sync::MutexGuard<'_, HashSet<String>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

struct StreamSubscription {
    /// A connection of its own: `XREADGROUP … BLOCK` holds it.
    reader: ConnectionManager,
    conn: ConnectionManager,
    /// The health of the subscription's connections.
    link: Link,
    /// Where a group (re)created by this subscription starts.
    start: &'static str,
    topic: String,
    stream: String,
    group: String,
    consumer: String,
    ack_wait: Duration,
    ephemeral: bool,
    /// Entries read, not handed out yet, with their ids.
    ready: VecDeque<(String, Delivery)>,
    held: Held,
    last_claim: Instant,
    closed: bool,
}

/// One stream entry: its id and fields.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).unwrap_or_default().into_bytes(),
    }
}

/// Parses `[[id, [field, value, …]], …]`, skipping deleted entries.
fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = text(pair.first()?)?;
            let Value::Array(flat) = pair.get(1)? else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, bytes(kv.get(1)?))))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// Parses an `XREADGROUP` reply (RESP2 array or RESP3 map) into entries;
/// what is not an entry is skipped. Public for the fuzz target.
#[doc(hidden)]
pub fn read_reply(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => entries(&kv[1]),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

impl StreamSubscription {
    fn delivery(&self, (id, fields): Entry, attempt: u32) -> (String, Delivery) {
        let d = Delivery {
            message: from_fields(&self.topic, fields),
            attempt,
            acker: Box::new(StreamAcker {
                conn: self.conn.clone(),
                stream: self.stream.clone(),
                group: self.group.clone(),
                consumer: self.consumer.clone(),
                id: id.clone(),
                attempt,
                ack_wait: self.ack_wait,
                held: self.held.clone(),
            }),
        };
        (id, d)
    }

    /// Takes over entries idle for `ack-wait`, with their delivery counts.
    async fn claim(&mut self) -> Result<(), BrokerError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.ack_wait.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(COUNT)
            .query_async(&mut self.conn)
            .await
            .map_err(connection_error)?;
        let claimed = match &reply {
            Value::Array(parts) if parts.len() >= 2 => entries(&parts[1]),
            _ => Vec::new(),
        };
        if claimed.is_empty() {
            return Ok(());
        }
        let counts: HashMap<String, i64> = self.pending().await?.into_iter().collect();
        for entry in claimed {
            let attempt = counts.get(&entry.0).map_or(2, |n| (*n).max(1) as u32);
            let d = self.delivery(entry, attempt);
            self.ready.push_back(d);
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<(), BrokerError> {
        let reply: Result<Value, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.reader)
            .await;
        let reply = match reply {
            Ok(r) => r,
            // The group is gone (a broker that lost its data, or a deleted
            // stream): declare it again.
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(stream = %self.stream, group = %self.group, "redis: consumer group missing; creating it again");
                create_group(&mut self.conn, &self.stream, &self.group, self.start).await?;
                return Ok(());
            }
            Err(e) => return Err(connection_error(e)),
        };
        for entry in read_reply(&reply) {
            let d = self.delivery(entry, 1);
            self.ready.push_back(d);
        }
        Ok(())
    }
}

impl StreamSubscription {
    /// This consumer's pending entries, with their delivery counters.
    async fn pending(&mut self) -> Result<Vec<(String, i64)>, BrokerError> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(COUNT * 10)
            .arg(&self.consumer)
            .query_async(&mut self.conn)
            .await
            .map_err(connection_error)?;
        let Value::Array(rows) = reply else {
            return Ok(Vec::new());
        };
        Ok(rows
            .iter()
            .filter_map(|row| match row {
                Value::Array(cols) => match (cols.first().and_then(text), cols.get(3)) {
                    (Some(id), Some(Value::Int(n))) => Some((id, *n)),
                    _ => None,
                },
                _ => None,
            })
            .collect())
    }

    /// Hands this consumer's pending entries that nobody holds back to its
    /// group at once, each at the attempt it was at.
    ///
    /// A `XREADGROUP … BLOCK` abandoned at close still runs on the server and
    /// may assign entries to this consumer that nobody will handle: a `PING`
    /// on the reader's connection answers only after it. Marked idle for
    /// `ack-wait`, the entries are taken over by the group's next
    /// `XAUTOCLAIM` instead of waiting out a whole `ack-wait`.
    async fn release(&mut self) -> Result<(), BrokerError> {
        let _: () = redis::cmd("PING")
            .query_async(&mut self.reader)
            .await
            .map_err(connection_error)?;
        let held = held_lock(&self.held).clone();
        let mut pipe = redis::pipe();
        let mut released = 0;
        for (id, count) in self.pending().await? {
            if held.contains(&id) {
                continue;
            }
            hand_back(
                &mut pipe,
                &self.stream,
                &self.group,
                &self.consumer,
                &id,
                count,
                self.ack_wait,
            );
            released += 1;
        }
        if released == 0 {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(connection_error)?;
        tracing::debug!(stream = %self.stream, released, "redis: pending entries handed back");
        Ok(())
    }
}

#[async_trait]
impl Subscription for StreamSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if self.closed {
                return None;
            }
            if let Some((id, d)) = self.ready.pop_front() {
                held_lock(&self.held).insert(id);
                return Some(Ok(d));
            }
            // A claim at most every BLOCK, counted from the end of the last
            // one: counted from its start, a claim that takes BLOCK or more
            // (a round trip of 100 ms) would be followed by another at once,
            // and new entries would never be read.
            let result = if self.last_claim.elapsed() >= BLOCK {
                let claimed = self.claim().await;
                self.last_claim = Instant::now();
                claimed
            } else {
                self.read().await
            };
            match result {
                Ok(()) => self.link.restored(),
                Err(e) => {
                    // The connection managers reconnect on the next command;
                    // wait out the backoff first. The first failure of an
                    // outage is reported to the caller, later ones only logged.
                    let first = !self.link.is_down();
                    let delay = self.link.lost(&e);
                    tokio::time::sleep(delay).await;
                    if first {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        self.closed = true;
        self.ready.clear();
        if !self.ephemeral {
            self.release().await?;
        }
        if self.ephemeral {
            let _: () = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&self.stream)
                .arg(&self.group)
                .query_async(&mut self.conn)
                .await
                .map_err(connection_error)?;
        }
        Ok(())
    }
}

/// Queues an `XCLAIM` that hands entry `id`, delivered `count` times, back
/// to the group: idle for `ack_wait` (the next `XAUTOCLAIM` takes it) and
/// its counter set back one, since that claim counts it again.
fn hand_back(
    pipe: &mut redis::Pipeline,
    stream: &str,
    group: &str,
    consumer: &str,
    id: &str,
    count: i64,
    ack_wait: Duration,
) {
    pipe.cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(ack_wait.as_millis() as u64)
        .arg("RETRYCOUNT")
        .arg((count - 1).max(0))
        .arg("JUSTID")
        .ignore();
}

struct StreamAcker {
    conn: ConnectionManager,
    stream: String,
    group: String,
    consumer: String,
    id: String,
    attempt: u32,
    ack_wait: Duration,
    held: Held,
}

impl StreamAcker {
    /// Acked or handed back: no longer the host's.
    fn let_go(&self) {
        held_lock(&self.held).remove(&self.id);
    }
}

#[async_trait]
impl Acker for StreamAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.let_go();
        let _: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.id)
            .query_async(&mut self.conn)
            .await
            .map_err(connection_error)?;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        // Still held: it waits for its redelivery, and its counter is right.
        // Idle enough that XAUTOCLAIM takes it over once `delay` has passed.
        let idle = self.ack_wait.saturating_sub(delay);
        let _: Value = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(&self.id)
            .arg("IDLE")
            .arg(idle.as_millis() as u64)
            .arg("JUSTID")
            .query_async(&mut self.conn)
            .await
            .map_err(connection_error)?;
        Ok(())
    }

    async fn release(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.let_go();
        let mut pipe = redis::pipe();
        hand_back(
            &mut pipe,
            &self.stream,
            &self.group,
            &self.consumer,
            &self.id,
            i64::from(self.attempt),
            self.ack_wait,
        );
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(connection_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let entry = |id: &str, k: &str, v: &str| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![
                    Value::BulkString(k.into()),
                    Value::BulkString(v.into()),
                ]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry("1-0", "data", "a"), entry("2-0", "data", "b")]),
        ])]);
        let got = read_reply(&reply);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, "2-0");
        assert_eq!(got[1].1, vec![("data".to_string(), b"b".to_vec())]);
        assert!(read_reply(&Value::Nil).is_empty());
    }
}
