//! TCP listeners, optional TLS (rustls), and graceful draining.
//!
//! Connections are served by hyper-util's auto builder (HTTP/1.1 and, with
//! TLS and ALPN, HTTP/2). On shutdown the accept loop stops and every open
//! connection is asked to finish its in-flight request and close, with a
//! bound on how long that may take.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::{ListenerConfig, TlsFiles};
use crate::error::Error;

/// How long in-flight requests get to finish after a shutdown signal.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound listener, ready to serve.
pub(crate) struct Bound {
    /// The socket.
    pub(crate) listener: TcpListener,
    /// The TLS acceptor, when TLS is on.
    pub(crate) tls: Option<TlsAcceptor>,
    /// The address actually bound (port 0 resolved).
    pub(crate) local_addr: SocketAddr,
    /// The config it came from.
    pub(crate) config: ListenerConfig,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The base URL clients use for this listener.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }
}

/// Loads a certificate chain and key into a rustls acceptor.
///
/// # Errors
///
/// [`Error::Tls`] naming the file and what is wrong with it.
pub(crate) fn tls_acceptor(address: &SocketAddr, files: &TlsFiles) -> Result<TlsAcceptor, Error> {
    let fail = |message: String| Error::Tls {
        address: address.to_string(),
        message,
    };
    let cert_pem = std::fs::read(&files.cert_file).map_err(|e| {
        fail(format!(
            "reading tls_cert_file {}: {e}",
            files.cert_file.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            fail(format!(
                "tls_cert_file {} is not valid PEM: {e}",
                files.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(fail(format!(
            "tls_cert_file {} holds no CERTIFICATE block",
            files.cert_file.display()
        )));
    }
    let key_pem = zeroize::Zeroizing::new(std::fs::read(&files.key_file).map_err(|e| {
        fail(format!(
            "reading tls_key_file {}: {e}",
            files.key_file.display()
        ))
    })?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => fail(format!(
            "tls_key_file {} holds no PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
            files.key_file.display()
        )),
        other => fail(format!(
            "tls_key_file {} is not valid PEM: {other}",
            files.key_file.display()
        )),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("TLS protocol setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            fail(format!(
                "the certificate in {} and the key in {} do not work together: {e}",
                files.cert_file.display(),
                files.key_file.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds every configured listener (before anything else happens, so a
/// busy port fails the start at once).
///
/// # Errors
///
/// [`Error::Bind`] or [`Error::Tls`].
pub(crate) async fn bind_all(configs: &[ListenerConfig]) -> Result<Vec<Bound>, Error> {
    let mut bound = Vec::new();
    for config in configs {
        let tls = config
            .tls
            .as_ref()
            .map(|files| tls_acceptor(&config.address, files))
            .transpose()?;
        let listener = TcpListener::bind(config.address)
            .await
            .map_err(|source| Error::Bind {
                address: config.address.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.address.to_string(),
            source,
        })?;
        bound.push(Bound {
            listener,
            tls,
            local_addr,
            config: config.clone(),
        });
    }
    Ok(bound)
}

/// Serves one listener until `shutdown` fires, then drains its connections
/// (at most [`DRAIN_TIMEOUT`]). Returns the socket, which no longer
/// accepts: the caller closes it only after the HA lock is released, since
/// standbys take an active node whose address refuses connections for dead
/// (storage-consul's dead-leader detection) and would break its lock while
/// it drains. New connections wait in the backlog meanwhile.
pub(crate) async fn serve(bound: Bound, app: Router, shutdown: CancellationToken) -> TcpListener {
    let graceful = GracefulShutdown::new();
    let Bound {
        listener,
        tls,
        local_addr,
        ..
    } = bound;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %local_addr, error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The client's address travels with each request (audit entries,
        // and X-Forwarded-For when a standby forwards).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    let builder = Builder::new(TokioExecutor::new());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let builder = Builder::new(TokioExecutor::new());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
        }
    }
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = %local_addr, connections = open, "draining open connections");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = %local_addr,
            "connections still open after {}s; closing them",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    listener
}
