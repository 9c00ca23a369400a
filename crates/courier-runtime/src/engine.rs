//! The wasmtime engine: configuration (compilation cache, instance
//! allocator), the epoch ticker behind handler deadlines, and loading
//! components with clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    ProfilingStrategy,
};

/// The name of the interface a guest must export.
pub const GUEST_INTERFACE: &str = "wasi:messaging/guest@0.2.0-draft";

/// Set (to anything) to have the engine write a `perf` map of the guests'
/// compiled code, so that a profile names their functions.
pub const PERF_MAP_ENV: &str = "COURIER_PERF_MAP";

/// How often the epoch advances; handler deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the engine is built.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Where compiled components are cached across runs, keyed by the
    /// component's bytes and the compiler's settings; `None` compiles every
    /// time.
    pub cache_dir: Option<PathBuf>,
    /// Instances come from a pool of preallocated slots (wasmtime's pooling
    /// allocator) instead of fresh memory mappings each.
    pub pooling: bool,
}

impl EngineOptions {
    /// What `host` configures: the compilation cache (`host.cache-dir`, else
    /// [`default_cache_dir`](Self::default_cache_dir); none with
    /// `compile-cache = false`) and the pooling allocator.
    pub fn for_host(host: &courier_config::host::HostConfig) -> Self {
        Self {
            cache_dir: if host.compile_cache {
                host.cache_dir.clone().or_else(Self::default_cache_dir)
            } else {
                None
            },
            pooling: host.pooling,
        }
    }

    /// `$XDG_CACHE_HOME/courier`, else `$HOME/.cache/courier`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("courier"))
    }
}

/// Builds an engine with default options (no cache, on-demand allocation)
/// and starts its epoch ticker.
pub fn new_engine() -> anyhow::Result<Engine> {
    new_engine_with(&EngineOptions::default())
}

/// Builds the engine every guest runs on, and starts its epoch ticker.
pub fn new_engine_with(options: &EngineOptions) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // For profiling (scripts/profile.sh): names the guests' compiled
    // functions for `perf` in /tmp/perf-PID.map.
    if std::env::var_os(PERF_MAP_ENV).is_some() {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    if let Some(dir) = &options.cache_dir {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        let mut cache = CacheConfig::new();
        cache.with_directory(&dir);
        // A cache that cannot be used costs a compilation, not the run.
        match Cache::new(cache) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => tracing::warn!(
                "compilation cache `{}` unusable, compiling every time: {e:#}",
                dir.display()
            ),
        }
    }
    if options.pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            PoolingAllocationConfig::default(),
        ));
    }
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("courier-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("starting the epoch thread")?;
    Ok(engine)
}

/// Epoch ticks for a deadline, rounded up, at least one.
pub fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() as u64)
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1)
}

/// Loads a component file, with an error that says what the file is when it
/// is not a component.
pub fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read component `{}`", path.display()))?;
    let component = compile(engine, &bytes).with_context(|| format!("`{}`", path.display()))?;
    check_exports(engine, &component).with_context(|| format!("`{}`", path.display()))?;
    Ok(component)
}

/// Compiles component bytes, explaining what they are when they are not a component.
pub fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    const MAGIC: &[u8] = b"\0asm";
    const HEADER: usize = 8;
    if bytes.is_empty() {
        bail!("an empty file, not a WebAssembly component");
    }
    if bytes.len() < HEADER && MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
        bail!(
            "truncated: {} bytes, shorter than the {HEADER}-byte WebAssembly header",
            bytes.len()
        );
    }
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        bail!(
            "not a WebAssembly file (it is {} bytes and does not start with the `\\0asm` magic)",
            bytes.len()
        );
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "a core WebAssembly module, not a component: build the guest for `wasm32-wasip2` \
             (or wrap the module with `wasm-tools component new`)"
        );
    }
    if bytes.len() == HEADER {
        bail!("an empty component: the file is only the {HEADER}-byte header (truncated?)");
    }
    Component::from_binary(engine, bytes).map_err(|e| {
        let e = format!("{e:#}");
        // wasmparser's words for a file that ends before its sections do.
        if e.contains("unexpected end-of-file") || e.contains("out of bounds (bound =") {
            anyhow!(
                "not a valid component, truncated: the file ends before its contents do \
                 (was it copied completely?): {e}"
            )
        } else {
            anyhow!("not a valid component (corrupt, or not built for wasm32-wasip2): {e}")
        }
    })
}

/// Fails unless the component exports the guest interface with its `handler`.
pub fn check_exports(engine: &Engine, component: &Component) -> anyhow::Result<()> {
    let ty = component.component_type();
    let guest = ty
        .exports(engine)
        .find(|(name, _)| *name == GUEST_INTERFACE);
    match guest {
        Some((
            _,
            ComponentExtern {
                ty: ComponentItem::ComponentInstance(inst),
                ..
            },
        )) => {
            if inst.exports(engine).any(|(n, _)| n == "handler") {
                Ok(())
            } else {
                bail!("exports `{GUEST_INTERFACE}` without a `handler` function")
            }
        }
        _ => {
            let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
            bail!(
                "does not export `{GUEST_INTERFACE}` (it exports: {})",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )
        }
    }
}

/// What a component imports and exports, for `courier check`.
pub fn describe(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    (imports, exports)
}
