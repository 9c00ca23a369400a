//! `courier check`: is this file a guest Courier can run?

use std::path::Path;

use anyhow::Context;
use courier_runtime::engine::{GUEST_INTERFACE, check_exports, compile, describe, new_engine};
use courier_runtime::runtime::{link, linker};
use courier_runtime::{Config, Runtime};

/// Prints what the component imports and exports, and fails with the reason
/// when Courier cannot run it: not a component, no guest export, an import
/// Courier lacks, or an instance that cannot be made under the guest's
/// limits (`[guests.<file stem>]` of `config`, else the defaults).
pub async fn check(path: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = match config {
        Some(config) => Config::from_file(config)?,
        None => Config::default(),
    };
    let engine = new_engine()?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let component = compile(&engine, &bytes).with_context(|| format!("`{}`", path.display()))?;
    let (imports, exports) = describe(&engine, &component);
    println!("{}: a component", path.display());
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
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("guest")
        .to_string();
    let mut guest = config.guests.remove(&name).unwrap_or_default();
    guest.component = Some(path.to_path_buf());
    let limit = guest.memory_limit_mib;
    config.guests = [(name, guest)].into();
    config.host.data_dir = None;
    config.host.listen = None;
    Runtime::new(config)?.check().await?;
    Ok(limit)
}
