//! TLS termination with rustls (ring provider): PEM certificates and keys, several
//! certificates chosen by SNI, TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, and a
//! self-signed development certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate: the host name it serves (for SNI; `None` = the default), its chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl std::str::FromStr for CertFiles {
    type Err = String;

    /// `CERT.pem,KEY.pem`, or `HOST=CERT.pem,KEY.pem` for SNI.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, files) = match s.split_once('=') {
            Some((n, f)) => (Some(n.to_ascii_lowercase()), f),
            None => (None, s),
        };
        let (cert, key) = files
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: write CERT.pem,KEY.pem or HOST=CERT.pem,KEY.pem"))?;
        if name.as_deref().is_some_and(|n| n.is_empty()) || cert.is_empty() || key.is_empty() {
            return Err(format!(
                "{s:?}: write CERT.pem,KEY.pem or HOST=CERT.pem,KEY.pem"
            ));
        }
        Ok(CertFiles {
            name,
            cert: cert.into(),
            key: key.into(),
        })
    }
}

impl std::fmt::Display for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}=")?;
        }
        write!(f, "{},{}", self.cert.display(), self.key.display())
    }
}

/// A loaded certificate with its key.
pub struct LoadedCert {
    pub name: Option<String>,
    pub certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> anyhow::Result<Arc<CertifiedKey>> {
    if chain.is_empty() {
        anyhow::bail!("{what}: no certificate found in the PEM file");
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("{what}: unsupported private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Loads a PEM certificate chain and its PEM private key.
pub fn load(files: &CertFiles) -> anyhow::Result<LoadedCert> {
    let what = files.cert.display().to_string();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| anyhow::anyhow!("cannot read certificate {what}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("certificate {what} is not valid PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    Ok(LoadedCert {
        name: files.name.clone(),
        certified: certified(chain, key, &what)?,
    })
}

/// A self-signed certificate for `localhost` and `127.0.0.1`; its PEM is written to
/// `cert_out` so that clients can trust it.
pub fn dev_cert(cert_out: &Path) -> anyhow::Result<LoadedCert> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| anyhow::anyhow!("cannot generate a development certificate: {e}"))?;
    std::fs::write(cert_out, generated.cert.pem())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", cert_out.display()))?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("development key: {e}"))?;
    Ok(LoadedCert {
        name: None,
        certified: certified(
            vec![generated.cert.der().clone()],
            key,
            "development certificate",
        )?,
    })
}

/// Chooses a certificate by SNI name, falling back to the default (the first without a name,
/// or the first of all).
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// The rustls server configuration: TLS 1.3 and 1.2 only, ALPN h2 and http/1.1.
pub fn server_config(certs: Vec<LoadedCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let default = certs
        .iter()
        .find(|c| c.name.is_none())
        .or_else(|| certs.first())
        .map(|c| c.certified.clone())
        .ok_or_else(|| anyhow::anyhow!("TLS needs at least one certificate"))?;
    let by_name = certs
        .iter()
        .filter_map(|c| Some((c.name.clone()?.to_ascii_lowercase(), c.certified.clone())))
        .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
