//! The Python and JavaScript example guests (`guests/python`, `guests/js`)
//! through the same cases as the Rust guests they mirror, on the embedded
//! broker: echo through `uppercase` (and its `OUT` setting), a send outside
//! the grant refused,
//! `abandon` then dead letter, and a raised exception treated like a trap
//! (redelivered, the instance replaced). Each case also runs the Rust guest,
//! so the languages are held to one behaviour.
//!
//! The guests are built on first use by `scripts/guests-{python,js}.sh`; a
//! language whose toolchain is missing makes its tests ignored with the
//! reason (failed when `CI=true`; `scripts/setup.sh --guests` installs them).

use std::process::ExitCode;

use courier_broker::message::{ATTEMPTS_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY};
use courier_broker::{Backend, Message};
use courier_test_support::{Language, Need, Trials};

#[path = "world/harness.rs"]
#[allow(dead_code, unused_imports)]
mod harness;

use harness::{Harness, next, nothing};

/// Where a case's guests come from.
#[derive(Clone, Copy)]
enum Lang {
    Rust,
    Other(Language),
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Other(l) => l.dir(),
        }
    }

    /// The component of example guest `name` in this language.
    fn guest(self, name: &str) -> String {
        match self {
            Lang::Rust => courier_test_support::guests::fill(&format!("{{{name}}}")),
            Lang::Other(l) => l.guest(name),
        }
    }

    fn needs(self) -> Vec<Need> {
        match self {
            Lang::Rust => vec![],
            Lang::Other(l) => vec![Need::Toolchain(l)],
        }
    }
}

/// `uppercase` keeps content type and metadata, uses `reply-to`, leaks no
/// delivery ids, and its messages are acknowledged after a normal return.
async fn uppercase_round_trip(lang: Lang) {
    let h = Harness::start(&format!(
        r#"
        [guests.uppercase]
        component = "{}"
        subscribe = ["in"]
        allow-publish = ["out", "replies.>"]
        "#,
        lang.guest("uppercase")
    ))
    .await;
    let mut out = h.watch("out").await;
    let mut replies = h.watch("replies.>").await;
    let mut m = Message::new("in", "hello wörld");
    m.content_type = Some("text/plain".into());
    m.metadata = vec![("trace".into(), "abc".into())];
    h.broker().publish(vec![m.clone()]).await.unwrap();
    let got = next(&mut out).await;
    assert_eq!(got.data, "HELLO WÖRLD");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.meta("trace"), Some("abc"));
    assert_eq!(
        got.meta("courier-delivery-id"),
        None,
        "delivery ids must not leak"
    );

    m.reply_to = Some("replies.1".into());
    h.broker().publish(vec![m]).await.unwrap();
    let got = next(&mut replies).await;
    assert_eq!(got.topic, "replies.1");
    assert_eq!(got.data, "HELLO WÖRLD");
    nothing(&mut out).await;
    h.wait_idle().await;
    let stats = h.runtime.guest("uppercase").unwrap().stats();
    assert_eq!(
        (stats.delivered, stats.accepted),
        (2, 2),
        "auto-ack after ok"
    );
}

/// `OUT` in the guest's `env` names the channel `uppercase` writes to.
async fn output_channel_from_the_environment(lang: Lang) {
    let h = Harness::start(&format!(
        r#"
        [guests.uppercase]
        component = "{}"
        subscribe = ["in"]
        allow-publish = ["shout"]
        env = {{ OUT = "shout" }}
        "#,
        lang.guest("uppercase")
    ))
    .await;
    let mut shout = h.watch("shout").await;
    h.publish("in", "quiet").await;
    assert_eq!(next(&mut shout).await.data, "QUIET");
}

/// A `reply-to` outside `allow-publish`: the send is refused with
/// `unauthorized`, which the guest returns; nothing reaches the channel and
/// the message is dead-lettered with that error.
async fn send_outside_the_grant_is_refused(lang: Lang) {
    let h = Harness::start(&format!(
        r#"
        [guests.uppercase]
        component = "{}"
        subscribe = ["in"]
        allow-publish = ["out"]
        max-attempts = 1
        dead-letter = "dlq"
        "#,
        lang.guest("uppercase")
    ))
    .await;
    let mut out = h.watch("out").await;
    let mut secret = h.watch("secret").await;
    let mut dlq = h.watch("dlq").await;
    let mut m = Message::new("in", "psst");
    m.reply_to = Some("secret".into());
    h.broker().publish(vec![m]).await.unwrap();
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "psst");
    assert_eq!(
        letter.meta(LAST_ERROR_KEY),
        Some("handler returned error: unauthorized")
    );
    // The guest goes on working inside its grant.
    h.publish("in", "fine").await;
    assert_eq!(next(&mut out).await.data, "FINE");
    nothing(&mut secret).await;
}

/// `flaky`: a returned error is redelivered up to `max-attempts`, then
/// dead-lettered with the guest's text; `abandon` dead-letters one message;
/// completed messages are accepted.
async fn abandon_then_dead_letter(lang: Lang) {
    let h = Harness::start(&format!(
        r#"
        [guests.flaky]
        component = "{}"
        subscribe = ["in"]
        allow-publish = ["out"]
        max-attempts = 3
        backoff-ms = 10
        batch-size = 1
        dead-letter = "dlq.flaky"
        "#,
        lang.guest("flaky")
    ))
    .await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq.flaky").await;
    let mut m = Message::new("in", "fail: bad input");
    m.metadata = vec![("k".into(), "v".into())];
    h.broker().publish(vec![m]).await.unwrap();
    h.publish("in", "fine").await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "fail: bad input");
    assert_eq!(letter.meta(ORIGINAL_TOPIC_KEY), Some("in"));
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("3"));
    assert_eq!(letter.meta("k"), Some("v"));
    let error = letter.meta(LAST_ERROR_KEY).unwrap();
    assert!(
        error.contains("flaky: failed on fail: bad input"),
        "{error}"
    );
    assert_eq!(next(&mut out).await.data, "fine");
    h.wait_idle().await;
    let s = h.runtime.guest("flaky").unwrap().stats();
    assert_eq!(
        (s.redelivered, s.dead_lettered, s.traps),
        (2, 1, 0),
        "{s:?}"
    );

    h.publish("in", "abandon me").await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "abandon me");
    let error = letter.meta(LAST_ERROR_KEY).unwrap();
    assert!(error.contains("abandoned"), "{error}");
    h.wait_idle().await;
    let s = h.runtime.guest("flaky").unwrap().stats();
    assert_eq!((s.accepted, s.dead_lettered), (1, 2), "{s:?}");
}

/// An exception that is not a messaging error (a Rust panic) traps: the
/// message is redelivered, each attempt on a fresh instance, then
/// dead-lettered; the next message is handled by a fresh instance.
async fn an_exception_is_a_trap(lang: Lang) {
    let h = Harness::start(&format!(
        r#"
        [guests.flaky]
        component = "{}"
        subscribe = ["in"]
        allow-publish = ["out"]
        max-attempts = 2
        backoff-ms = 10
        batch-size = 1
        dead-letter = "dlq"
        "#,
        lang.guest("flaky")
    ))
    .await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq").await;
    h.publish("in", "trap now").await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "trap now");
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("2"));
    let error = letter.meta(LAST_ERROR_KEY).unwrap();
    assert!(error.contains("guest trapped"), "{error}");
    h.publish("in", "after").await;
    assert_eq!(next(&mut out).await.data, "after");
    h.wait_idle().await;
    let s = h.runtime.guest("flaky").unwrap().stats();
    assert_eq!(
        (s.traps, s.redelivered, s.dead_lettered, s.accepted),
        (2, 1, 1, 1),
        "{s:?}"
    );
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    let langs = [
        Lang::Rust,
        Lang::Other(Language::Python),
        Lang::Other(Language::JavaScript),
    ];
    for lang in langs {
        let needs = lang.needs();
        let name = |case: &str| format!("{}::{case}", lang.name());
        trials.tokio(name("uppercase_round_trip"), &needs, move || {
            uppercase_round_trip(lang)
        });
        trials.tokio(
            name("send_outside_the_grant_is_refused"),
            &needs,
            move || send_outside_the_grant_is_refused(lang),
        );
        trials.tokio(
            name("output_channel_from_the_environment"),
            &needs,
            move || output_channel_from_the_environment(lang),
        );
        trials.tokio(name("abandon_then_dead_letter"), &needs, move || {
            abandon_then_dead_letter(lang)
        });
        trials.tokio(name("an_exception_is_a_trap"), &needs, move || {
            an_exception_is_a_trap(lang)
        });
    }
    trials.run()
}
