//! Builds the guests workspace (`guests/`) for `wasm32-wasip2` and writes the
//! paths of the resulting components into `$OUT_DIR/programs.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example guests, by constant name and crate name.
const GUESTS: &[(&str, &str)] = &[
    ("UPPERCASE", "uppercase"),
    ("ROUTER", "router"),
    ("FLAKY", "flaky"),
    ("PROBE", "probe"),
    ("NOOP", "noop"),
    ("SCRIPTED", "scripted"),
    ("MISTYPED", "mistyped"),
    ("TRANSFORM", "transform"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let guests = root.join("guests");
    let wit = root.join("wit");
    for dir in [&guests, &wit] {
        rerun_for(dir);
    }
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", &target_dir);
    // The outer build's settings are for the host, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "__CARGO_FIX_PLZ",
        "CLIPPY_ARGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    if !status.success() {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
            .unwrap_or(true);
        if !installed {
            panic!(
                "building the guests needs the wasm32-wasip2 target: run `rustup target add wasm32-wasip2`"
            );
        }
        panic!("building the guests under {} failed", guests.display());
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    let mut all = Vec::new();
    for (constant, name) in GUESTS {
        let path = out_dir.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        code.push_str(&format!(
            "/// The `{name}` guest component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
        all.push(format!("({name:?}, {constant})"));
    }
    code.push_str(&format!(
        "/// Every guest, by name.\npub const ALL: &[(&str, &str)] = &[{}];\n",
        all.join(", ")
    ));
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("programs.rs"),
        code,
    )
    .unwrap();
}

fn rerun_for(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        if path.is_dir() {
            rerun_for(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
