//! HTTPS to Consul with a test CA made by rcgen: `tls_ca_file` trusts it,
//! an unrelated CA or the public roots do not, `tls_skip_verify` skips the
//! check, and an agent demanding client certificates accepts
//! `tls_cert_file`/`tls_key_file`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;

use seal_core::{Storage, StorageError};
use storage_consul::{ConsulError, ConsulStorage, TlsMinVersion};
use testkit::consul::{ConsulDev, ConsulOptions, isolated};

use common::consul_source;

fn tls_dev() -> &'static ConsulDev {
    static DEV: OnceLock<ConsulDev> = OnceLock::new();
    DEV.get_or_init(|| ConsulDev::start_with(ConsulOptions::tls(false)))
}

fn assert_tls_failure(err: &StorageError, what: &str) {
    assert!(
        matches!(err, StorageError::Backend { .. }),
        "{what}: not retried as transient: {err:?}"
    );
    assert!(
        matches!(consul_source(err), Some(ConsulError::Tls { .. })),
        "{what}: {err:?}"
    );
    assert!(err.to_string().contains("tls_ca_file"), "{what}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_file_works() {
    let (storage, _guard) = isolated(tls_dev(), |_| {});
    assert!(
        storage.address().starts_with("https://127.0.0.1:"),
        "{}",
        storage.address()
    );
    storage.put("over/tls", b"secret").await.unwrap();
    assert_eq!(
        storage.get("over/tls").await.unwrap().as_deref(),
        Some(&b"secret"[..])
    );
    assert_eq!(storage.list("over/").await.unwrap(), ["tls"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_minimum_works() {
    let (storage, _guard) = isolated(tls_dev(), |c| c.tls_min_version = TlsMinVersion::Tls13);
    storage.put("v13", b"x").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_refused() {
    let pki = tls_dev().pki().unwrap().clone();
    let (other_ca, _g1) = isolated(tls_dev(), |c| {
        c.tls_ca_file = Some(pki.other_ca_file.clone())
    });
    assert_tls_failure(&other_ca.put("k", b"v").await.unwrap_err(), "unrelated CA");
    assert_eq!(
        other_ca.request_stats().retries,
        0,
        "a bad certificate is not retried"
    );

    let (public_roots, _g2) = isolated(tls_dev(), |c| c.tls_ca_file = None);
    assert_tls_failure(&public_roots.get("k").await.unwrap_err(), "public roots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_verify_accepts_any_certificate() {
    let (storage, _guard) = isolated(tls_dev(), |c| {
        c.tls_ca_file = None;
        c.tls_skip_verify = true;
    });
    storage.put("unverified", b"x").await.unwrap();
    assert_eq!(
        storage.get("unverified").await.unwrap().as_deref(),
        Some(&b"x"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ca_file_is_a_config_error() {
    let mut config = tls_dev().config();
    config.tls_ca_file = Some("/nonexistent/ca.pem".into());
    let err = ConsulStorage::new(config).unwrap_err();
    assert!(
        matches!(
            err,
            ConsulError::TlsFile {
                setting: "tls_ca_file",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_verify_incoming() {
    let dev = ConsulDev::start_with(ConsulOptions::tls(true));
    let pki = dev.pki().unwrap().clone();
    let (with_cert, _g1) = isolated(&dev, |c| {
        c.tls_cert_file = Some(pki.client_cert_file.clone());
        c.tls_key_file = Some(pki.client_key_file.clone());
    });
    assert_eq!(with_cert.limits().max_transaction_ops, Some(63));
    with_cert.put("mtls", b"ok").await.unwrap();
    assert_eq!(
        with_cert.get("mtls").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );

    let (without, _g2) = isolated(&dev, |c| c.max_retries = 0);
    let err = without.get("mtls").await.unwrap_err();
    let cause = consul_source(&err);
    assert!(
        matches!(
            cause,
            Some(ConsulError::Tls { .. } | ConsulError::Connect { .. })
        ),
        "{err:?}"
    );
}
