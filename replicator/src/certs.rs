//! The cluster's certificates: one certificate authority per cluster, one certificate per member.
//! Agents authenticate each other with mutual TLS: a peer is a member exactly when its
//! certificate was issued by the cluster's CA.
//!
//! A directory holds `ca.crt`, `ca.key` (only where members are issued) and `NAME.crt`,
//! `NAME.key` for each member. Every member certificate also names the host `tandem`, the name
//! agents ask for when they connect (they connect by address, and membership, not the host name,
//! is what is checked).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The server name every member certificate carries and every agent asks for.
pub const CLUSTER_NAME: &str = "tandem";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already exists; refusing to overwrite a cluster's certificate authority")]
    Exists(PathBuf),
    #[error("{path} is not a usable {what}: {why}")]
    Bad { path: PathBuf, what: &'static str, why: String },
    #[error("member name `{0}` must be 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("cannot make a certificate: {0}")]
    Make(#[from] rcgen::Error),
    #[error("no cluster CA in {0}: create one with `tandem certs init --dir {0}`")]
    NoCa(PathBuf),
    #[error("TLS set-up: {0}")]
    Tls(String),
}

type Result<T> = std::result::Result<T, CertError>;

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CertError::Io { path: path.to_owned(), source })
}

/// Writes a new file (never over an existing one); `secret` files are readable by the owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<()> {
    let io = |source| CertError::Io { path: path.to_owned(), source };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists(path.to_owned())
            } else {
                io(e)
            }
        })?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok && name != "ca" {
        Ok(())
    } else {
        Err(CertError::Name(name.to_string()))
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "tandem cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

/// Creates a cluster CA in `dir` (created if missing).
pub fn init(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_owned(), source })?;
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    write_new(&dir.join("ca.key"), &key.serialize_pem(), true)?;
    write_new(&dir.join("ca.crt"), &cert.pem(), false)?;
    Ok(dir.join("ca.crt"))
}

/// Issues a member certificate `NAME.crt`/`NAME.key` in `dir` from the CA there.
pub fn issue(dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    let key_path = dir.join("ca.key");
    if !key_path.exists() {
        return Err(CertError::NoCa(dir.to_owned()));
    }
    let ca_key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| CertError::Bad {
        path: key_path.clone(),
        what: "CA key",
        why: e.to_string(),
    })?;
    // Re-signing the CA's own parameters with its key gives an issuer with the same name and
    // key, which is all a member certificate's signature refers to.
    let ca_path = dir.join("ca.crt");
    let ca_params = CertificateParams::from_ca_cert_pem(&read(&ca_path)?).map_err(|e| CertError::Bad {
        path: ca_path.clone(),
        what: "CA certificate",
        why: e.to_string(),
    })?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut p = CertificateParams::new(vec![name.to_string(), CLUSTER_NAME.to_string()])?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    write_new(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)?;
    write_new(&dir.join(format!("{name}.crt")), &cert.pem(), false)?;
    Ok(dir.join(format!("{name}.crt")))
}

/// A member's credentials and the cluster CA, ready for TLS.
pub struct Identity {
    pub name: String,
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn one_pem(path: &Path, what: &'static str, tag: &str) -> Result<Vec<u8>> {
    let text = read(path)?;
    let bad = |why: String| CertError::Bad { path: path.to_owned(), what, why };
    let pem = x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| bad(e.to_string()))?.1;
    if pem.label != tag {
        return Err(bad(format!("PEM block is `{}`, expected `{tag}`", pem.label)));
    }
    Ok(pem.contents)
}

impl Identity {
    /// Loads member `name` from `dir` (which must also hold the cluster's `ca.crt`).
    pub fn load(dir: &Path, name: &str) -> Result<Identity> {
        check_name(name)?;
        let ca = one_pem(&dir.join("ca.crt"), "CA certificate", "CERTIFICATE")?;
        let cert = one_pem(&dir.join(format!("{name}.crt")), "member certificate", "CERTIFICATE")?;
        let key = one_pem(&dir.join(format!("{name}.key")), "member key", "PRIVATE KEY")?;
        Ok(Identity {
            name: name.to_string(),
            ca: CertificateDer::from(ca),
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| CertError::Tls(format!("the CA certificate: {e}")))?;
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// TLS for accepting members: a client must present a certificate from the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let tls = |e: rustls::Error| CertError::Tls(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| CertError::Tls(e.to_string()))?;
        let mut c = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(tls)?;
        c.alpn_protocols = vec![ALPN.to_vec()];
        Ok(c)
    }

    /// TLS for connecting to a member: it must present a certificate from the cluster CA, and
    /// so must we.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let tls = |e: rustls::Error| CertError::Tls(e.to_string());
        let mut c = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(tls)?;
        c.alpn_protocols = vec![ALPN.to_vec()];
        Ok(c)
    }
}

/// The application protocol agents speak over QUIC.
pub const ALPN: &[u8] = b"tandem/1";

/// The common name of a DER certificate, for log lines about who connected.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_load() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        assert!(matches!(init(dir.path()), Err(CertError::Exists(_))));
        issue(dir.path(), "backup-1").unwrap();
        let id = Identity::load(dir.path(), "backup-1").unwrap();
        id.server_config().unwrap();
        id.client_config().unwrap();
        assert_eq!(common_name(&id.cert).as_deref(), Some("backup-1"));
        assert!(matches!(issue(dir.path(), "../x"), Err(CertError::Name(_))));
        let err = Identity::load(dir.path(), "nobody").err().unwrap();
        assert!(err.to_string().contains("nobody.crt"), "{err}");
        let mode = std::fs::metadata(dir.path().join("backup-1.key")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }
}
