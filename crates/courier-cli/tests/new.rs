//! `courier new NAME --lang rust|python|js`: each template is written, built
//! with the first command of its README and run with the second, exactly as
//! written there (with the language's installed toolchain and this
//! `courier` first on `PATH`). A language whose toolchain is missing makes
//! its test ignored with the reason (failed when `CI=true`).

use std::path::Path;
use std::process::{Command, ExitCode, Output};

use courier_test_support::polyglot::root;
use courier_test_support::{Language, Need, Trials};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The commands of the README's `sh` block.
fn readme_commands(dir: &Path) -> Vec<String> {
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("a README");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in the README");
    block.lines().map(str::to_string).collect()
}

/// Runs `line` with `sh -c` in `dir`, `path_first` first on `PATH`.
fn sh(dir: &Path, line: &str, path_first: &[&Path]) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        path_first
            .iter()
            .map(|p| p.to_path_buf())
            .chain(std::env::split_paths(&path)),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line).current_dir(dir).env("PATH", path);
    // The outer cargo's settings are for the host build, not the guest's.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running `{line}`: {e}"))
}

/// `courier new demo-guest --lang LANG`, its README's build, then its run.
fn new_builds_and_runs(lang: &str, tool_dir: Option<&Path>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-guest");
    let mut args = vec!["new", "demo-guest", "--lang", lang, "--dir"];
    let dir_arg = dir.display().to_string();
    args.push(&dir_arg);
    let sdk = root().join("guests/sdk").display().to_string();
    if lang == "rust" {
        args.extend(["--sdk", sdk.as_str()]);
    }
    let out = Command::new(COURIER).args(&args).output().unwrap();
    assert!(out.status.success(), "courier new: {}", text(&out.stderr));
    if lang == "js" {
        // `npm install`'s result, as the repository's pinned SDK has it.
        std::os::unix::fs::symlink(
            root().join("guests/js/node_modules"),
            dir.join("node_modules"),
        )
        .unwrap();
    }
    let commands = readme_commands(&dir);
    assert_eq!(commands.len(), 2, "build, then run: {commands:?}");
    let courier_dir = Path::new(COURIER).parent().unwrap();
    let mut path_first = vec![courier_dir];
    path_first.extend(tool_dir);

    let build = sh(&dir, &commands[0], &path_first);
    assert!(
        build.status.success(),
        "`{}` failed:\n{}{}",
        commands[0],
        text(&build.stdout),
        text(&build.stderr)
    );
    let run = sh(&dir, &commands[1], &path_first);
    assert!(
        run.status.success(),
        "`{}` failed:\n{}",
        commands[1],
        text(&run.stderr)
    );
    assert_eq!(text(&run.stdout), "HELLO\n", "{}", text(&run.stderr));
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.test(
        "rust_template_builds_and_runs",
        &[Need::Tool("cargo")],
        || new_builds_and_runs("rust", None),
    );
    trials.test(
        "python_template_builds_and_runs",
        &[Need::Toolchain(Language::Python)],
        || new_builds_and_runs("python", Language::Python.tool_dir().as_deref()),
    );
    trials.test(
        "js_template_builds_and_runs",
        &[Need::Toolchain(Language::JavaScript)],
        || new_builds_and_runs("js", Language::JavaScript.tool_dir().as_deref()),
    );
    trials.test(
        "bad_names_and_existing_directories_are_refused",
        &[],
        || {
            let tmp = tempfile::tempdir().unwrap();
            for name in ["Bad", "9lives", "a/b", "x y", ""] {
                let out = Command::new(COURIER)
                    .args(["new", name, "--lang", "python"])
                    .current_dir(tmp.path())
                    .output()
                    .unwrap();
                assert!(!out.status.success(), "{name:?} was taken");
                assert!(
                    text(&out.stderr).contains("is not a usable project name"),
                    "{name:?}: {}",
                    text(&out.stderr)
                );
            }
            std::fs::create_dir(tmp.path().join("taken")).unwrap();
            std::fs::write(tmp.path().join("taken/file"), "x").unwrap();
            let out = Command::new(COURIER)
                .args(["new", "taken", "--lang", "js"])
                .current_dir(tmp.path())
                .output()
                .unwrap();
            assert!(
                text(&out.stderr).contains("already exists and is not empty"),
                "{}",
                text(&out.stderr)
            );
            assert_eq!(
                std::fs::read_to_string(tmp.path().join("taken/file")).unwrap(),
                "x"
            );
            let out = Command::new(COURIER)
                .args(["new", "nosdk", "--lang", "rust", "--sdk"])
                .arg(tmp.path())
                .current_dir(tmp.path())
                .output()
                .unwrap();
            assert!(
                text(&out.stderr).contains("is not Courier's Rust SDK"),
                "{}",
                text(&out.stderr)
            );
        },
    );
    trials.run()
}
