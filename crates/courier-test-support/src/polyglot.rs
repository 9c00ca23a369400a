//! The Python and JavaScript example guests (`guests/python`, `guests/js`),
//! built by `scripts/guests-python.sh` and `scripts/guests-js.sh` with the
//! toolchains `scripts/setup.sh --guests` installs.
//!
//! A test that runs them says [`Need::Toolchain`](crate::Need::Toolchain):
//! without the toolchain it is reported ignored with the reason (failed when
//! `CI=true`). [`Language::guest`] builds the language's examples once per
//! test process (the scripts skip components newer than their sources) and
//! returns a component's path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A guest language with a toolchain outside Rust's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    JavaScript,
}

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

impl Language {
    /// Both languages.
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// `python` or `js`: the directory under `guests/` and `target/guests/`.
    pub fn dir(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    fn script(self) -> PathBuf {
        root()
            .join("scripts")
            .join(format!("guests-{}.sh", self.dir()))
    }

    /// The directory of the language's build tool (`componentize-py`,
    /// `componentize-js`), to put first on a build's `PATH`.
    pub fn tool_dir(self) -> Option<PathBuf> {
        match self {
            Language::Python => std::env::var_os("COMPONENTIZE_PY")
                .map(PathBuf::from)
                .or_else(|| {
                    Some(root().join("target/toolchains/python/bin/componentize-py"))
                        .filter(|p| p.is_file())
                })
                .or_else(|| crate::brokers::find_program("componentize-py"))
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            Language::JavaScript => {
                let bin = root().join("guests/js/node_modules/.bin");
                (crate::brokers::find_program("node").is_some()
                    && bin.join("componentize-js").exists())
                .then_some(bin)
            }
        }
    }

    /// `Ok` when the language's toolchain is installed, else why not.
    pub fn check(self) -> Result<(), String> {
        if self.tool_dir().is_some() {
            Ok(())
        } else {
            Err(format!(
                "the {} guest toolchain is not installed (scripts/setup.sh --guests installs it)",
                self.dir()
            ))
        }
    }

    /// The component of example guest `name` (`uppercase`, `flaky`), built
    /// on first use. Panics with the build's output when the build fails.
    pub fn guest(self, name: &str) -> String {
        static BUILT: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
        // One build at a time: both scripts are CPU-heavy.
        static BUILDING: Mutex<()> = Mutex::new(());
        let slot = &BUILT[self as usize];
        let out = slot.get_or_init(|| {
            let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
            let out = root().join("target/guests").join(self.dir());
            let started = std::time::Instant::now();
            let result = Command::new("bash")
                .arg(self.script())
                .arg(&out)
                .output()
                .map_err(|e| format!("running {}: {e}", self.script().display()))?;
            if !result.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    self.script().display(),
                    result.status,
                    String::from_utf8_lossy(&result.stdout),
                    String::from_utf8_lossy(&result.stderr)
                ));
            }
            eprintln!("{} guests ready in {:.1?}", self.dir(), started.elapsed());
            Ok(out)
        });
        match out {
            Ok(dir) => {
                let path = dir.join(format!("{name}.wasm"));
                assert!(path.is_file(), "{} was not built", path.display());
                path.display().to_string()
            }
            Err(e) => panic!("{e}"),
        }
    }
}
