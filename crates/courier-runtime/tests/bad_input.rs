//! Malformed components and truncated files: loading one gives an error that
//! names the file and says what is wrong, never a panic.

use std::path::Path;

use courier_runtime::engine::{load_component, new_engine};

/// The error of loading `path`, with its whole chain.
fn load_error(path: &Path) -> String {
    let engine = new_engine().unwrap();
    match load_component(&engine, path) {
        Ok(_) => panic!("`{}` loaded", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn guest() -> Vec<u8> {
    std::fs::read(test_programs::UPPERCASE).unwrap()
}

#[test]
fn truncated_components_say_so_and_name_the_file() {
    let good = guest();
    let n = good.len();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 7] = [
        ("empty", &[], "an empty file"),
        ("magic-only", &good[..4], "truncated: 4 bytes"),
        ("header-only", &good[..8], "only the 8-byte header"),
        ("first-section", &good[..12], "truncated: the file ends"),
        ("half", &good[..n / 2], "truncated: the file ends"),
        (
            "last-byte-missing",
            &good[..n - 1],
            "truncated: the file ends",
        ),
        (
            "ten-bytes-missing",
            &good[..n - 10],
            "truncated: the file ends",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let e = load_error(&path);
        assert!(e.contains(&path.display().to_string()), "{name}: {e}");
        assert!(e.contains(expected), "{name}: {e}");
    }
}

#[test]
fn corrupt_components_say_so_and_name_the_file() {
    let good = guest();
    let dir = tempfile::tempdir().unwrap();
    // Bytes whose change breaks the structure: the version, the first
    // section id, a type definition, a name.
    let cases = [
        (4, "unknown binary version"),
        (8, "malformed section id"),
        (9, "invalid leading byte"),
        (20, "malformed UTF-8"),
    ];
    for (at, expected) in cases {
        let mut bytes = good.clone();
        bytes[at] ^= 0xff;
        let path = dir.path().join(format!("flipped-{at}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let e = load_error(&path);
        assert!(e.contains(&path.display().to_string()), "byte {at}: {e}");
        assert!(
            e.contains("not a valid component (corrupt"),
            "byte {at}: {e}"
        );
        assert!(e.contains(expected), "byte {at}: {e}");
    }
}

#[test]
fn flipped_bytes_anywhere_never_panic() {
    let good = guest();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.wasm");
    let engine = new_engine().unwrap();
    // A flip may land in a custom section or in data and leave a valid
    // component; any error must name the file and say what is wrong.
    // Twelve places spread over the file (a flip that leaves a valid
    // component costs a full compile).
    let step = (good.len() / 12).max(1);
    let mut refused = 0;
    for at in (0..good.len()).step_by(step) {
        let mut bytes = good.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = load_component(&engine, &path) {
            refused += 1;
            let e = format!("{e:#}");
            assert!(e.contains(&path.display().to_string()), "byte {at}: {e}");
            assert!(
                [
                    "not a WebAssembly file",
                    "not a valid component",
                    "does not export"
                ]
                .iter()
                .any(|what| e.contains(what)),
                "byte {at}: {e}"
            );
        }
    }
    assert!(refused > 0, "no flip was refused");
}

#[test]
fn what_is_not_a_file_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("cannot read component"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    let missing = dir.path().join("missing.wasm");
    let e = load_error(&missing);
    assert!(e.contains("cannot read component"), "{e}");
    assert!(e.contains("missing.wasm"), "{e}");
}
