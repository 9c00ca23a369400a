//! The backend conformance suite: one set of tests, written once, run against
//! every backend through Courier with real guest components.
//!
//! Each backend module calls [`conformance!`] with a function that returns
//! the `[clients.default]` TOML of that backend, or `None` when its broker is
//! not available (which is an error when `CI=true`). The tests assert what the
//! backend's [`Features`](courier_broker::Features) promise, no more, no less.

mod suite;

use suite::conformance;

mod embedded {
    fn client() -> Option<String> {
        Some("backend = \"embedded\"".into())
    }
    super::conformance!(client);
}
