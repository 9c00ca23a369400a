//! `courier new NAME --lang rust|python|js`: writes a ready-to-build guest
//! project into the directory NAME, from the templates under `templates/`
//! (compiled in) and, for Python and JavaScript, a copy of the language's SDK
//! and of the `wasi:messaging` WIT it builds against.
//!
//! A Rust project depends on the Rust SDK (`courier-guest`, not published
//! to crates.io) by path: `--sdk DIR`, else `$COURIER_GUEST_SDK`, else the
//! `guests/sdk` of the source tree this `courier` was built from, if it is
//! still there.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The language of a new guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, built with cargo for `wasm32-wasip2`.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

#[derive(Args)]
pub struct NewArgs {
    /// The project's name, also its directory: lowercase letters, digits,
    /// `-` and `_`, starting with a letter.
    name: String,
    /// The guest's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Write the project into DIR instead of `./NAME`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The Rust SDK (`courier-guest`) the project depends on by path.
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The `wasi:messaging` WIT, written into Python and JavaScript projects.
const WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("producer.wit", include_str!("../../../wit/producer.wit")),
    ("consumer.wit", include_str!("../../../wit/consumer.wit")),
    ("guest.wit", include_str!("../../../wit/guest.wit")),
];

/// The world JavaScript guests are built against (`guests/js/wit`): the
/// messaging world plus `wasi:cli/environment`, with the WIT above as a dependency.
const JS_WIT: &[(&str, &str)] = &[
    (
        "world.wit",
        include_str!("../../../guests/js/wit/world.wit"),
    ),
    (
        "deps/cli/environment.wit",
        include_str!("../../../guests/js/wit/deps/cli/environment.wit"),
    ),
];

const PYTHON_SDK: &str = include_str!("../../../guests/python/courier/__init__.py");
const PYTHON_REQUIREMENTS: &str = include_str!("../../../guests/python/requirements.txt");
const JS_SDK: &str = include_str!("../../../guests/js/courier/index.js");
const JS_PACKAGE: &str = include_str!("../../../guests/js/package.json");

/// The files of a project in `lang`, as (path, template).
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../templates/rust/lib.rs")),
            ("README.md", include_str!("../templates/rust/README.md")),
            (".gitignore", include_str!("../templates/rust/gitignore")),
        ],
        Lang::Python => &[
            ("app.py", include_str!("../templates/python/app.py")),
            (
                "requirements.txt",
                include_str!("../templates/python/requirements.txt"),
            ),
            ("README.md", include_str!("../templates/python/README.md")),
            (".gitignore", include_str!("../templates/python/gitignore")),
            ("courier/__init__.py", PYTHON_SDK),
        ],
        Lang::Js => &[
            ("app.js", include_str!("../templates/js/app.js")),
            ("package.json", include_str!("../templates/js/package.json")),
            ("README.md", include_str!("../templates/js/README.md")),
            (".gitignore", include_str!("../templates/js/gitignore")),
            ("courier/index.js", JS_SDK),
        ],
    }
}

/// `Ok` for a name every toolchain takes as a package name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || name.len() > 64 {
        bail!(
            "`{name}` is not a usable project name: use lowercase letters, digits, `-` and `_`, \
             starting with a letter, at most 64 characters"
        );
    }
    Ok(())
}

/// The pinned componentize-py version (`guests/python/requirements.txt`).
fn componentize_py() -> &'static str {
    PYTHON_REQUIREMENTS
        .lines()
        .find_map(|l| l.trim().strip_prefix("componentize-py=="))
        .unwrap_or("0.25.1")
}

/// The pinned componentize-js version (`guests/js/package.json`).
fn componentize_js() -> String {
    serde_json::from_str::<serde_json::Value>(JS_PACKAGE)
        .ok()
        .and_then(|v| {
            v["devDependencies"]["@bytecodealliance/componentize-js"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "0.23.0".into())
}

/// The Rust SDK directory the project depends on.
fn rust_sdk(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (dir, from) = match (flag, std::env::var_os("COURIER_GUEST_SDK")) {
        (Some(dir), _) => (dir.to_path_buf(), "--sdk"),
        (None, Some(dir)) => (PathBuf::from(dir), "COURIER_GUEST_SDK"),
        (None, None) => {
            let built = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/sdk"));
            if !built.join("Cargo.toml").is_file() {
                bail!(
                    "a Rust guest depends on Courier's Rust SDK (`guests/sdk` of Courier's \
                     source) by path: pass --sdk DIR (or set COURIER_GUEST_SDK)"
                );
            }
            (
                built.to_path_buf(),
                "the source tree courier was built from",
            )
        }
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("the Rust SDK `{}` ({from})", dir.display()))?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"courier-guest\"") {
        bail!(
            "`{}` ({from}) is not Courier's Rust SDK: it has no Cargo.toml of `courier-guest`",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes the project and prints what to do next.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("`{}` already exists and is not empty", dir.display());
    }
    let sdk = match args.lang {
        Lang::Rust => rust_sdk(args.sdk.as_deref())?.display().to_string(),
        _ => String::new(),
    };
    // A TOML basic string's contents.
    let sdk = sdk.replace('\\', "\\\\").replace('"', "\\\"");
    let fill = |template: &str| {
        template
            .replace("{{name}}", &args.name)
            .replace("{{artifact}}", &args.name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
            .replace("{{componentize_py}}", componentize_py())
            .replace("{{componentize_js}}", &componentize_js())
    };
    let mut files: Vec<(String, String)> = templates(args.lang)
        .iter()
        .map(|(path, template)| (path.to_string(), fill(template)))
        .collect();
    match args.lang {
        Lang::Rust => {}
        Lang::Python => files.extend(
            WIT.iter()
                .map(|(file, text)| (format!("wit/{file}"), text.to_string())),
        ),
        Lang::Js => {
            files.extend(
                JS_WIT
                    .iter()
                    .map(|(file, text)| (format!("wit/{file}"), text.to_string())),
            );
            files.extend(
                WIT.iter()
                    .map(|(file, text)| (format!("wit/deps/messaging/{file}"), text.to_string())),
            );
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    println!(
        "created {} ({:?} guest): see {}",
        dir.display(),
        args.lang,
        dir.join("README.md").display()
    );
    Ok(())
}
