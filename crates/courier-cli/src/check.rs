//! `courier check`: is this file a guest Courier can run? Also says what
//! produced it (its `producers` sections), its size, and whether the memory
//! its modules start with fits the guest's `memory-limit-mib`.

use std::path::Path;

use anyhow::Context;
use courier_runtime::engine::{
    EngineOptions, GUEST_INTERFACE, check_exports, compile, describe, new_engine_with,
};
use courier_runtime::inspect::{Inspection, inspect};
use courier_runtime::runtime::{link, linker};
use courier_runtime::{Config, Runtime};

/// Prints what the component imports and exports, what produced it, its
/// size and initial memory, and fails with the reason when Courier cannot
/// run it: not a component, no guest export, an import Courier lacks, or an
/// instance that cannot be made under the guest's limits
/// (`[guests.<file stem>]` of `config`, else the defaults). Warns when the
/// memory its modules start with is over the guest's memory limit.
pub async fn check(path: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = match config {
        Some(config) => Config::from_file(config)?,
        None => Config::default(),
    };
    // Compiled once, through the cache `courier run` uses.
    let engine = new_engine_with(&EngineOptions::for_host(&config.host))?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let component = compile(&engine, &bytes).with_context(|| format!("`{}`", path.display()))?;
    let (imports, exports) = describe(&engine, &component);
    println!("{}: a component", path.display());
    let inspection = inspect(&bytes);
    print_inspection(&inspection);
    let limit_mib = guest_name(path)
        .and_then(|name| config.guests.get(&name))
        .map_or_else(
            || courier_runtime::GuestConfig::default().memory_limit_mib,
            |g| g.memory_limit_mib,
        );
    if let Some(warning) = memory_warning(&inspection, limit_mib) {
        println!("warning: {warning}");
    }
    println!("imports:");
    for i in &imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &exports {
        println!("  {e}");
    }
    check_exports(&engine, &component).with_context(|| format!("`{}`", path.display()))?;
    link(&linker(&engine)?, &component, path)?;
    let limit = instantiate(path, config).await?;
    println!(
        "ok: exports {GUEST_INTERFACE}, links against Courier and instantiates within \
         memory-limit-mib = {limit}"
    );
    Ok(())
}

/// Instantiates the component once, as `courier run` would before taking any
/// message, and returns the memory limit it ran under. Nothing connects to a
/// broker and no data directory is opened.
async fn instantiate(path: &Path, mut config: Config) -> anyhow::Result<u64> {
    let name = guest_name(path).unwrap_or_else(|| "guest".into());
    let mut guest = config.guests.remove(&name).unwrap_or_default();
    guest.component = Some(path.to_path_buf());
    let limit = guest.memory_limit_mib;
    config.guests = [(name, guest)].into();
    config.host.data_dir = None;
    config.host.listen = None;
    Runtime::new(config)?.check().await?;
    Ok(limit)
}

/// The guest a component runs as by default: its file stem.
fn guest_name(path: &Path) -> Option<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn print_inspection(found: &Inspection) {
    println!(
        "size: {} ({} bytes), {} core module{}",
        mib(found.size as u64),
        found.size,
        found.modules,
        if found.modules == 1 { "" } else { "s" }
    );
    if found.producers.is_empty() {
        println!("producers: none recorded");
    } else {
        println!("producers:");
        let mut fields: Vec<(&str, Vec<String>)> = Vec::new();
        for (field, name, version) in &found.producers {
            let entry = if version.is_empty() {
                name.clone()
            } else {
                format!("{name} {version}")
            };
            match fields.last_mut() {
                Some((f, entries)) if f == field => entries.push(entry),
                _ => fields.push((field, vec![entry])),
            }
        }
        for (field, entries) in fields {
            println!("  {field}: {}", entries.join(", "));
        }
    }
    println!("initial memory: {}", mib(found.initial_memory));
}

/// Why the memory the component starts with does not fit under
/// `memory-limit-mib = limit_mib`, if it does not.
fn memory_warning(found: &Inspection, limit_mib: u64) -> Option<String> {
    let limit = limit_mib.saturating_mul(1 << 20);
    (found.initial_memory > limit).then(|| {
        format!(
            "the component starts with {} of linear memory, more than memory-limit-mib = \
             {limit_mib}: it cannot be instantiated; raise `memory-limit-mib` for this guest \
             to at least {}",
            mib(found.initial_memory),
            found.initial_memory.div_ceil(1 << 20)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_over_the_limit() {
        let found = |mib: u64| Inspection {
            initial_memory: mib << 20,
            ..Inspection::default()
        };
        assert_eq!(memory_warning(&found(64), 64), None);
        let w = memory_warning(&found(65), 64).unwrap();
        assert!(w.contains("65.0 MiB") && w.contains("at least 65"), "{w}");
        // One byte over is over.
        let over = Inspection {
            initial_memory: (64 << 20) + 1,
            ..Inspection::default()
        };
        assert!(memory_warning(&over, 64).unwrap().contains("at least 65"));
    }
}
