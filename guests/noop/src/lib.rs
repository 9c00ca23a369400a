//! `noop`: accepts every batch and does nothing, for benchmarks.

use courier_guest::{Error, Guest, Message, export};

struct Noop;

impl Guest for Noop {
    fn handler(ms: Vec<Message>) -> Result<(), Error> {
        std::hint::black_box(ms);
        Ok(())
    }
}

export!(Noop);
