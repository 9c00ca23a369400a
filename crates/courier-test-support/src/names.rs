//! Names unique to one test, so that runs sharing a broker do not see each
//! other's messages.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A channel prefix `PREFIX.tPIDxN`: `PREFIX` stays the first token (a
/// JetStream stream may capture `PREFIX.>`), the process id and a random
/// number keep runs apart, a counter keeps the tests of one run apart.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}.t{}x{:08x}", std::process::id(), random_u32() ^ n)
}

/// A random number, from the standard library's randomly seeded hasher.
pub fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}
