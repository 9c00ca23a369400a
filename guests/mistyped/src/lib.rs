//! `mistyped`: a component that exports `wasi:messaging/guest@0.2.0-draft`
//! with a `handler` of the wrong type (`list<string>` instead of
//! `list<message>`), as a guest built against another WIT would. It has the
//! right names, so only instantiating it shows that Courier cannot call it;
//! tests use it to check that such a guest is refused before it takes any
//! message.

wit_bindgen::generate!({
    inline: r#"
        package wasi:messaging@0.2.0-draft;

        interface guest {
            handler: func(ms: list<string>) -> result<_, string>;
        }

        world mistyped {
            export guest;
        }
    "#,
    world: "mistyped",
});

struct Mistyped;

impl exports::wasi::messaging::guest::Guest for Mistyped {
    fn handler(ms: Vec<String>) -> Result<(), String> {
        if ms.is_empty() {
            Err("no messages".into())
        } else {
            Ok(())
        }
    }
}

export!(Mistyped);
