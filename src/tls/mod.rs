//! TLS: the one crypto provider, the server's certificate (made with rcgen on first start,
//! or brought by the operator), key fingerprints, and the client's pinning verifier.
//!
//! Only this module replaces certificate verification, and only with the pin check in
//! [`pin`]: handshake signatures are still verified by the crypto provider. Both sides speak
//! TLS 1.3 only.

pub mod pin;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// File name of the certificate (PEM, leaf first, then any chain) inside the cert dir.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key (PEM) inside the cert dir.
pub const KEY_FILE: &str = "key.pem";

/// Errors loading or making certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}: no certificate found in the PEM file")]
    NoCertificate(String),
    #[error("{0}: no private key found in the PEM file")]
    NoKey(String),
    #[error("{0}: the key file is accessible to other users; run `chmod 600 {0}`")]
    KeyPermissions(String),
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error(
        "the new key ({new}) is not the key every node of this cluster serves ({served}); \
         to change the cluster's key, restart every node with the new one"
    )]
    ClusterKeyChanged { served: String, new: String },
}

/// The crypto provider used by both the server and the client (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default. Call once at start; later calls are no-ops.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: what clients pin. Shown as
/// `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the public key in a DER certificate.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Result<Fingerprint, TlsError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        let spki = parsed.tbs_certificate.subject_pki.raw;
        Ok(Fingerprint(Sha256::digest(spki).into()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// SHA-256 of a whole DER certificate: what IRC clients pin (WeeChat's `tls_fingerprint`,
/// irssi's `tls_pinned_cert`). It changes when the certificate is renewed, unlike
/// [`Fingerprint`], which `chat` pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateSha256([u8; 32]);

impl CertificateSha256 {
    /// The digest of a DER certificate.
    pub fn of(cert: &CertificateDer<'_>) -> CertificateSha256 {
        CertificateSha256(Sha256::digest(cert.as_ref()).into())
    }

    /// Upper-case hex pairs joined by colons (`AB:CD:…`), as `openssl x509 -fingerprint`
    /// and irssi write it.
    pub fn colons(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        pairs.join(":")
    }
}

impl fmt::Display for CertificateSha256 {
    /// 64 lower-case hex digits, as WeeChat takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertificateSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a pin string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pin looks like sha256:<64 hex digits> (as printed by `chatd fingerprint`)")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let hex_part = s.trim().strip_prefix("sha256:").ok_or(BadFingerprint)?;
        let bytes = hex::decode(hex_part.to_ascii_lowercase()).map_err(|_| BadFingerprint)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Fingerprint(arr))
    }
}

/// The server's certificate chain and key.
pub struct ServerIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: Fingerprint,
    /// SHA-256 of the leaf certificate (what IRC clients pin).
    pub certificate_sha256: CertificateSha256,
    /// True when this call generated a new key.
    pub generated_key: bool,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// Where the server's certificate and key come from.
#[derive(Debug, Clone)]
pub struct IdentitySource {
    /// Directory for the generated pair (and the default place to look for one).
    pub cert_dir: PathBuf,
    /// Operator-provided certificate chain (PEM); overrides the cert dir.
    pub cert_file: Option<PathBuf>,
    /// Operator-provided key (PEM); overrides the cert dir.
    pub key_file: Option<PathBuf>,
    /// Extra DNS names or addresses for a generated certificate.
    pub extra_names: Vec<String>,
}

impl IdentitySource {
    /// Loads the identity. With neither file given: uses `cert_dir/cert.pem` and
    /// `cert_dir/key.pem`, generating what is missing — a new ECDSA P-256 key if there is no
    /// key, or a new self-signed certificate for the existing key (renewal keeps the pin).
    pub fn load_or_create(&self) -> Result<ServerIdentity, TlsError> {
        let (cert_path, key_path) = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => return load_pair(c, k, false),
            (Some(c), None) => (c.clone(), self.cert_dir.join(KEY_FILE)),
            (None, Some(k)) => (self.cert_dir.join(CERT_FILE), k.clone()),
            (None, None) => (self.cert_dir.join(CERT_FILE), self.cert_dir.join(KEY_FILE)),
        };
        let mut generated_key = false;
        if !key_path.exists() {
            create_private_dir(&self.cert_dir)?;
            let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            generated_key = true;
            // A new key never matches an old certificate.
            let _ = fs::remove_file(&cert_path);
        }
        if !cert_path.exists() {
            let key_pem = read(&key_path)?;
            let key = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&key_pem))
                .map_err(|e| TlsError::Generate(format!("{}: {e}", key_path.display())))?;
            let cert = self_signed(&key, &self.extra_names)?;
            write_file(&cert_path, cert.as_bytes(), 0o644)?;
        }
        load_pair(&cert_path, &key_path, generated_key)
    }
}

/// Names a generated certificate covers: localhost, 127.0.0.1, ::1, this host's name and the
/// extra names.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = gethostname::gethostname().into_string() {
        if !host.is_empty() && !names.contains(&host) {
            names.push(host);
        }
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

fn self_signed(key: &rcgen::KeyPair, extra: &[String]) -> Result<String, TlsError> {
    let mut params = rcgen::CertificateParams::new(default_names(extra))
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "chatd self-signed");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params
        .self_signed(key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(cert.pem())
}

/// Loads a PEM certificate chain and key, refusing a world-readable key.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    generated_key: bool,
) -> Result<ServerIdentity, TlsError> {
    check_key_permissions(key_path)?;
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Io {
            path: cert_path.display().to_string(),
            error: e,
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::NoCertificate(cert_path.display().to_string()))?;
    let fingerprint = Fingerprint::of_cert(leaf)?;
    let certificate_sha256 = CertificateSha256::of(leaf);
    let key_pem = read(key_path)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Io {
            path: key_path.display().to_string(),
            error: e,
        })?
        .ok_or_else(|| TlsError::NoKey(key_path.display().to_string()))?;
    Ok(ServerIdentity {
        certs,
        key,
        fingerprint,
        certificate_sha256,
        generated_key,
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
    })
}

/// A TLS 1.3-only server configuration for an identity.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    // rustls defaults: no 0-RTT early data (replayable), no client authentication.
    Ok(Arc::new(config))
}

fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|error| TlsError::Io {
            path: path.display().to_string(),
            error,
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(TlsError::KeyPermissions(path.display().to_string()));
        }
        if mode & 0o070 != 0 {
            tracing::warn!(
                key = %path.display(),
                "the key file is accessible to its group; chmod 600 is safer"
            );
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Io {
        path: path.display().to_string(),
        error,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|error| TlsError::Io {
        path: dir.display().to_string(),
        error,
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |error| TlsError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(io_err)?;
    f.write_all(contents).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_print() {
        let s = format!("sha256:{}", "ab".repeat(32));
        let f: Fingerprint = s.parse().unwrap();
        assert_eq!(f.to_string(), s);
        assert!("sha1:00".parse::<Fingerprint>().is_err());
        assert!("sha256:zz".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn generated_key_is_private_and_renewal_keeps_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let src = IdentitySource {
            cert_dir: dir.path().join("certs"),
            cert_file: None,
            key_file: None,
            extra_names: vec!["chat.example.org".into()],
        };
        let first = src.load_or_create().unwrap();
        assert!(first.generated_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&first.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = src.load_or_create().unwrap();
        assert!(!again.generated_key);
        assert_eq!(first.fingerprint, again.fingerprint);
        // Renewal: a new certificate for the same key has the same pin.
        fs::remove_file(&first.cert_path).unwrap();
        let renewed = src.load_or_create().unwrap();
        assert_eq!(first.fingerprint, renewed.fingerprint);
        assert_ne!(first.certs[0], renewed.certs[0]);
    }

    #[test]
    fn an_operator_provided_pair_is_served_as_is() {
        let dir = tempfile::tempdir().unwrap();
        // Stand-in for e.g. Let's Encrypt's fullchain.pem / privkey.pem, made elsewhere.
        let theirs = IdentitySource {
            cert_dir: dir.path().join("letsencrypt"),
            cert_file: None,
            key_file: None,
            extra_names: vec![],
        }
        .load_or_create()
        .unwrap();
        let src = IdentitySource {
            cert_dir: dir.path().join("certs"),
            cert_file: Some(theirs.cert_path.clone()),
            key_file: Some(theirs.key_path.clone()),
            extra_names: vec![],
        };
        let served = src.load_or_create().unwrap();
        assert_eq!(served.fingerprint, theirs.fingerprint);
        assert_eq!(served.certs, theirs.certs);
        assert!(!served.generated_key);
        assert!(!dir.path().join("certs").exists(), "nothing generated");
        server_config(&served).unwrap();
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = IdentitySource {
            cert_dir: dir.path().to_path_buf(),
            cert_file: None,
            key_file: None,
            extra_names: vec![],
        };
        let id = src.load_or_create().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&id.key_path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                src.load_or_create(),
                Err(TlsError::KeyPermissions(_))
            ));
        }
    }
}
