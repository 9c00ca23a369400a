//! The guest components built by the `test-programs` crate, by placeholder.

pub use test_programs::{FLAKY, MISTYPED, PROBE, ROUTER, SCRIPTED, UPPERCASE};

/// `toml` with each `{NAME}` of a built guest (`{probe}`, `{uppercase}`,
/// `{flaky}`, `{scripted}`, `{router}`, …) replaced by its component's path.
pub fn fill(toml: &str) -> String {
    test_programs::ALL
        .iter()
        .fold(toml.to_string(), |toml, (name, path)| {
            toml.replace(&format!("{{{name}}}"), path)
        })
}
