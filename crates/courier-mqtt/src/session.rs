//! The sessions of subscriptions: which client id a subscription connects
//! with, and which connection an acknowledgement may go out on.
//!
//! - [`SessionId`]: a point-to-point subscription keeps a persistent
//!   session by default, so what the broker queued for it, and what it had
//!   handed out and not yet seen acknowledged, is sent again when Courier
//!   comes back. Its client id is stable across restarts: the client id
//!   prefix, the group, a fingerprint of the topic filter and a slot
//!   number. Subscriptions of one process take the lowest slot no other
//!   live one of it holds ([`Inflight::claim`]); a guest that re-subscribes
//!   takes over its closing subscription's slot, and with it what that one
//!   had received. Across hosts, when the broker says another client took
//!   the session over (MQTT 5 reason 0x8E), the one pushed out moves to the
//!   next slot, and the one that took the slot over receives what was in
//!   flight in it. (Mosquitto before 2.0.15 closes the older connection
//!   without that reason: there, each host of a group needs a `client-id`
//!   of its own.)
//! - [`AckGate`]: a PUBACK goes out only on the connection that received
//!   the message. After a reconnect the broker sends every unacknowledged
//!   message again under the same packet id; a PUBACK from an older
//!   connection would acknowledge whatever holds that id now, which may be
//!   another message.
//! - [`Inflight`]: what a session holds belongs to the session, not to one
//!   connection. Messages handed out are tracked by session and packet id:
//!   when the broker resends one (DUP) on a new connection of the same
//!   session — after a reconnect, or when a guest that re-subscribed took
//!   the session over — while the guest still holds it, the copy is not
//!   handed out again and the guest's settlement is acknowledged on the new
//!   connection; when the guest settled it while no connection was up, the
//!   copy is acknowledged as it arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_broker::BrokerError;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Publish};
use rumqttc::v5::{AsyncClient, ClientError, ConnectionError, StateError};

use crate::connection_error;

/// How many slots a group's members may take on one filter.
const MAX_SLOTS: u32 = 1000;

/// The client id of a subscription's session.
#[derive(Debug, Clone)]
pub(crate) struct SessionId {
    /// The id without its slot, or the whole id when it has none.
    base: String,
    /// `None` for an id that is used as given (a `durable` name, or a
    /// clean session's unique id).
    slot: Option<u32>,
}

impl SessionId {
    /// An id used as it is.
    pub(crate) fn fixed(id: String) -> Self {
        Self {
            base: id,
            slot: None,
        }
    }

    /// The persistent session of a point-to-point subscription: slot 0 of
    /// `PREFIX-GROUP-FINGERPRINT`.
    pub(crate) fn shared(prefix: &str, group: &str, filter: &str) -> Self {
        let group: String = group
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        Self {
            base: format!("{prefix}-{group}-{:016x}", fingerprint(filter)),
            slot: Some(0),
        }
    }

    /// The client id to connect with.
    pub(crate) fn current(&self) -> String {
        match self.slot {
            Some(slot) => format!("{}-{slot}", self.base),
            None => self.base.clone(),
        }
    }

    /// Moves to the next slot after the session was taken over; `None`
    /// when this id has no slots or all are used.
    pub(crate) fn next(&mut self) -> Option<String> {
        let slot = self.slot.as_mut()?;
        if *slot + 1 >= MAX_SLOTS {
            return None;
        }
        *slot += 1;
        Some(self.current())
    }
}

/// FNV-1a: a fingerprint that stays the same across builds and platforms.
fn fingerprint(text: &str) -> u64 {
    fnv1a(FNV_OFFSET, text.as_bytes())
}

/// FNV-1a's starting value.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a hash `h` over `bytes`.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the broker closed the connection because another client
/// connected with the same client id.
pub(crate) fn taken_over(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        })
    )
}

/// Which connection of a subscription is live; acknowledgements go out
/// only on the connection their message came on.
#[derive(Debug)]
pub(crate) struct AckGate {
    state: Mutex<Link>,
}

#[derive(Debug)]
struct Link {
    /// Counts connections: 1 for the first, one more at every CONNACK.
    generation: u64,
    /// Whether that connection is up.
    up: bool,
    /// Whether its subscription is closing (unsubscribed).
    closing: bool,
    /// Whether a new subscription of this process took its session over.
    superseded: bool,
}

impl AckGate {
    /// A gate for a subscription whose first connection is up.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(Link {
                generation: 1,
                up: true,
                closing: false,
                superseded: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection that messages arrive on now.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A new connection is up (a CONNACK came).
    pub(crate) fn connected(&self) {
        let mut link = self.lock();
        link.generation += 1;
        link.up = true;
    }

    /// The subscription is closing: another of this process may take its
    /// session over.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
    }

    /// Whether the subscription is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// A new subscription of this process takes the session over: this
    /// connection acknowledges nothing more (the broker is about to close
    /// it).
    fn supersede(&self) {
        let mut link = self.lock();
        link.up = false;
        link.superseded = true;
    }

    /// Whether a new subscription of this process took the session over.
    pub(crate) fn superseded(&self) -> bool {
        self.lock().superseded
    }

    /// The connection failed: nothing is acknowledged until the next one.
    pub(crate) fn lost(&self) {
        self.lock().up = false;
    }

    /// Acknowledges `publish`, received on connection `generation`, if that
    /// connection is still up.
    pub(crate) async fn ack(
        &self,
        client: &AsyncClient,
        generation: u64,
        publish: &Publish,
    ) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            {
                let link = self.lock();
                if link.generation != generation || !link.up {
                    return Err(connection_error(
                        "the connection that received this message was lost before its \
                         acknowledgement; the broker sends it again",
                    ));
                }
                // Queued while the connection is known up: if it fails before
                // the PUBACK is written, rumqttc drops the PUBACK with it.
                match client.try_ack(publish) {
                    Ok(()) => return Ok(()),
                    // Full: the event loop is busy (once it ends, the gate
                    // is down).
                    Err(ClientError::TryRequest(_)) if tokio::time::Instant::now() < deadline => {}
                    Err(e) => return Err(connection_error(e)),
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ids_are_stable_and_move_through_slots() {
        let mut id = SessionId::shared("courier", "work ers", "orders/+");
        let first = id.current();
        assert_eq!(
            first,
            SessionId::shared("courier", "work ers", "orders/+").current()
        );
        assert!(first.starts_with("courier-work_ers-"), "{first}");
        assert!(first.ends_with("-0"), "{first}");
        assert_ne!(
            first,
            SessionId::shared("courier", "work ers", "orders/#").current()
        );
        assert_eq!(
            id.next().unwrap(),
            format!("{}1", &first[..first.len() - 1])
        );
        assert_eq!(SessionId::fixed("mine".into()).next(), None);
        assert_eq!(SessionId::fixed("mine".into()).current(), "mine");
    }

    fn route(gate: &Arc<AckGate>, pkid: u16, dup: bool) -> (Route, rumqttc::v5::EventLoop) {
        let (client, eventloop) =
            AsyncClient::new(rumqttc::v5::MqttOptions::new("test", "127.0.0.1", 1), 10);
        let mut publish = Publish::new("t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "x", None);
        publish.pkid = pkid;
        publish.dup = dup;
        let route = Route {
            client,
            gate: gate.clone(),
            generation: gate.generation(),
            publish,
        };
        (route, eventloop)
    }

    fn requeue() -> (
        Requeue,
        futures::channel::mpsc::UnboundedReceiver<(Tag, Publish)>,
    ) {
        futures::channel::mpsc::unbounded()
    }

    /// A guest that re-subscribed (or a reconnect) gets the session's
    /// messages again: one the guest still holds is not handed out twice,
    /// and its settlement is acknowledged on the new connection; one it
    /// settled while no connection was up is acknowledged as it comes.
    #[tokio::test]
    async fn a_resent_message_goes_to_whoever_holds_it() {
        let inflight = Inflight::default();
        let (q, _rq) = requeue();
        let session: Arc<str> = "s-0".into();
        let old = Arc::new(AckGate::new());
        let mut id = SessionId::fixed("s-0".into());
        assert_eq!(inflight.claim(&mut id, &old), session);
        let first = inflight.tag(&session, &old);
        let (r, _l1) = route(&old, 7, false);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::New(1)
        ));
        let (r, _l2) = route(&old, 8, false);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::New(1)
        ));

        // A re-subscription takes the closing one's session over; the old
        // connection acknowledges nothing more.
        old.close();
        let new = Arc::new(AckGate::new());
        assert_eq!(inflight.claim(&mut id, &new), session);
        inflight.settle(&first, 8).await.unwrap(); // settled while nothing could ack it
        let second = inflight.tag(&session, &new);
        let (r, _l3) = route(&new, 7, true);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::Held
        ));
        let (r, _l4) = route(&new, 8, true);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::Settled
        ));
        inflight.settle(&first, 7).await.unwrap();
        // Both were acknowledged on the new connection. Should a PUBACK be
        // lost with its connection, a copy is acknowledged again, never
        // handed out; a message that reuses the packet id is a new one.
        let (r, _l5) = route(&new, 7, true);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::Settled
        ));
        // The broker had the PUBACK and gave the id to another message,
        // whose first send was lost with its connection: a copy, but not of
        // the settled message.
        let (mut r, _l6) = route(&new, 7, true);
        r.publish.payload = "another".into();
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::New(2)
        ));
        let (r, _l7) = route(&new, 8, false);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::New(1)
        ));
    }

    /// A delivery dropped unsettled (a closing subscription handed it back)
    /// leaves its message to be handed out again when the broker resends it.
    #[tokio::test]
    async fn a_dropped_delivery_lets_the_copy_through() {
        let inflight = Arc::new(Inflight::default());
        let (q, mut rq) = requeue();
        let session: Arc<str> = "s-0".into();
        let gate = Arc::new(AckGate::new());
        inflight.claim(&mut SessionId::fixed("s-0".into()), &gate);
        let first = inflight.tag(&session, &gate);
        let (r, _l1) = route(&gate, 7, false);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::New(1)
        ));
        let claim = Claim::new(inflight.clone(), first.clone(), 7);
        let (r, _l2) = route(&gate, 7, true);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::Held
        ));
        drop(claim);
        // The copy held back comes to its subscription again, to be handed out.
        let (again, publish) = rq.try_recv().expect("the copy is handed out");
        assert!(publish.dup && publish.pkid == 7);
        let (r, _l3) = route(&gate, 7, true);
        assert!(matches!(
            inflight.arrived(&again, r, &q).await,
            Arrival::New(1)
        ));
    }

    /// A resent copy is handed out at the attempt the guest reached: the
    /// first for a message that came off the old connection but was never
    /// handed out, the raised one for a message waiting for an in-process
    /// redelivery when its subscription closed.
    #[tokio::test]
    async fn a_copy_keeps_the_attempt_the_guest_reached() {
        let inflight = Arc::new(Inflight::default());
        let (q, _rq) = requeue();
        let session: Arc<str> = "s-0".into();
        let old = Arc::new(AckGate::new());
        let mut id = SessionId::fixed("s-0".into());
        inflight.claim(&mut id, &old);
        let first = inflight.tag(&session, &old);
        // 7 is handed out and rejected twice; 8 is received, never handed out.
        let (r, _l1) = route(&old, 7, false);
        inflight.received(&first, 7, false);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::New(1)
        ));
        let claim = Claim::new(inflight.clone(), first.clone(), 7);
        claim.retrying(2);
        claim.retrying(3);
        inflight.received(&first, 8, false);
        // The subscription closes; a re-subscription takes the session over.
        old.close();
        drop(claim);
        let new = Arc::new(AckGate::new());
        inflight.claim(&mut id, &new);
        let second = inflight.tag(&session, &new);
        for pkid in [7, 8] {
            inflight.received(&second, pkid, true);
        }
        let (r, _l2) = route(&new, 7, true);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::New(3)
        ));
        let (r, _l3) = route(&new, 8, true);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::New(1)
        ));
        // A copy of a message this process never saw went to an earlier
        // connection (another host, or before a restart): attempt 2.
        inflight.received(&second, 9, true);
        let (r, _l4) = route(&new, 9, true);
        let unknown = Inflight::default();
        assert!(matches!(
            unknown.arrived(&second, r, &q).await,
            Arrival::New(2)
        ));
    }

    /// A session the broker started afresh held nothing: an old settlement
    /// does not acknowledge a message of the new one.
    #[tokio::test]
    async fn a_new_session_forgets_the_old_one() {
        let inflight = Inflight::default();
        let (q, _rq) = requeue();
        let session: Arc<str> = "s-0".into();
        let gate = Arc::new(AckGate::new());
        assert_eq!(
            inflight.claim(&mut SessionId::fixed("s-0".into()), &gate),
            session
        );
        let first = inflight.tag(&session, &gate);
        let (r, _l1) = route(&gate, 7, false);
        assert!(matches!(
            inflight.arrived(&first, r, &q).await,
            Arrival::New(1)
        ));
        gate.lost();
        inflight.settle(&first, 7).await.unwrap();
        gate.connected();
        inflight.new_life(&session);
        let (r, _l2) = route(&gate, 7, true);
        let second = inflight.tag(&session, &gate);
        assert!(matches!(
            inflight.arrived(&second, r, &q).await,
            Arrival::New(2)
        ));
    }

    /// Two live subscriptions of one group and filter in this process take
    /// slots of their own; a closing one's slot is taken over.
    #[test]
    fn live_subscriptions_take_slots_of_their_own() {
        let inflight = Inflight::default();
        let shared = || SessionId::shared("courier", "g", "t");
        let (a, b, c) = (
            Arc::new(AckGate::new()),
            Arc::new(AckGate::new()),
            Arc::new(AckGate::new()),
        );
        let slot_a = inflight.claim(&mut shared(), &a);
        let slot_b = inflight.claim(&mut shared(), &b);
        assert!(
            slot_a.ends_with("-0") && slot_b.ends_with("-1"),
            "{slot_a} {slot_b}"
        );
        a.close();
        assert_eq!(inflight.claim(&mut shared(), &c), slot_a);
        assert!(
            !a.lock().up,
            "the closing connection acknowledges nothing more"
        );
        drop(b);
        assert_eq!(
            inflight.claim(&mut shared(), &Arc::new(AckGate::new())),
            slot_b
        );
    }

    #[test]
    fn the_fingerprint_does_not_change() {
        // FNV-1a test vector: a change would orphan every session.
        assert_eq!(fingerprint("a"), 0xaf63_dc4c_8601_ec8c);
    }
}

/// Where the PUBACK of a message held in a session goes: the connection
/// that received it last.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) client: AsyncClient,
    pub(crate) gate: Arc<AckGate>,
    pub(crate) generation: u64,
    pub(crate) publish: Publish,
}

impl Route {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.gate
            .ack(&self.client, self.generation, &self.publish)
            .await
    }
}

/// The subscription a message came to, to hand it out there after all.
pub(crate) type Requeue = futures::channel::mpsc::UnboundedSender<(Tag, Publish)>;

/// What this process knows of a message of a session, by packet id.
enum Held {
    /// Arrived on a connection and not handed out (yet): a copy that the
    /// broker resends is the guest's first sight of it.
    Received,
    /// Handed out and not settled yet; the PUBACK goes to `route`, and if
    /// a copy was held back for it, the copy goes to `copy` should the
    /// delivery be dropped unsettled. `next` is the attempt a copy is
    /// handed out at then.
    Out {
        route: Box<Route>,
        copy: Option<(Tag, Requeue)>,
        next: u32,
    },
    /// Handed out and dropped unsettled (its subscription closed, or it was
    /// never queued): a copy is handed out again at attempt `next`.
    Returned { next: u32 },
    /// Settled and its PUBACK sent, or to be sent when no connection was
    /// up: a resent copy (the PUBACK did not reach the broker) is
    /// acknowledged again, never handed out. `content` tells the copy from
    /// another message: once the broker had the PUBACK it may give the
    /// packet id to the next message, and if that one's first send was lost
    /// with its connection, it too comes as a copy (DUP) under that id.
    Settled { content: u64 },
}

/// A fingerprint of a message's topic and payload.
fn content(publish: &Publish) -> u64 {
    let h = fnv1a(FNV_OFFSET, &publish.topic);
    fnv1a(fnv1a(h, &[0xff]), &publish.payload)
}

/// Where a message came from: the session (its client id and which of its
/// lives: a new session starts a new one) and the connection.
#[derive(Debug, Clone)]
pub(crate) struct Tag {
    pub(crate) session: Arc<str>,
    pub(crate) life: u64,
    pub(crate) generation: u64,
}

/// A handed-out message's claim on its settlement: settling it
/// acknowledges the message ([`Inflight::settle`]); a redelivery in process
/// moves its attempt on; dropping it unsettled lets a resent copy be handed
/// out again, at the attempt it had reached.
pub(crate) struct Claim {
    inflight: Arc<Inflight>,
    tag: Tag,
    pkid: u16,
    settled: bool,
}

impl Claim {
    pub(crate) fn new(inflight: Arc<Inflight>, tag: Tag, pkid: u16) -> Self {
        Self {
            inflight,
            tag,
            pkid,
            settled: false,
        }
    }

    /// The message is to be handed out again in process at `attempt`.
    pub(crate) fn retrying(&self, attempt: u32) {
        self.inflight.retrying(&self.tag, self.pkid, attempt);
    }

    /// The guest settled the message.
    pub(crate) async fn settle(mut self) -> Result<(), BrokerError> {
        self.settled = true;
        self.inflight.settle(&self.tag, self.pkid).await
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            self.inflight.dropped(&self.tag, self.pkid);
        }
    }
}

/// What arrived, as [`Inflight::arrived`] sees it.
pub(crate) enum Arrival {
    /// A message to hand out, at this attempt.
    New(u32),
    /// A copy of a message the guest still holds: not handed out; its
    /// settlement will be acknowledged on the copy's connection.
    Held,
    /// A copy of a message the guest had settled: acknowledged now.
    Settled,
}

/// How many settled messages per session are remembered, in case the
/// broker resends one whose PUBACK was lost with its connection. Only
/// messages that were in flight when a connection was lost are resent: far
/// fewer than this.
const SETTLED_REMEMBERED: usize = 4096;

#[derive(Default)]
struct Sessions {
    /// Per client id, how many times a new session started.
    lives: HashMap<Arc<str>, u64>,
    /// Per client id, the gate of this process's connection to it.
    owners: HashMap<Arc<str>, std::sync::Weak<AckGate>>,
    /// Per client id and packet id: the life it arrived in, and its state.
    held: HashMap<(Arc<str>, u16), (u64, Held)>,
    /// Per client id, the packet ids settled most recently, oldest first.
    settled: HashMap<Arc<str>, VecDeque<u16>>,
}

impl Sessions {
    fn life(&self, session: &Arc<str>) -> u64 {
        self.lives.get(session).copied().unwrap_or(0)
    }

    /// Marks `key` settled in `life`, forgetting the oldest settled one
    /// beyond [`SETTLED_REMEMBERED`].
    fn settled(&mut self, key: (Arc<str>, u16), life: u64, content: u64) {
        let recent = self.settled.entry(key.0.clone()).or_default();
        recent.push_back(key.1);
        if recent.len() > SETTLED_REMEMBERED
            && let Some(oldest) = recent.pop_front()
        {
            let old = (key.0.clone(), oldest);
            if matches!(self.held.get(&old), Some((_, Held::Settled { .. }))) {
                self.held.remove(&old);
            }
        }
        self.held.insert(key, (life, Held::Settled { content }));
    }
}

/// The messages of every subscription of one client, per session and
/// packet id, from their arrival to their settlement (so a guest that
/// re-subscribes finds what its earlier subscription of the same session
/// was sent, handed out, or settled).
#[derive(Default)]
pub(crate) struct Inflight {
    state: Mutex<Sessions>,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client id a new connection (its gate `gate`) of this process
    /// takes for `session`: from its current slot on, the first that no
    /// other subscription of this process holds, or holds while closing. A
    /// closing subscription's connection acknowledges nothing more from now
    /// on, since the broker is about to close it (what it handed out is
    /// acknowledged on the new connection, see [`Inflight::arrived`]).
    pub(crate) fn claim(&self, session: &mut SessionId, gate: &Arc<AckGate>) -> Arc<str> {
        let mut state = self.lock();
        state.owners.retain(|_, gate| gate.strong_count() > 0);
        loop {
            let id: Arc<str> = session.current().into();
            let holder = state.owners.get(&id).and_then(std::sync::Weak::upgrade);
            let free = holder
                .as_ref()
                .is_none_or(|h| Arc::ptr_eq(h, gate) || h.is_closing());
            if free || session.next().is_none() {
                if let Some(old) = holder
                    && !Arc::ptr_eq(&old, gate)
                {
                    old.supersede();
                }
                state.owners.insert(id.clone(), Arc::downgrade(gate));
                return id;
            }
        }
    }

    /// The tag of a message arriving now in `session` on `gate`'s
    /// connection.
    pub(crate) fn tag(&self, session: &Arc<str>, gate: &AckGate) -> Tag {
        Tag {
            session: session.clone(),
            life: self.life(session),
            generation: gate.generation(),
        }
    }

    /// The current life of `session`.
    pub(crate) fn life(&self, session: &Arc<str>) -> u64 {
        self.lock().life(session)
    }

    /// The broker started `session` afresh (CONNACK without a session), or
    /// this process left it: what it held is gone from here.
    pub(crate) fn new_life(&self, session: &Arc<str>) {
        let mut state = self.lock();
        *state.lives.entry(session.clone()).or_default() += 1;
        state.held.retain(|(s, _), _| s != session);
        state.settled.remove(session);
    }

    /// A QoS 1 or 2 message, tagged `tag`, came off a connection (before
    /// its subscription hands it out, which it may never do if it closes
    /// first): a new message, or a copy of one this process has never seen,
    /// is recorded as received.
    pub(crate) fn received(&self, tag: &Tag, pkid: u16, dup: bool) {
        let mut state = self.lock();
        if state.life(&tag.session) != tag.life {
            return;
        }
        let key = (tag.session.clone(), pkid);
        match state.held.get(&key) {
            // A copy of a message known here keeps what is known of it.
            Some((life, _)) if dup && *life == tag.life => {}
            // New (the broker reused the packet id, so the message it stood
            // for was acknowledged), or a copy of a message from before.
            _ => {
                state.held.insert(key, (tag.life, Held::Received));
            }
        }
    }

    /// A QoS 1 or 2 message, tagged `tag`, is about to be handed out by the
    /// subscription of `route`'s connection: whether to, and at which
    /// attempt. A copy (`dup`) of a message this process knows nothing of
    /// was sent to an earlier connection: attempt 2.
    pub(crate) async fn arrived(&self, tag: &Tag, route: Route, requeue: &Requeue) -> Arrival {
        let key = (tag.session.clone(), route.publish.pkid);
        let dup = route.publish.dup;
        {
            let mut state = self.lock();
            if state.life(&tag.session) != tag.life {
                // From a session that is gone: handed out, not tracked.
                return Arrival::New(if dup { 2 } else { 1 });
            }
            let attempt = match state.held.get_mut(&key) {
                Some((
                    life,
                    Held::Out {
                        route: out, copy, ..
                    },
                )) if dup && *life == tag.life => {
                    **out = route;
                    *copy = Some((tag.clone(), requeue.clone()));
                    tracing::debug!(session = %tag.session, pkid = key.1, "mqtt: a resent message the guest still holds is not handed out again");
                    return Arrival::Held;
                }
                Some((life, Held::Settled { content: c }))
                    if dup && *life == tag.life && *c == content(&route.publish) =>
                {
                    None
                }
                Some((life, Held::Returned { next })) if dup && *life == tag.life => Some(*next),
                Some((life, Held::Received)) if *life == tag.life => Some(1),
                _ => Some(if dup { 2 } else { 1 }),
            };
            if let Some(attempt) = attempt {
                let out = Held::Out {
                    route: Box::new(route),
                    copy: None,
                    next: attempt,
                };
                state.held.insert(key, (tag.life, out));
                return Arrival::New(attempt);
            }
        }
        tracing::debug!(session = %tag.session, pkid = key.1, "mqtt: a resent message the guest had settled is acknowledged");
        // If this fails too, the broker sends it once more.
        let _ = route.ack().await;
        Arrival::Settled
    }

    /// The guest settled the message `pkid` that arrived tagged `tag`:
    /// acknowledges it on the connection that holds it now (or, with none
    /// up, when the broker sends it again) and remembers it as settled.
    pub(crate) async fn settle(&self, tag: &Tag, pkid: u16) -> Result<(), BrokerError> {
        let key = (tag.session.clone(), pkid);
        let route = {
            let mut state = self.lock();
            match state.held.get(&key) {
                Some((life, Held::Out { .. })) if *life == tag.life => {}
                // Its session is gone, and the message with it.
                _ => return Ok(()),
            }
            let Some((_, Held::Out { route, .. })) = state.held.remove(&key) else {
                return Ok(());
            };
            state.settled(key, tag.life, content(&route.publish));
            route
        };
        // If the PUBACK does not reach the broker, it sends the message
        // again: acknowledged then (see `arrived`).
        let _ = route.ack().await;
        Ok(())
    }

    /// The message `pkid`, tagged `tag`, is to be handed out again in
    /// process at `attempt`: a copy handed out instead starts there.
    pub(crate) fn retrying(&self, tag: &Tag, pkid: u16, attempt: u32) {
        let mut state = self.lock();
        if let Some((life, Held::Out { next, .. })) =
            state.held.get_mut(&(tag.session.clone(), pkid))
            && *life == tag.life
        {
            *next = attempt;
        }
    }

    /// The delivery of message `pkid`, tagged `tag`, was dropped unsettled
    /// (handed back by a closing subscription, or waiting for an in-process
    /// redelivery that will not come): a copy the broker resends is to be
    /// handed out again, at the attempt it had reached.
    fn dropped(&self, tag: &Tag, pkid: u16) {
        let mut state = self.lock();
        let key = (tag.session.clone(), pkid);
        let Some((life, Held::Out { next, .. })) = state.held.get(&key) else {
            return;
        };
        if *life != tag.life {
            return;
        }
        let returned = Held::Returned { next: *next };
        if let Some((_, Held::Out { route, copy, .. })) =
            state.held.insert(key.clone(), (tag.life, returned))
            && let Some((tag, requeue)) = copy
        {
            // Its subscription hands it out (unless it closed meanwhile).
            tracing::debug!(session = %tag.session, pkid = key.1, "mqtt: a delivery was dropped unsettled; its resent copy is handed out");
            let _ = requeue.unbounded_send((tag, route.publish));
        }
    }
}
