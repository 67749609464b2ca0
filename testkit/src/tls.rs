//! A throwaway PKI for HTTPS tests: one CA, a server certificate for
//! 127.0.0.1 / localhost, and a client certificate, written as PEM files.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// PEM files of a test CA and the certificates it signed. The private keys
/// are test-only and die with the temp dir.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestPki {
    /// The CA certificate (for `tls_ca_file`).
    pub ca_file: PathBuf,
    /// Server certificate (SANs 127.0.0.1, localhost, server.dc1.consul).
    pub server_cert_file: PathBuf,
    /// Server private key.
    pub server_key_file: PathBuf,
    /// Client certificate (for `tls_cert_file`).
    pub client_cert_file: PathBuf,
    /// Client private key (for `tls_key_file`).
    pub client_key_file: PathBuf,
    /// A second, unrelated CA: trusting only it must fail the handshake.
    pub other_ca_file: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
    let mut params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("CA params: {e}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("CA cert: {e}"));
    (cert, key)
}

impl TestPki {
    /// Generates the PKI into `dir`.
    ///
    /// # Panics
    /// When generation or writing fails.
    pub fn generate(dir: &Path) -> Self {
        let (ca_cert, ca_key) = ca("Strongroom test CA");
        let (other_cert, _) = ca("Unrelated test CA");

        let server_key = KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "server.dc1.consul".to_owned()])
                .unwrap_or_else(|e| panic!("server params: {e}"));
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server
            .distinguished_name
            .push(DnType::CommonName, "server.dc1.consul");
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_cert = server
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap_or_else(|e| panic!("server cert: {e}"));

        let client_key = KeyPair::generate().unwrap_or_else(|e| panic!("client key: {e}"));
        let mut client = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("client params: {e}"));
        client
            .distinguished_name
            .push(DnType::CommonName, "strongroom test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client
            .signed_by(&client_key, &ca_cert, &ca_key)
            .unwrap_or_else(|e| panic!("client cert: {e}"));

        Self {
            ca_file: write(dir, "ca.pem", &ca_cert.pem()),
            server_cert_file: write(dir, "server.pem", &server_cert.pem()),
            server_key_file: write(dir, "server-key.pem", &server_key.serialize_pem()),
            client_cert_file: write(dir, "client.pem", &client_cert.pem()),
            client_key_file: write(dir, "client-key.pem", &client_key.serialize_pem()),
            other_ca_file: write(dir, "other-ca.pem", &other_cert.pem()),
        }
    }
}
