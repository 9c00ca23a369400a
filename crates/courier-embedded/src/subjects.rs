//! The subject index: which entries (the broker's queues) a published topic
//! goes to, found without looking at every one of them.
//!
//! Patterns are kept in a token trie, as NATS's sublist keeps its
//! subscriptions: a node per token, with its literal children by name, one
//! child for `*`, the entries whose pattern ends there and the entries whose
//! pattern goes on with `>` there. Matching a topic walks its tokens, so its
//! cost follows the depth of the topic and the number of wildcard branches it
//! meets, not the number of patterns.
//!
//! In front of the trie is a cache from topic to result, as in NATS: a
//! publisher usually sends to a few topics again and again. It holds at most
//! [`CACHE_MAX`] topics and [`CACHE_ENTRIES_MAX`] entries over all their
//! results (when either would be passed, it keeps half, whichever topics the
//! map yields first), and is cleared whenever an entry is added or removed,
//! so a result never outlives a change of the index.
//!
//! An entry is known by an id, unique among the entries, and the entries a
//! topic matches come in the order of their ids. The semantics are those of
//! [`Pattern::matches`] for every topic, including ones that could not be
//! published (with empty tokens).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use courier_broker::Pattern;

/// Most topics whose results the cache of a [`Subjects`] keeps.
pub const CACHE_MAX: usize = 4096;

/// Most entries the cache of a [`Subjects`] keeps over all its results
/// (8 MiB of results when an entry is a pointer): a topic reaching many
/// entries takes as much room as many topics reaching few.
pub const CACHE_ENTRIES_MAX: usize = 1 << 20;

/// Entries of type `T` indexed by pattern, each known by an id: see the
/// module documentation.
pub struct Subjects<T> {
    root: Node<T>,
    cache: Cache<T>,
    len: usize,
}

/// Results of lookups by topic, bounded in topics and in entries.
struct Cache<T> {
    results: HashMap<Box<str>, Arc<[T]>>,
    /// Entries over all `results`.
    entries: usize,
    max_topics: usize,
    max_entries: usize,
}

impl<T> Cache<T> {
    /// Keeps `found` as the result of `topic`, first dropping half of what
    /// is kept if it would not fit. A result of more than half the entries
    /// the cache may hold is not kept: walking the trie for it again costs
    /// little beside handing something to each of its entries.
    fn keep(&mut self, topic: &str, found: &Arc<[T]>) {
        if self.max_topics == 0 || found.len() > self.max_entries / 2 {
            return;
        }
        if self.results.len() >= self.max_topics || self.entries + found.len() > self.max_entries {
            let (max_topics, max_entries) = (self.max_topics / 2, self.max_entries / 2);
            let (mut topics, mut entries) = (0, 0);
            self.results.retain(|_, kept| {
                let keep = topics < max_topics && entries + kept.len() <= max_entries;
                if keep {
                    topics += 1;
                    entries += kept.len();
                }
                keep
            });
            self.entries = entries;
        }
        self.entries += found.len();
        self.results.insert(topic.into(), found.clone());
    }

    fn clear(&mut self) {
        if !self.results.is_empty() {
            self.results.clear();
            self.entries = 0;
        }
    }
}

/// A node of the trie: what follows one token of a pattern. Children are
/// boxed, so that a map of them holds pointers, not nodes.
struct Node<T> {
    literals: HashMap<Box<str>, Box<Node<T>>>,
    /// The child for `*`.
    one: Option<Box<Node<T>>>,
    /// The entries whose pattern ends at this node.
    here: Set<T>,
    /// The entries whose pattern has `>` after this node.
    rest: Set<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literals: HashMap::new(),
            one: None,
            here: Set::default(),
            rest: Set::default(),
        }
    }
}

/// Most entries a [`Set`] keeps in a vector.
const SMALL_MAX: usize = 32;

/// Entries by id, in id order: a sorted vector while there are few (most
/// patterns have one entry: 16 bytes in a vector, about 200 in a B-tree's
/// first node), a B-tree past [`SMALL_MAX`], so that adding or removing one
/// of many entries under the same pattern stays cheap.
enum Set<T> {
    Small(Vec<(u64, T)>),
    Large(BTreeMap<u64, T>),
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set::Small(Vec::new())
    }
}

impl<T> Set<T> {
    fn insert(&mut self, id: u64, value: T) -> Option<T> {
        let small = match self {
            Set::Large(map) => return map.insert(id, value),
            Set::Small(small) => small,
        };
        match small.binary_search_by_key(&id, |(id, _)| *id) {
            Ok(at) => Some(std::mem::replace(&mut small[at].1, value)),
            Err(at) if small.len() < SMALL_MAX => {
                small.reserve_exact(1);
                small.insert(at, (id, value));
                None
            }
            Err(_) => {
                let mut map: BTreeMap<u64, T> = std::mem::take(small).into_iter().collect();
                map.insert(id, value);
                *self = Set::Large(map);
                None
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        match self {
            Set::Small(small) => {
                let at = small.binary_search_by_key(&id, |(id, _)| *id).ok()?;
                Some(small.remove(at).1)
            }
            Set::Large(map) => {
                let removed = map.remove(&id);
                if map.is_empty() {
                    *self = Set::default();
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Set::Small(small) => small.is_empty(),
            Set::Large(map) => map.is_empty(),
        }
    }

    /// Adds every entry to `found`.
    fn collect_into<'s>(&'s self, found: &mut Vec<(u64, &'s T)>) {
        match self {
            Set::Small(small) => found.extend(small.iter().map(|(id, v)| (*id, v))),
            Set::Large(map) => found.extend(map.iter().map(|(id, v)| (*id, v))),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.one.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }
}

impl<T> Default for Subjects<T> {
    fn default() -> Self {
        Self::with_cache_limits(CACHE_MAX, CACHE_ENTRIES_MAX)
    }
}

impl<T> Subjects<T> {
    /// An empty index whose cache keeps at most `topics` topics and
    /// `entries` entries over all their results (no cache with 0 topics).
    pub fn with_cache_limits(topics: usize, entries: usize) -> Self {
        Self {
            root: Node::default(),
            cache: Cache {
                results: HashMap::new(),
                entries: 0,
                max_topics: topics,
                max_entries: entries,
            },
            len: 0,
        }
    }
}

impl<T: Clone> Subjects<T> {
    /// An empty index, its cache bounded by [`CACHE_MAX`] and
    /// [`CACHE_ENTRIES_MAX`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern` as entry `id`. The id is the caller's to
    /// keep unique: an entry already there with the same pattern and id is
    /// replaced (and returned), while the same id under two patterns would
    /// be two entries.
    pub fn insert(&mut self, pattern: &Pattern, id: u64, value: T) -> Option<T> {
        self.invalidate();
        let mut node = &mut self.root;
        let mut tokens = pattern.as_str().split('.').peekable();
        while let Some(token) = tokens.next() {
            if token == ">" && tokens.peek().is_none() {
                let replaced = node.rest.insert(id, value);
                return self.count(replaced);
            }
            node = if token == "*" {
                node.one.get_or_insert_with(Box::default)
            } else {
                node.literals.entry(token.into()).or_default()
            };
        }
        let replaced = node.here.insert(id, value);
        self.count(replaced)
    }

    /// Removes entry `id` of `pattern`, returning it, or `None` when the
    /// index has no such entry.
    pub fn remove(&mut self, pattern: &Pattern, id: u64) -> Option<T> {
        let mut tokens = pattern.as_str().split('.').peekable();
        let removed = remove_in(&mut self.root, &mut tokens, id);
        if removed.is_some() {
            self.len -= 1;
            self.invalidate();
        }
        removed
    }

    /// The entries whose pattern matches `topic`, in the order of their
    /// ids: from the cache when it has the topic, otherwise from the trie,
    /// then kept in the cache.
    pub fn lookup(&mut self, topic: &str) -> Arc<[T]> {
        if let Some(hit) = self.cache.results.get(topic) {
            return hit.clone();
        }
        let found: Arc<[T]> = self.find(topic).into();
        self.cache.keep(topic, &found);
        found
    }

    /// The entries whose pattern matches `topic`, in the order of their
    /// ids, from the trie alone (neither reading nor filling the cache).
    pub fn find(&self, topic: &str) -> Vec<T> {
        let mut found = Vec::new();
        collect(&self.root, topic.split('.'), &mut found);
        found.sort_unstable_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// How many topics the cache holds now.
    pub fn cached(&self) -> usize {
        self.cache.results.len()
    }

    fn invalidate(&mut self) {
        self.cache.clear();
    }

    fn count(&mut self, replaced: Option<T>) -> Option<T> {
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }
}

/// Removes entry `id` at the end of `tokens` below `node`, and the nodes
/// that this leaves empty.
fn remove_in<'a, T>(
    node: &mut Node<T>,
    tokens: &mut std::iter::Peekable<std::str::Split<'a, char>>,
    id: u64,
) -> Option<T> {
    let Some(token) = tokens.next() else {
        return node.here.remove(id);
    };
    if token == ">" && tokens.peek().is_none() {
        return node.rest.remove(id);
    }
    if token == "*" {
        let child = node.one.as_deref_mut()?;
        let removed = remove_in(child, tokens, id);
        if child.is_empty() {
            node.one = None;
        }
        removed
    } else {
        let child = node.literals.get_mut(token)?;
        let removed = remove_in(child, tokens, id);
        if child.is_empty() {
            node.literals.remove(token);
        }
        removed
    }
}

/// Adds to `found` the entries below `node` that match the rest of a topic,
/// `parts`. An empty part matches nothing, as in [`Pattern::matches`].
fn collect<'n, T>(
    node: &'n Node<T>,
    mut parts: std::str::Split<'_, char>,
    found: &mut Vec<(u64, &'n T)>,
) {
    let Some(part) = parts.next() else {
        node.here.collect_into(found);
        return;
    };
    if part.is_empty() {
        return;
    }
    node.rest.collect_into(found);
    if let Some(child) = node.literals.get(part) {
        collect(child, parts.clone(), found);
    }
    if let Some(child) = &node.one {
        collect(child, parts, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    fn index(patterns: &[&str]) -> Subjects<u64> {
        let mut s = Subjects::new();
        for (id, pattern) in (0..).zip(patterns) {
            assert!(s.insert(&p(pattern), id, id).is_none());
        }
        s
    }

    fn ids(s: &mut Subjects<u64>, topic: &str) -> Vec<u64> {
        let cached = s.lookup(topic).to_vec();
        assert_eq!(cached, s.find(topic), "cache and trie differ on {topic}");
        cached
    }

    #[test]
    fn literal_patterns_match_exactly() {
        let mut s = index(&["a.b", "a", "a.b.c"]);
        assert_eq!(ids(&mut s, "a.b"), [0]);
        assert_eq!(ids(&mut s, "a"), [1]);
        assert_eq!(ids(&mut s, "a.b.c"), [2]);
        assert!(ids(&mut s, "a.c").is_empty());
        assert!(ids(&mut s, "b").is_empty());
        assert!(ids(&mut s, "a.b.c.d").is_empty());
    }

    #[test]
    fn star_is_one_token() {
        let mut s = index(&["a.*", "*.b", "*", "a.*.c"]);
        assert_eq!(ids(&mut s, "a.b"), [0, 1]);
        assert_eq!(ids(&mut s, "a.x"), [0]);
        assert_eq!(ids(&mut s, "x"), [2]);
        assert_eq!(ids(&mut s, "a.b.c"), [3]);
        assert!(ids(&mut s, "a.b.d").is_empty());
        assert_eq!(ids(&mut s, "a"), [2]);
    }

    #[test]
    fn greater_than_is_one_token_or_more() {
        let mut s = index(&[">", "a.>", "a.*.>", "a.b.>"]);
        assert_eq!(ids(&mut s, "a"), [0]);
        assert_eq!(ids(&mut s, "a.b"), [0, 1]);
        assert_eq!(ids(&mut s, "a.b.c"), [0, 1, 2, 3]);
        assert_eq!(ids(&mut s, "a.x.c.d"), [0, 1, 2]);
        assert_eq!(ids(&mut s, "b.c"), [0]);
    }

    #[test]
    fn overlapping_patterns_each_match_once_in_id_order() {
        let mut s = Subjects::new();
        // Inserted out of id order: results still come by id.
        for (id, pattern) in [
            (5, "orders.>"),
            (1, "orders.*.created"),
            (3, "orders.eu.created"),
            (2, "*.eu.*"),
            (4, ">"),
        ] {
            s.insert(&p(pattern), id, id);
        }
        assert_eq!(ids(&mut s, "orders.eu.created"), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&mut s, "orders.us.created"), [1, 4, 5]);
        assert_eq!(ids(&mut s, "audit.eu.x"), [2, 4]);
    }

    #[test]
    fn the_same_pattern_twice_holds_two_entries() {
        let mut s = index(&["a.*", "a.*", "a.>", "a.>"]);
        assert_eq!(s.len(), 4);
        assert_eq!(ids(&mut s, "a.b"), [0, 1, 2, 3]);
        assert_eq!(s.remove(&p("a.*"), 0), Some(0));
        assert_eq!(ids(&mut s, "a.b"), [1, 2, 3]);
        // Inserting an id again replaces its entry.
        assert_eq!(s.insert(&p("a.>"), 2, 20), Some(2));
        assert_eq!(s.len(), 3);
        assert_eq!(ids(&mut s, "a.b"), [1, 20, 3]);
    }

    #[test]
    fn many_entries_under_one_pattern_stay_in_id_order() {
        let mut s = Subjects::new();
        // Ids out of order, past the size where a set becomes a B-tree.
        let n = 3 * SMALL_MAX as u64;
        let ids_in: Vec<u64> = (0..n).map(|i| (i * 37) % n).collect();
        for &id in &ids_in {
            assert_eq!(s.insert(&p("a.>"), id, id), None);
            assert_eq!(s.insert(&p("a.b"), n + id, n + id), None);
        }
        assert_eq!(s.insert(&p("a.>"), 5, 5), Some(5), "replaced");
        assert_eq!(s.len(), 2 * n as usize);
        let all: Vec<u64> = (0..2 * n).collect();
        assert_eq!(ids(&mut s, "a.b"), all);
        for id in (0..n).filter(|id| id % 2 == 1) {
            assert_eq!(s.remove(&p("a.>"), id), Some(id));
            assert_eq!(s.remove(&p("a.b"), n + id), Some(n + id));
        }
        let even: Vec<u64> = (0..2 * n).filter(|id| id % 2 == 0).collect();
        assert_eq!(ids(&mut s, "a.b"), even);
        for id in (0..n).filter(|id| id % 2 == 0) {
            assert_eq!(s.remove(&p("a.>"), id), Some(id));
            assert_eq!(s.remove(&p("a.b"), n + id), Some(n + id));
        }
        assert!(s.is_empty() && s.root.is_empty());
    }

    #[test]
    fn remove_takes_out_one_entry_and_prunes_the_trie() {
        let mut s = index(&["a.b.c", "a.*.c", "a.>", "x"]);
        assert_eq!(s.remove(&p("a.b.c"), 1), None, "wrong id");
        assert_eq!(s.remove(&p("a.b"), 0), None, "wrong pattern");
        assert_eq!(s.remove(&p("a.*"), 1), None, "a prefix of a pattern");
        assert_eq!(s.remove(&p("a.b.c"), 0), Some(0));
        assert_eq!(s.remove(&p("a.b.c"), 0), None, "removed already");
        assert_eq!(ids(&mut s, "a.b.c"), [1, 2]);
        for (pattern, id) in [("a.*.c", 1), ("a.>", 2), ("x", 3)] {
            assert_eq!(s.remove(&p(pattern), id), Some(id));
        }
        assert!(s.is_empty());
        assert!(s.root.is_empty(), "every node is pruned");
        assert!(ids(&mut s, "a.b.c").is_empty());
    }

    #[test]
    fn the_cache_is_cleared_by_insert_and_remove() {
        let mut s = index(&["a.*"]);
        assert_eq!(ids(&mut s, "a.b"), [0]);
        assert_eq!(s.cached(), 1);
        s.insert(&p("a.b"), 1, 1);
        assert_eq!(s.cached(), 0);
        assert_eq!(ids(&mut s, "a.b"), [0, 1]);
        s.remove(&p("a.*"), 0);
        assert_eq!(ids(&mut s, "a.b"), [1]);
        // Removing nothing changes nothing, and keeps the cache.
        assert_eq!(s.cached(), 1);
        s.remove(&p("a.*"), 0);
        assert_eq!(s.cached(), 1);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut s = index(&["t.*"]);
        for i in 0..3 * CACHE_MAX {
            assert_eq!(s.lookup(&format!("t.{i}"))[..], [0]);
            assert!(s.cached() <= CACHE_MAX);
        }
        assert!(s.cached() >= CACHE_MAX / 2);
    }

    #[test]
    fn the_cache_bounds_the_entries_it_keeps() {
        let mut s = Subjects::with_cache_limits(100, 40);
        for id in 0..10 {
            s.insert(&p("t.>"), id, id);
        }
        for i in 0..50 {
            assert_eq!(s.lookup(&format!("t.{i}")).len(), 10);
            assert!(s.cache.entries <= 40 && s.cached() <= 4);
            assert_eq!(s.cache.entries, 10 * s.cached());
        }
        for id in 10..30 {
            s.insert(&p("u.>"), id, id);
        }
        // 20 entries: half the cache, kept.
        assert_eq!(s.lookup("u.x").len(), 20);
        assert_eq!((s.cached(), s.cache.entries), (1, 20));
        s.insert(&p("u.x"), 30, 30);
        // 21: not kept.
        assert_eq!(s.lookup("u.x").len(), 21);
        assert_eq!((s.cached(), s.cache.entries), (0, 0));
        assert_eq!(ids(&mut s, "u.x"), (10..=30).collect::<Vec<_>>());
        // No cache at all.
        let mut s = Subjects::with_cache_limits(0, 0);
        s.insert(&p("a"), 0, 0);
        assert_eq!(s.lookup("a")[..], [0]);
        assert_eq!(s.cached(), 0);
    }

    #[test]
    fn topics_with_empty_tokens_match_as_pattern_matches_says() {
        let patterns = [">", "a.>", "*", "a.*", "a.*.b", "*.>"];
        let mut s = index(&patterns);
        for topic in ["", ".", "a.", ".a", "a..b", "a.b.", "a..", "..a"] {
            let expected: Vec<u64> = (0..)
                .zip(patterns)
                .filter(|(_, pattern)| p(pattern).matches(topic))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(ids(&mut s, topic), expected, "{topic:?}");
        }
    }

    /// A pattern over a small alphabet, so that patterns overlap often.
    fn pattern() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            4 => prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string),
            2 => Just("*".to_string()),
        ];
        (prop::collection::vec(token, 1..=4), any::<bool>()).prop_map(|(mut tokens, rest)| {
            if rest {
                tokens.push(">".into());
            }
            tokens.join(".")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..=6)
            .prop_map(|t| t.join("."))
    }

    proptest! {
        #[test]
        fn matches_what_a_linear_scan_matches(
            patterns in prop::collection::vec(pattern(), 0..40),
            removed in prop::collection::vec(any::<bool>(), 40),
            topics in prop::collection::vec(topic(), 1..30),
        ) {
            let mut s = Subjects::new();
            let patterns: Vec<Pattern> = patterns.iter().map(|t| p(t)).collect();
            let mut live = Vec::new();
            for (id, pattern) in (0..).zip(&patterns) {
                s.insert(pattern, id, id);
                live.push((id, pattern));
            }
            // Look some topics up before removing, so the cache has
            // results that removal must invalidate.
            for topic in &topics {
                s.lookup(topic);
            }
            for (id, pattern) in (0..).zip(&patterns) {
                if removed[id as usize] {
                    prop_assert_eq!(s.remove(pattern, id), Some(id));
                    live.retain(|(i, _)| *i != id);
                }
            }
            prop_assert_eq!(s.len(), live.len());
            for topic in &topics {
                let expected: Vec<u64> = live
                    .iter()
                    .filter(|(_, pattern)| pattern.matches(topic))
                    .map(|(id, _)| *id)
                    .collect();
                prop_assert_eq!(&s.lookup(topic)[..], &expected[..], "{}", topic);
                prop_assert_eq!(s.find(topic), expected);
            }
            for (id, pattern) in live {
                prop_assert_eq!(s.remove(pattern, id), Some(id));
            }
            prop_assert!(s.root.is_empty());
        }
    }
}
