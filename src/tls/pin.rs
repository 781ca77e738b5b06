//! The client's pinning verifier: the only replacement for certificate verification in the
//! project.
//!
//! Instead of a CA chain, the client accepts exactly one server key: the SHA-256 of the
//! SubjectPublicKeyInfo it pinned. The check runs inside the TLS handshake, so a server whose
//! key changed is refused before the client sends a single byte of application data (and so
//! before any credential). Handshake signatures are still verified by the crypto provider,
//! which proves the server holds the pinned key.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::{provider, Fingerprint};

/// Records the fingerprint the server presented, so the caller can report it after a refusal.
pub type SeenFingerprint = Arc<Mutex<Option<Fingerprint>>>;

/// A TLS 1.3-only client configuration that accepts only `expected`, or — when `expected` is
/// `None` — refuses every server after recording its fingerprint (first contact: the caller
/// asks the user, then connects again with the pin).
pub fn client_config(
    expected: Option<Fingerprint>,
    seen: SeenFingerprint,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = PinVerifier {
        expected,
        seen,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct PinVerifier {
    expected: Option<Fingerprint>,
    seen: SeenFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_cert(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented);
        match self.expected {
            Some(pin) if pin == presented => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
