//! `courier check`: is this file a guest Courier can run?

use std::path::Path;

use anyhow::Context;
use courier_runtime::Config;
use courier_runtime::engine::{GUEST_INTERFACE, check_exports, compile, describe, new_engine};
use courier_runtime::runtime::{link, linker};

/// Prints what the component imports and exports, and fails with the reason
/// when Courier cannot run it.
pub fn check(path: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    if let Some(config) = config {
        Config::from_file(config)?;
    }
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
    println!("ok: exports {GUEST_INTERFACE} and links against Courier");
    Ok(())
}
