//! TLS to brokers: one vocabulary for every backend, one TLS stack.
//!
//! A client turns TLS on with its url's scheme (`tls://`, `rediss://`,
//! `amqps://`, `mqtts://`) or with a `tls` entry in its configuration —
//! `tls = true`, or a table of [`TlsOptions`]:
//!
//! ```toml
//! [clients.orders.tls]
//! ca-file = "/etc/courier/ca.pem"      # trust only this CA (default: the system's)
//! cert-file = "/etc/courier/client.pem" # mutual TLS: the client's certificate ...
//! key-file = "/etc/courier/client.key"  # ... and its key
//! server-name = "broker.internal"      # the name the certificate must carry
//! ```
//!
//! [`ClientTls::load`] reads the files once, when the configuration is read,
//! and builds a rustls client configuration on the `ring` provider — the one
//! TLS stack of the workspace; each backend hands it (or the PEM it came
//! from) to its client library. Verification is on unless
//! `insecure-skip-verify = true`, which the host logs as a warning at every
//! connect.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

use crate::BrokerError;

/// `[clients.NAME.tls]`: how a client speaks TLS to its broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate chain, for mutual TLS (needs
    /// `key-file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client's private key (needs `cert-file`).
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must be valid for, when it is not
    /// the host name of the url.
    pub server_name: Option<String>,
    /// Accept any certificate: encryption without authentication. Off by
    /// default; logged as a warning at every connect.
    pub insecure_skip_verify: bool,
}

/// TLS settings of a client, loaded: the files read and a rustls client
/// configuration built. Its `Debug` shows the file names, never a key.
#[derive(Clone)]
pub struct ClientTls {
    options: TlsOptions,
    ca_pem: Option<Vec<u8>>,
    identity: Option<Identity>,
    config: Arc<ClientConfig>,
}

/// A client certificate chain and its key, in PEM.
#[derive(Clone)]
struct Identity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.options, f)
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

/// The crypto provider of every TLS connection Courier makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process-wide rustls provider, for client libraries that
/// build their own configuration (`ClientConfig::builder()`). Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ClientTls {
    /// Reads the files `options` names and builds the client configuration.
    /// Errors name the option and the file.
    pub fn load(options: TlsOptions) -> Result<Self, BrokerError> {
        install_provider();
        let provider = provider();
        if options.cert_file.is_some() != options.key_file.is_some() {
            return Err(BrokerError::invalid(
                "tls: `cert-file` and `key-file` go together (mutual TLS needs both)",
            ));
        }
        let server_name = match &options.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                BrokerError::invalid(format!(
                    "tls `server-name`: `{name}` is not a DNS name or IP address"
                ))
            })?),
            None => None,
        };
        let ca_pem = options
            .ca_file
            .as_deref()
            .map(|p| read("ca-file", p))
            .transpose()?;
        let roots = match &ca_pem {
            Some(pem) => roots_from_pem(options.ca_file.as_deref().unwrap_or(Path::new("")), pem)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BrokerError::invalid(format!("tls: {e}")))?;
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = if options.insecure_skip_verify {
            Arc::new(AcceptAny(algorithms))
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| BrokerError::invalid(format!("tls: {e}")))?;
            match server_name {
                Some(name) => Arc::new(NamedAs {
                    inner: webpki,
                    name,
                }),
                None => webpki,
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (config, identity) = match (&options.cert_file, &options.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let PemIdentity {
                    chain,
                    key,
                    cert_pem,
                    key_pem,
                } = read_identity(cert_file, key_file).map_err(|e| {
                    BrokerError::invalid(format!("tls `{}`: {}", e.option(), e.message))
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    BrokerError::invalid(format!(
                        "tls: the key in `{}` does not fit the certificate in `{}`: {e}",
                        key_file.display(),
                        cert_file.display()
                    ))
                })?;
                (config, Some(Identity { cert_pem, key_pem }))
            }
            _ => (builder.with_no_client_auth(), None),
        };
        Ok(Self {
            options,
            ca_pem,
            identity,
            config: Arc::new(config),
        })
    }

    /// TLS with the defaults: the system's certificate authorities, the
    /// url's host name, no client certificate.
    pub fn system() -> Result<Self, BrokerError> {
        Self::load(TlsOptions::default())
    }

    /// The options these settings were loaded from.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The rustls client configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The PEM of `ca-file`, when one is given, for libraries that take the
    /// trusted certificates rather than a configuration.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// The PEM of `cert-file` and `key-file`, when both are given.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|i| (i.cert_pem.as_slice(), i.key_pem.as_slice()))
    }

    /// The name to verify the broker's certificate against, when it is not
    /// the url's host.
    pub fn server_name(&self) -> Option<&str> {
        self.options.server_name.as_deref()
    }

    /// Whether certificates go unverified (`insecure-skip-verify`).
    pub fn insecure(&self) -> bool {
        self.options.insecure_skip_verify
    }
}

/// A certificate chain and its private key, read from PEM files: for a
/// client's mutual TLS here, and for the HTTP listener's certificate.
pub struct PemIdentity {
    /// The certificates, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate file as read.
    pub cert_pem: Vec<u8>,
    /// The key file as read.
    pub key_pem: Vec<u8>,
}

/// Why [`read_identity`] refused its files: which file, and what is wrong
/// (a key file's content is never quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    /// `true` when the key file is at fault, else the certificate file.
    pub in_key: bool,
    /// What is wrong, naming the file.
    pub message: String,
}

impl IdentityError {
    /// The option that names the file at fault: `cert-file` or `key-file`.
    pub fn option(&self) -> &'static str {
        if self.in_key { "key-file" } else { "cert-file" }
    }
}

/// Reads a certificate chain (at least one `CERTIFICATE`) and a private key
/// (PKCS#8, PKCS#1 or SEC1) from their PEM files.
pub fn read_identity(cert_file: &Path, key_file: &Path) -> Result<PemIdentity, IdentityError> {
    let refuse = |in_key: bool, message: String| IdentityError { in_key, message };
    let read = |in_key: bool, path: &Path| {
        std::fs::read(path)
            .map_err(|e| refuse(in_key, format!("cannot read `{}`: {e}", path.display())))
    };
    let cert_pem = read(false, cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            refuse(
                false,
                format!(
                    "`{}` is not a PEM certificate chain: {e}",
                    cert_file.display()
                ),
            )
        })?;
    if chain.is_empty() {
        return Err(refuse(
            false,
            format!("`{}` holds no PEM CERTIFICATE", cert_file.display()),
        ));
    }
    let key_pem = read(true, key_file)?;
    // The parser's own message is not shown: it may quote the file.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        refuse(
            true,
            format!(
                "`{}` holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                key_file.display()
            ),
        )
    })?;
    Ok(PemIdentity {
        chain,
        key,
        cert_pem,
        key_pem,
    })
}

/// Where a client connects: its url and, when it speaks TLS, how.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// The broker's url (it may hold credentials: show it only through
    /// [`crate::secret::redact_url`]).
    pub url: String,
    /// TLS settings from the configuration, if any.
    pub tls: Option<ClientTls>,
}

impl Endpoint {
    /// An endpoint without TLS settings (the url's scheme may still ask
    /// for TLS).
    pub fn plain(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
        }
    }

    /// The url's scheme, lower-cased (`nats`, `rediss`, ...).
    pub fn scheme(&self) -> String {
        self.url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The TLS settings to connect with: the configured ones, or the
    /// defaults when the url's scheme is `tls_scheme` (`rediss`, ...);
    /// `None` for a plain connection.
    pub fn tls(&self, tls_scheme: &str) -> Result<Option<ClientTls>, BrokerError> {
        match &self.tls {
            Some(tls) => Ok(Some(tls.clone())),
            None if self.scheme() == tls_scheme => ClientTls::system().map(Some),
            None => Ok(None),
        }
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| {
        BrokerError::invalid(format!(
            "tls `{key}`: cannot read `{}`: {e}",
            path.display()
        ))
    })
}

fn pem_error(key: &str, path: &Path, e: impl fmt::Display) -> BrokerError {
    BrokerError::invalid(format!(
        "tls `{key}`: `{}` is not usable PEM: {e}",
        path.display()
    ))
}

fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, BrokerError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| pem_error("ca-file", path, e))?;
        roots.add(cert).map_err(|e| pem_error("ca-file", path, e))?;
    }
    if roots.is_empty() {
        return Err(pem_error("ca-file", path, "no certificate in it"));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, BrokerError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(BrokerError::invalid(format!(
            "tls: no certificate authorities found on this system{}; give `ca-file`",
            found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )));
    }
    Ok(roots)
}

/// Verifies the broker's certificate against a configured name instead of
/// the url's host (`server-name`).
#[derive(Debug)]
struct NamedAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate (`insecure-skip-verify`), still checking that
/// the handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_in_errors() {
        let e = ClientTls::load(TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`ca-file`: cannot read `/nonexistent/ca.pem`"),
            "{e}"
        );
        let e = ClientTls::load(TlsOptions {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = ClientTls::load(TlsOptions {
            ca_file: Some(junk),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no certificate in it"), "{e}");
        // A key file that is not a key: refused without quoting it.
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), "s3cret-not-a-key").unwrap();
        let e = ClientTls::load(TlsOptions {
            cert_file: Some(cert),
            key_file: Some(dir.path().join("key.pem")),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls `key-file`") && e.contains("holds no PEM private key"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = ClientTls::load(TlsOptions {
            insecure_skip_verify: true,
            server_name: Some("not a name!".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("server-name"), "{e}");
    }

    #[test]
    fn the_scheme_or_the_settings_turn_tls_on() {
        let insecure = TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let plain = Endpoint::plain("redis://h:6379");
        assert!(plain.tls("rediss").unwrap().is_none());
        let configured = Endpoint {
            url: "redis://h:6379".into(),
            tls: Some(ClientTls::load(insecure.clone()).unwrap()),
        };
        assert!(configured.tls("rediss").unwrap().unwrap().insecure());
        assert_eq!(Endpoint::plain("RedisS://h").scheme(), "rediss");
    }
}
