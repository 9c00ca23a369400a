//! `[host]`: host-wide settings — the HTTP endpoint (and its TLS
//! certificate), the embedded broker's storage, the compile cache, progress
//! summaries.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use courier_broker::tls::read_identity;
use courier_embedded::SyncPolicy;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::ingress::IngressTokenConfig;
use crate::locate::line_of;

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    /// Address of the HTTP endpoint (ingress, `/metrics`, `/healthz`). An
    /// address other than loopback needs ingress tokens.
    pub listen: Option<SocketAddr>,
    /// PEM file with the HTTP endpoint's certificate chain (leaf first);
    /// with `tls-key-file`, the endpoint serves HTTPS only. Relative to the
    /// config file.
    pub tls_cert_file: Option<Spanned<PathBuf>>,
    /// PEM file with the private key of `tls-cert-file` (PKCS#8, PKCS#1 or
    /// SEC1). Relative to the config file.
    pub tls_key_file: Option<Spanned<PathBuf>>,
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
    /// At shutdown, how long the host keeps handling what the in-memory
    /// embedded broker holds before it exits (what is left then is lost,
    /// and said so); a second signal ends the wait at once.
    #[serde(
        rename = "drain-timeout-ms",
        deserialize_with = "courier_broker::factory::millis"
    )]
    pub drain_timeout: std::time::Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls_cert_file: None,
            tls_key_file: None,
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
            drain_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// The HTTP endpoint's certificate chain and private key, read from the PEM
/// files of `tls-cert-file` and `tls-key-file`. Its `Debug` never shows the
/// key.
pub struct TlsIdentity {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// A copy of the private key, for the one place that needs it (the TLS
    /// server's configuration).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.cert_chain.len())
            .field("key", &courier_broker::secret::REDACTED)
            .finish()
    }
}

impl HostConfig {
    /// Reads `tls-cert-file` and `tls-key-file` (both or neither) relative
    /// to `base`; `text` is the file, for the lines of errors.
    pub(crate) fn read_tls(
        &self,
        text: &str,
        base: &Path,
    ) -> Result<Option<TlsIdentity>, ConfigError> {
        let at = |key: &str, file: &Spanned<PathBuf>, message: String| ConfigError::Invalid {
            key: format!("host.{key}"),
            line: Some(line_of(text, file.span().start)),
            message,
        };
        let (cert_file, key_file) = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(cert), None) => {
                return Err(at(
                    "tls-cert-file",
                    cert,
                    "needs `tls-key-file` too: give both or neither".into(),
                ));
            }
            (None, Some(key)) => {
                return Err(at(
                    "tls-key-file",
                    key,
                    "needs `tls-cert-file` too: give both or neither".into(),
                ));
            }
        };
        let pem = read_identity(
            &base.join(cert_file.get_ref()),
            &base.join(key_file.get_ref()),
        )
        .map_err(|e| {
            let file = if e.in_key { key_file } else { cert_file };
            at(&format!("tls-{}", e.option()), file, e.message)
        })?;
        let (cert_chain, key) = (pem.chain, pem.key);
        Ok(Some(TlsIdentity { cert_chain, key }))
    }
}
