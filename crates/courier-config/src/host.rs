//! `[host]`: host-wide settings — the HTTP endpoint, the embedded broker's
//! storage, the compile cache, progress summaries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use courier_embedded::SyncPolicy;
use serde::Deserialize;

use crate::ingress::IngressTokenConfig;

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    /// Address of the HTTP endpoint (ingress, `/metrics`, `/healthz`). An
    /// address other than loopback needs ingress tokens.
    pub listen: Option<SocketAddr>,
    /// Bearer tokens of the HTTP ingress, by name; with none, anyone who
    /// can reach the (loopback) address may publish anywhere.
    pub ingress_tokens: BTreeMap<String, IngressTokenConfig>,
    /// The client HTTP ingress and `--stdin` publish to.
    pub ingress_client: Option<String>,
    /// Largest message accepted at the HTTP ingress.
    pub max_ingress_bytes: usize,
    /// Seconds between progress summaries in the log (0 turns them off).
    pub summary_secs: u64,
    /// Where the embedded broker stores its point-to-point queues; without
    /// it the embedded broker keeps messages in memory only.
    pub data_dir: Option<PathBuf>,
    /// When a message published to the stored embedded broker counts as
    /// stored: `always` (fsync before `send` returns) or `os` (written to the
    /// operating system: survives a crash of Courier, not of the machine).
    pub sync: SyncPolicy,
    /// Keep compiled components across runs, so that `courier run` starts
    /// without compiling an unchanged component again.
    pub compile_cache: bool,
    /// Where compiled components are kept (default: `$XDG_CACHE_HOME/courier`
    /// or `~/.cache/courier`).
    pub cache_dir: Option<PathBuf>,
    /// Take instances from wasmtime's pooling allocator (preallocated slots)
    /// rather than mapping fresh memory for each.
    pub pooling: bool,
    /// Most messages a queue of the embedded broker holds (ready, delayed
    /// and in flight); past it a publish is refused as busy (`503` with
    /// `Retry-After` at the HTTP ingress) and nothing of it is queued.
    pub max_queued_messages: std::num::NonZeroUsize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ingress_tokens: BTreeMap::new(),
            ingress_client: None,
            max_ingress_bytes: 1 << 20,
            summary_secs: 10,
            data_dir: None,
            sync: SyncPolicy::Always,
            compile_cache: true,
            cache_dir: None,
            pooling: false,
            max_queued_messages: std::num::NonZeroUsize::new(courier_embedded::DEFAULT_MAX_QUEUED)
                .expect("the default is above zero"),
        }
    }
}
