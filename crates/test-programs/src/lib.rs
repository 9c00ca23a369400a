//! Paths of the guest components under `guests/`, built for `wasm32-wasip2`
//! by this crate's build script, for integration tests (in the spirit of
//! wasmtime's `test-programs`).

include!(concat!(env!("OUT_DIR"), "/programs.rs"));
