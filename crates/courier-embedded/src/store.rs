//! Disk storage for the embedded broker's point-to-point queues.
//!
//! With a data directory, every message that lands in a competing-consumer
//! (group) queue is written to a [fjall](https://docs.rs/fjall) database before
//! `publish` returns, and removed when it is acknowledged; on the next start
//! the queues and their unsettled messages come back. Broadcast queues live as
//! long as their one subscriber and are never stored.
//!
//! fjall is a log-structured store: each write is appended to its journal, so
//! a queue's insert-then-delete traffic costs one sequential append each. All
//! writes go through one writer thread that commits whatever has queued up in
//! a single batch (group commit): with [`SyncPolicy::Always`] one `fdatasync`
//! covers every publish waiting at that moment.
//!
//! Layout: keyspace `meta` holds key `format`, the store's format version
//! ([`FORMAT_VERSION`], a little-endian `u32`), written and synced before
//! anything else in a new directory and checked before anything is read;
//! keyspace `queues` maps a queue id to its group and pattern; keyspace
//! `entries` maps queue id + sequence number (both big-endian, so a scan
//! returns a queue's messages in publish order) to the delivery attempt and
//! the encoded message. A store from before the version record existed has
//! `queues` and `entries` but no `meta`: it is format version 1 and gets the
//! record on its next open.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use courier_broker::error::BoxError;
use courier_broker::{BrokerError, Message};

/// The version of the on-disk format this build reads and writes.
///
/// It covers what Courier puts into the fjall database: the keyspace names,
/// the key layout (`entry_key`, queue ids) and the value encodings (the
/// queue record and `encode`). It does not cover fjall's own file format,
/// which fjall versions and checks itself when the database is opened.
///
/// Raise it whenever a build could write something an older build would
/// misread or reject: a changed or added field in a record, a new key layout,
/// a renamed or repurposed keyspace. Raising it makes older builds refuse
/// stores written by this one, rather than misread them; when raising it,
/// teach `Store::open` to upgrade (or refuse) stores of the older versions.
pub const FORMAT_VERSION: u32 = 1;

/// The keyspace holding the format version record, and its key.
///
/// A keyspace rather than a file beside the database: fjall owns the
/// directory (it keeps its own `version` marker, `lock` and `keyspaces/`
/// there), a key is read and written under fjall's directory lock, so two
/// processes cannot race on it, and it is journaled and synced like every
/// other write instead of needing its own write-rename-fsync dance.
const META_KEYSPACE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";

/// When a published message counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// `publish` returns after the message is on disk (`fdatasync`): nothing
    /// accepted is lost even if the machine loses power.
    #[default]
    Always,
    /// `publish` returns once the message is written to the operating system:
    /// it survives a crash or `kill -9` of Courier, not of the machine.
    Os,
}

impl SyncPolicy {
    /// Parses `always` or `os`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "os" => Some(Self::Os),
            _ => None,
        }
    }
}

/// A queue found on disk at open, with its unsettled messages in order.
pub(crate) struct RecoveredQueue {
    pub id: u64,
    pub group: String,
    pub pattern: String,
    /// (sequence number, attempt, message).
    pub entries: Vec<(u64, u32, Message)>,
}

enum Op {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    /// A barrier: answered once everything before it is committed with the
    /// publish policy.
    Commit(oneshot::Sender<Result<(), Arc<fjall::Error>>>),
}

/// The open database and its writer thread.
pub(crate) struct Store {
    queues: Keyspace,
    /// `None` only while dropping.
    writer: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_seq: AtomicU64,
    next_queue: AtomicU64,
}

/// A storage failure caused by `e` (fjall's or the system's error, kept as
/// the source).
fn storage_error(what: &str, e: impl Into<BoxError>) -> BrokerError {
    storage_fault(what).with_source(e)
}

/// A storage failure found by Courier itself (a corrupt record...).
fn storage_fault(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::other(format!("embedded broker storage: {what}")).with_backend("embedded")
}

/// The key of one entry.
pub(crate) fn entry_key(queue: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&queue.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the database in `dir` and reads back every queue.
    pub fn open(dir: &Path, sync: SyncPolicy) -> Result<(Self, Vec<RecoveredQueue>), BrokerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage_error(&format!("cannot create `{}`", dir.display()), e))?;
        let db = Database::builder(dir)
            .open()
            .map_err(|e| storage_error(&format!("cannot open `{}`", dir.display()), e))?;
        check_format(&db, dir)?;
        let queues = db
            .keyspace("queues", KeyspaceCreateOptions::default)
            .map_err(|e| storage_error("opening keyspace `queues`", e))?;
        let entries = db
            .keyspace("entries", KeyspaceCreateOptions::default)
            .map_err(|e| storage_error("opening keyspace `entries`", e))?;

        let mut recovered: Vec<RecoveredQueue> = Vec::new();
        for kv in queues.iter() {
            let (k, v) = kv
                .into_inner()
                .map_err(|e| storage_error("reading queues", e))?;
            let id = read_u64(&k).ok_or_else(|| storage_fault("queue key: bad length"))?;
            let mut r = Reader(&v);
            let (group, pattern) = r
                .string()
                .and_then(|g| Some((g, r.string()?)))
                .ok_or_else(|| storage_fault("queue record: corrupt"))?;
            recovered.push(RecoveredQueue {
                id,
                group,
                pattern,
                entries: Vec::new(),
            });
        }
        let mut max_seq = 0;
        for kv in entries.iter() {
            let (k, v) = kv
                .into_inner()
                .map_err(|e| storage_error("reading entries", e))?;
            let (queue, seq) = match (
                read_u64(&k[..k.len().min(8)]),
                k.get(8..).and_then(read_u64),
            ) {
                (Some(q), Some(s)) => (q, s),
                _ => return Err(storage_fault("entry key: bad length")),
            };
            let (attempt, message) = decode(&v).ok_or_else(|| {
                storage_fault(format!("entry: corrupt record for sequence {seq}"))
            })?;
            max_seq = max_seq.max(seq);
            match recovered.iter_mut().find(|q| q.id == queue) {
                Some(q) => q.entries.push((seq, attempt, message)),
                None => tracing::warn!(queue, seq, "embedded broker: entry of an unknown queue"),
            }
        }
        let next_queue = recovered.iter().map(|q| q.id).max().unwrap_or(0) + 1;

        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer_entries = entries.clone();
        let thread = std::thread::Builder::new()
            .name("courier-store".into())
            .spawn(move || write_loop(writer_db, writer_entries, rx, sync))
            .map_err(|e| storage_error("starting the writer thread", e))?;
        Ok((
            Self {
                queues,
                writer: Some(tx),
                thread: Some(thread),
                next_seq: AtomicU64::new(max_seq + 1),
                next_queue: AtomicU64::new(next_queue),
            },
            recovered,
        ))
    }

    fn send(&self, op: Op) -> Result<(), BrokerError> {
        self.writer
            .as_ref()
            .ok_or_else(|| storage_fault("writer: the store is closing"))?
            .send(op)
            .map_err(|_| storage_fault("writer: the writer thread stopped"))
    }

    /// Records a new group queue, durably, and returns its id.
    pub fn add_queue(&self, group: &str, pattern: &str) -> Result<u64, BrokerError> {
        let id = self.next_queue.fetch_add(1, Ordering::Relaxed);
        let mut v = Vec::new();
        put_str(&mut v, group);
        put_str(&mut v, pattern);
        self.queues
            .insert(id.to_be_bytes(), v)
            .map_err(|e| storage_error("recording a queue", e))?;
        Ok(id)
    }

    /// Reserves `n` consecutive sequence numbers (all above 0) and returns
    /// the first.
    pub fn reserve_seqs(&self, n: usize) -> u64 {
        self.next_seq.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// Writes entries and waits until they are stored under the sync policy.
    pub async fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), BrokerError> {
        for (k, v) in entries {
            self.send(Op::Put(k, v))?;
        }
        self.commit().await
    }

    /// Waits until every write sent so far is stored under the sync policy.
    pub async fn commit(&self) -> Result<(), BrokerError> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Commit(done))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(storage_error("writing messages", e)),
            Err(_) => Err(storage_fault("writer: the writer thread stopped")),
        }
    }

    /// Rewrites an entry (a new attempt count), without waiting.
    pub fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        if let Err(e) = self.send(Op::Put(key, value)) {
            tracing::error!("{e}");
        }
    }

    /// Forgets a settled entry, without waiting: if this is lost in a crash,
    /// the message is delivered again (at least once).
    pub fn remove(&self, key: Vec<u8>) {
        if let Err(e) = self.send(Op::Remove(key)) {
            tracing::error!("{e}");
        }
    }
}

impl Drop for Store {
    /// Lets the writer commit what is queued, and waits for it, so that the
    /// directory is released when the broker is gone.
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the store's format version, recording it first if the store has
/// none, and refuses a version this build cannot read. Runs before the data
/// keyspaces are opened, so nothing is created in a store that is refused.
fn check_format(db: &Database, dir: &Path) -> Result<(), BrokerError> {
    // Decided before `meta` is opened: a store written before the version
    // record existed has these keyspaces (every open created both) and no
    // record.
    let legacy = db.keyspace_exists("queues") || db.keyspace_exists("entries");
    let meta = db
        .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
        .map_err(|e| storage_error("opening keyspace `meta`", e))?;
    let found = meta
        .get(FORMAT_KEY)
        .map_err(|e| storage_error("reading the store format version", e))?;
    let version = match found {
        Some(v) => decode_format(&v).map_err(|reason| {
            storage_fault(format!(
                "`{}`: unreadable store format version ({reason}); refusing to open it",
                dir.display()
            ))
        })?,
        None => {
            // Format version 1 is what stores had before the record existed.
            let version = if legacy { 1 } else { FORMAT_VERSION };
            meta.insert(FORMAT_KEY, version.to_le_bytes())
                .map_err(|e| storage_error("recording the store format version", e))?;
            db.persist(PersistMode::SyncAll)
                .map_err(|e| storage_error("recording the store format version", e))?;
            if legacy {
                tracing::info!(
                    dir = %dir.display(),
                    version,
                    "embedded broker: recorded the format version of a store that had none"
                );
            }
            version
        }
    };
    if version > FORMAT_VERSION {
        return Err(storage_fault(format!(
            "`{}` was written by a newer Courier: its store \
             format version is {version}, this build supports version {FORMAT_VERSION}; \
             open it with a newer Courier or use another data directory",
            dir.display()
        )));
    }
    if version < FORMAT_VERSION {
        // Unreachable while FORMAT_VERSION is 1; an upgrade goes here.
        return Err(storage_fault(format!(
            "`{}` has store format version {version}, which this \
             build (format version {FORMAT_VERSION}) cannot upgrade",
            dir.display()
        )));
    }
    Ok(())
}

/// Decodes the format version record: a little-endian `u32`, at least 1.
fn decode_format(b: &[u8]) -> Result<u32, String> {
    let bytes: [u8; 4] = b.try_into().map_err(|_| {
        format!(
            "expected 4 bytes, found {}: {:02x?}",
            b.len(),
            &b[..b.len().min(16)]
        )
    })?;
    match u32::from_le_bytes(bytes) {
        0 => Err("version 0 does not exist".into()),
        v => Ok(v),
    }
}

/// Applies queued writes in batches until every sender is gone.
fn write_loop(db: Database, entries: Keyspace, rx: mpsc::Receiver<Op>, sync: SyncPolicy) {
    const MAX_BATCH: usize = 50_000;
    while let Ok(first) = rx.recv() {
        let mut batch = db.batch();
        let mut waiters = Vec::new();
        let mut op = Some(first);
        let mut n = 0;
        while let Some(o) = op.take() {
            match o {
                Op::Put(k, v) => batch.insert(&entries, k, v),
                Op::Remove(k) => batch.remove(&entries, k),
                Op::Commit(w) => waiters.push(w),
            }
            n += 1;
            if n < MAX_BATCH {
                op = rx.try_recv().ok();
            }
        }
        let mode = if waiters.is_empty() || sync == SyncPolicy::Os {
            PersistMode::Buffer
        } else {
            PersistMode::SyncData
        };
        let result = batch
            .durability(Some(mode))
            .commit()
            // One error for every waiter: shared, each keeps it as its source.
            .map_err(Arc::new);
        if let Err(e) = &result {
            tracing::error!("embedded broker storage: commit failed: {e}");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn put_opt(buf: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => {
            buf.push(1);
            put_str(buf, s);
        }
        None => buf.push(0),
    }
}

/// Encodes an entry's value: attempt, then the message's fields.
pub(crate) fn encode(attempt: u32, m: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(m.data.len() + m.topic.len() + 32);
    buf.extend_from_slice(&attempt.to_le_bytes());
    put_str(&mut buf, &m.topic);
    put_opt(&mut buf, &m.content_type);
    put_opt(&mut buf, &m.reply_to);
    buf.extend_from_slice(&(m.metadata.len() as u32).to_le_bytes());
    for (k, v) in &m.metadata {
        put_str(&mut buf, k);
        put_str(&mut buf, v);
    }
    put_bytes(&mut buf, &m.data);
    buf
}

/// Decodes what [`encode`] wrote; `None` if it is corrupt.
pub(crate) fn decode(b: &[u8]) -> Option<(u32, Message)> {
    let mut r = Reader(b);
    let attempt = r.u32()?;
    let topic = r.string()?;
    let content_type = r.opt()?;
    let reply_to = r.opt()?;
    let n = r.u32()? as usize;
    let mut metadata = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        metadata.push((r.string()?, r.string()?));
    }
    let data = Bytes::copy_from_slice(r.bytes()?);
    if !r.0.is_empty() {
        return None;
    }
    Some((
        attempt,
        Message {
            topic,
            content_type,
            reply_to,
            data,
            metadata,
        },
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.take(1)?[0] {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_refuses_corruption() {
        let m = Message {
            topic: "orders.eu".into(),
            content_type: Some("text/plain".into()),
            reply_to: None,
            data: Bytes::from_static(b"payload\0with nul"),
            metadata: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        };
        let bytes = encode(3, &m);
        assert_eq!(decode(&bytes), Some((3, m.clone())));
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    fn message() -> Message {
        let mut m = Message::new("jobs.a", "payload");
        m.content_type = Some("text/plain".into());
        m.set_meta("k", "v");
        m
    }

    /// Opens `dir` with fjall alone, as another build of Courier would.
    fn raw_meta(dir: &Path) -> (Database, Keyspace) {
        let db = Database::builder(dir).open().unwrap();
        let meta = db
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .unwrap();
        (db, meta)
    }

    /// The format version record as stored, undecoded.
    fn recorded_format(dir: &Path) -> Option<Vec<u8>> {
        let (_db, meta) = raw_meta(dir);
        meta.get(FORMAT_KEY).unwrap().map(|v| v.to_vec())
    }

    /// Replaces the format version record (`None` deletes it).
    fn set_format(dir: &Path, value: Option<&[u8]>) {
        let (db, meta) = raw_meta(dir);
        match value {
            Some(v) => meta.insert(FORMAT_KEY, v).unwrap(),
            None => meta.remove(FORMAT_KEY).unwrap(),
        }
        db.persist(PersistMode::SyncAll).unwrap();
    }

    fn open_err(dir: &Path) -> String {
        match Store::open(dir, SyncPolicy::Always) {
            Ok(_) => panic!("`{}` must be refused", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_store_reopens_with_its_messages_and_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let (q, seq) = {
            let (store, recovered) = Store::open(dir.path(), SyncPolicy::Always).unwrap();
            assert!(recovered.is_empty());
            let q = store.add_queue("workers", "jobs.*").unwrap();
            let seq = store.reserve_seqs(1);
            store
                .put_all(vec![(entry_key(q, seq), encode(2, &message()))])
                .await
                .unwrap();
            (q, seq)
        };
        assert_eq!(
            recorded_format(dir.path()),
            Some(FORMAT_VERSION.to_le_bytes().to_vec())
        );
        let (_store, recovered) = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(recovered.len(), 1);
        let r = &recovered[0];
        assert_eq!(
            (r.id, r.group.as_str(), r.pattern.as_str()),
            (q, "workers", "jobs.*")
        );
        assert_eq!(r.entries, [(seq, 2, message())]);
    }

    #[test]
    fn the_io_error_of_a_directory_that_cannot_be_made_is_the_source() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let Err(e) = Store::open(&file.join("store"), SyncPolicy::Always) else {
            panic!("a store opened under a file");
        };
        assert_eq!(e.kind(), courier_broker::ErrorKind::Other);
        assert_eq!(e.backend(), Some("embedded"));
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .unwrap_or_else(|| panic!("no io error as the source of: {e}"));
        assert!(e.to_string().ends_with(&io.to_string()), "{e}");
    }

    #[test]
    fn a_store_of_a_newer_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), SyncPolicy::Always).unwrap());
        let newer = (FORMAT_VERSION + 1).to_le_bytes();
        set_format(dir.path(), Some(&newer));
        let err = open_err(dir.path());
        for part in [
            "written by a newer Courier".to_string(),
            format!("version is {}", FORMAT_VERSION + 1),
            format!("supports version {FORMAT_VERSION}"),
            dir.path().display().to_string(),
        ] {
            assert!(err.contains(&part), "`{part}` missing from: {err}");
        }
        // Refused, not overwritten.
        assert_eq!(recorded_format(dir.path()), Some(newer.to_vec()));
    }

    #[test]
    fn an_unreadable_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), SyncPolicy::Always).unwrap());
        for (value, reason) in [
            (&b"banana"[..], "expected 4 bytes, found 6"),
            (&b""[..], "expected 4 bytes, found 0"),
            (&[1, 0, 0][..], "expected 4 bytes, found 3"),
            (&0u32.to_le_bytes()[..], "version 0 does not exist"),
        ] {
            set_format(dir.path(), Some(value));
            let err = open_err(dir.path());
            assert!(
                err.contains("unreadable store format version") && err.contains(reason),
                "{value:?}: {err}"
            );
            assert!(err.contains(&dir.path().display().to_string()), "{err}");
            assert_eq!(recorded_format(dir.path()).as_deref(), Some(value));
        }
    }

    #[test]
    fn a_store_without_a_format_version_is_version_1_and_gets_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        // What a build from before the version record wrote: `queues` and
        // `entries`, no `meta`.
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let queues = db
                .keyspace("queues", KeyspaceCreateOptions::default)
                .unwrap();
            let entries = db
                .keyspace("entries", KeyspaceCreateOptions::default)
                .unwrap();
            let mut v = Vec::new();
            put_str(&mut v, "workers");
            put_str(&mut v, "jobs.*");
            queues.insert(7u64.to_be_bytes(), v).unwrap();
            entries
                .insert(entry_key(7, 3), encode(1, &message()))
                .unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
            assert!(!db.keyspace_exists(META_KEYSPACE));
        }
        let check = |dir: &Path| {
            let (store, recovered) = Store::open(dir, SyncPolicy::Always).unwrap();
            drop(store);
            assert_eq!(recovered.len(), 1);
            assert_eq!(recovered[0].id, 7);
            assert_eq!(recovered[0].entries, [(3, 1, message())]);
            assert_eq!(recorded_format(dir), Some(1u32.to_le_bytes().to_vec()));
        };
        check(dir.path());
        // Likewise with `meta` present but the record gone.
        set_format(dir.path(), None);
        assert_eq!(recorded_format(dir.path()), None);
        check(dir.path());
    }
}
