//! Waiting on a real condition, with a deadline: the condition is checked
//! until it holds or the deadline passes, at once and then after pauses
//! that grow from a few milliseconds to a tenth of a second.

use std::time::{Duration, Instant};

/// The first pause between two checks; each next one doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_millis(100);

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// Whether `condition` held within `timeout`.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = next_pause(pause);
    }
}

/// Waits until `condition` holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, condition),
        "{what}: not within {timeout:?}"
    );
}

/// [`eventually`] in a task: whether `condition` held within `timeout`.
pub async fn eventually_async(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = next_pause(pause);
    }
}

/// [`wait_until`] in a task: waits until `condition` holds; panics naming
/// `what` after `timeout`.
pub async fn wait_until_async(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        eventually_async(timeout, condition).await,
        "{what}: not within {timeout:?}"
    );
}
