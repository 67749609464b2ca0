//! The HTTP side: one reqwest client, the `max_parallel` semaphore, retries
//! with bounded backoff, and the mapping of HTTP outcomes to [`ConsulError`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;

use crate::config::{ConsulConfig, TlsMinVersion};
use crate::error::{ConsulError, truncate_body};

/// The header Consul reads the ACL token from.
const TOKEN_HEADER: &str = "X-Consul-Token";
/// First retry delay; doubles per attempt up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest single retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Counters about requests to Consul, for metrics and tests.
///
/// `max_parallel` bounds storage requests (`in_flight`). HA requests
/// (session create/renew/destroy, lock acquire/release, and the blocking
/// queries that watch the lock) take no `max_parallel` permit and are
/// counted in `ha_in_flight` instead: a blocking query parks for up to
/// `lock_wait_time` and must not hold a storage permit that long, and a
/// session renewal must not queue behind a flood of storage writes. Each
/// contender keeps at most three HA requests in flight (a watch, a renewal
/// and an acquire or release), so they stay bounded without the semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RequestStats {
    /// Storage requests in flight right now.
    pub in_flight: usize,
    /// Most storage requests ever in flight at once (never above
    /// `max_parallel`).
    pub peak_in_flight: usize,
    /// HA requests (sessions, lock, watches) in flight right now.
    pub ha_in_flight: usize,
    /// HTTP requests sent, storage and HA, retries included.
    pub requests: u64,
    /// Retries after a transient failure.
    pub retries: u64,
    /// Writes waiting for a transaction (group commit) right now.
    pub queued_writes: usize,
}

/// A finished HTTP exchange whose status the caller interprets
/// (200, 404 and 409 reach the caller; other statuses become errors).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// `X-Consul-Index`, for blocking queries.
    pub(crate) index: Option<u64>,
}

/// One request to send, possibly several times.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    /// Path and query after the base URL, already percent-encoded.
    pub(crate) path_and_query: &'a str,
    pub(crate) body: Option<Bytes>,
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    max_retries: u32,
    permits: Semaphore,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    ha_in_flight: AtomicUsize,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Client {
    pub(crate) fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &config.token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                ConsulError::config(
                    "token",
                    "contains characters not allowed in an HTTP header (the token is not shown)",
                )
            })?;
            // Keeps the token out of reqwest/hyper debug output.
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.max_parallel)
            .tcp_nodelay(true)
            // Consul never redirects a valid key; a 301 means a key the
            // ServeMux path-cleans, which must fail rather than be followed.
            .redirect(reqwest::redirect::Policy::none())
            .min_tls_version(match config.tls_min_version {
                TlsMinVersion::Tls12 => reqwest::tls::Version::TLS_1_2,
                TlsMinVersion::Tls13 => reqwest::tls::Version::TLS_1_3,
            });
        if let Some(path) = &config.tls_ca_file {
            let pem = read_file("tls_ca_file", path)?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConsulError::TlsFile {
                    setting: "tls_ca_file",
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ConsulError::TlsFile {
                    setting: "tls_ca_file",
                    path: path.clone(),
                    message: "no PEM certificate found".to_owned(),
                });
            }
            // Like Vault (Go's RootCAs), a configured CA replaces the
            // public roots: only the Consul CA may vouch for Consul.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert_path), Some(key_path)) = (&config.tls_cert_file, &config.tls_key_file) {
            let mut pem = read_file("tls_cert_file", cert_path)?;
            pem.push(b'\n');
            let key = zeroize::Zeroizing::new(read_file("tls_key_file", key_path)?);
            pem.extend_from_slice(&key);
            let pem = zeroize::Zeroizing::new(pem);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| ConsulError::TlsFile {
                setting: "tls_cert_file",
                path: cert_path.clone(),
                message: format!("with tls_key_file {}: {e}", key_path.display()),
            })?;
            builder = builder.identity(identity);
        }
        if config.tls_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| ConsulError::Client(e.into()))?;
        Ok(Self {
            http,
            base: config.base_url(),
            timeout: config.request_timeout,
            max_retries: config.max_retries,
            permits: Semaphore::new(config.max_parallel),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            ha_in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            ha_in_flight: self.ha_in_flight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            queued_writes: 0,
        }
    }

    pub(crate) fn reset_peak(&self) {
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Sends `req`, retrying transient failures with exponential backoff
    /// (50 ms doubling to 2 s, plus up to 50 % jitter) at most
    /// `max_retries` times. Only the request itself holds a `max_parallel`
    /// permit, not the backoff sleep.
    ///
    /// Every request Consul receives here is idempotent (KV reads, and
    /// `/v1/txn` bodies of `set`/`delete`/`check-session`), so a retry after
    /// a timeout cannot do harm the first attempt could not.
    pub(crate) async fn send(
        &self,
        op: &'static str,
        key: &str,
        req: &Request<'_>,
    ) -> Result<Reply, ConsulError> {
        let mut attempt = 0u32;
        loop {
            match self.send_once(req).await {
                Err(err) if err.is_transient() && attempt < self.max_retries => {
                    let delay = backoff(attempt);
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        op,
                        key,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %err,
                        "Consul request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(&self, req: &Request<'_>) -> Result<Reply, ConsulError> {
        // The semaphore is never closed, so acquire only fails if it were.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ConsulError::Http {
                address: self.base.clone(),
                message: "client is shutting down".to_owned(),
            })?;
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.exchange(req, self.timeout).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Sends one HA request once, without a `max_parallel` permit (see
    /// [`RequestStats`]), giving up after `timeout`. The HA code retries on
    /// its own schedule (renewal interval, lock wait time).
    pub(crate) async fn send_ha(
        &self,
        req: &Request<'_>,
        timeout: Duration,
    ) -> Result<Reply, ConsulError> {
        self.ha_in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.exchange(req, timeout).await;
        self.ha_in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn exchange(&self, req: &Request<'_>, timeout: Duration) -> Result<Reply, ConsulError> {
        let url = format!("{}{}", self.base, req.path_and_query);
        let mut builder = self.http.request(req.method.clone(), url).timeout(timeout);
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let classify = |e: &reqwest::Error| classify_transport(e, &self.base, timeout);
        let response = builder.send().await.map_err(|e| classify(&e))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await.map_err(|e| classify(&e))?;
        match status {
            StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::CONFLICT => Ok(Reply {
                status,
                body,
                index,
            }),
            other => Err(status_error(other, &body)),
        }
    }
}

fn read_file(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConsulError> {
    std::fs::read(path).map_err(|e| ConsulError::TlsFile {
        setting,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let mut byte = [0u8; 1];
    // Jitter only spreads retries out; without randomness, none is added.
    let jitter = match getrandom::fill(&mut byte) {
        Ok(()) => base / 2 * u32::from(byte[0]) / 255,
        Err(_) => Duration::ZERO,
    };
    base + jitter
}

/// Maps a non-success HTTP status and Consul's text body to an error.
pub(crate) fn status_error(status: StatusCode, body: &[u8]) -> ConsulError {
    let text = truncate_body(&String::from_utf8_lossy(body));
    match status.as_u16() {
        403 => ConsulError::PermissionDenied {
            status: 403,
            body: text,
        },
        413 => ConsulError::TooLarge { body: text },
        429 | 503 => ConsulError::RateLimited {
            status: status.as_u16(),
            body: text,
        },
        // A quorum is missing, or an election is under way: both heal.
        500 if text.contains("No cluster leader") || text.contains("leadership lost") => {
            ConsulError::NoLeader
        }
        500 if is_rpc_failure(&text) => ConsulError::ServerRpc { body: text },
        code => ConsulError::Status {
            status: code,
            body: text,
        },
    }
}

/// 500 bodies that mean the agent could not talk to the servers, as opposed
/// to a request the servers refused.
fn is_rpc_failure(text: &str) -> bool {
    // "session shutdown": the multiplexed (yamux) RPC connection to a
    // server that just died, seen during a leader failover.
    const TRANSPORT: [&str; 10] = [
        "stream closed",
        "session shutdown",
        "EOF",
        "connection refused",
        "connection reset",
        "broken pipe",
        "use of closed network connection",
        "i/o deadline reached",
        "i/o timeout",
        "failed to get conn",
    ];
    // "raft apply failed: raft is already shutdown" (or "node is not the
    // leader", "timed out enqueuing operation"): the server itself is
    // stopping or losing leadership under the write, which was not applied.
    const RAFT: [&str; 3] = [
        "raft is already shutdown",
        "node is not the leader",
        "timed out enqueuing operation",
    ];
    text.contains("No known Consul servers")
        || (text.starts_with("rpc error") && TRANSPORT.iter().any(|t| text.contains(t)))
        || (text.starts_with("raft apply failed") && RAFT.iter().any(|t| text.contains(t)))
}

/// Maps a transport failure (no HTTP status) to an error.
fn classify_transport(err: &reqwest::Error, address: &str, timeout: Duration) -> ConsulError {
    let address = address.to_owned();
    if err.is_timeout() {
        return ConsulError::Timeout {
            address,
            after: timeout,
        };
    }
    match find_cause(err) {
        Some(Cause::Tls(message)) => return ConsulError::Tls { address, message },
        Some(Cause::Refused) => return ConsulError::ConnectionRefused { address },
        None => {}
    }
    let message = error_chain(err);
    if err.is_connect() || err.is_request() || err.is_body() {
        // Connection reset, closed mid-request (agent killed, pooled
        // connection closed by the server): nothing was acknowledged, and
        // a fresh connection may work.
        ConsulError::Connect { address, message }
    } else {
        ConsulError::Http { address, message }
    }
}

enum Cause {
    Tls(String),
    Refused,
}

/// Looks through the whole error chain for a TLS error or a refused
/// connection. `io::Error::source` skips the error an `io::Error` wraps
/// (and hyper wraps rustls errors in two of them), so wrapped errors are
/// searched through `get_ref` as well.
fn find_cause(err: &(dyn std::error::Error + 'static)) -> Option<Cause> {
    let mut current = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        depth += 1;
        if depth > 32 {
            return None;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(Cause::Tls(tls.to_string()));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(Cause::Refused);
            }
            if let Some(cause) = io.get_ref().and_then(|inner| find_cause(inner)) {
                return Some(cause);
            }
        }
        current = e.source();
    }
    None
}

fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_distinct_errors() {
        let cases: [(u16, &str, fn(&ConsulError) -> bool); 11] = [
            (500, "rpc error making call: stream closed", |e| {
                matches!(e, ConsulError::ServerRpc { .. })
            }),
            // The old leader's connection, written to after it died
            // (seen in the cluster test's leader failover).
            (
                500,
                "rpc error making call: write tcp 127.0.0.1:36239->127.0.0.1:29820: write: broken pipe",
                |e| matches!(e, ConsulError::ServerRpc { .. }),
            ),
            // A Consul agent stopped under a write (seen in the faults test).
            (500, "raft apply failed: raft is already shutdown", |e| {
                matches!(e, ConsulError::ServerRpc { .. })
            }),
            (500, "rpc error making call: session shutdown", |e| {
                matches!(e, ConsulError::ServerRpc { .. })
            }),
            (500, "No known Consul servers", |e| {
                matches!(e, ConsulError::ServerRpc { .. })
            }),
            (403, "ACL not found", |e| {
                matches!(e, ConsulError::PermissionDenied { .. })
            }),
            (413, "Value exceeds 524288 byte limit", |e| {
                matches!(e, ConsulError::TooLarge { .. })
            }),
            (429, "rate limit exceeded", |e| {
                matches!(e, ConsulError::RateLimited { status: 429, .. })
            }),
            (503, "rate limit exceeded, try again later", |e| {
                matches!(e, ConsulError::RateLimited { status: 503, .. })
            }),
            (500, "No cluster leader", |e| {
                matches!(e, ConsulError::NoLeader)
            }),
            (500, "invalid session", |e| {
                matches!(e, ConsulError::Status { status: 500, .. })
            }),
        ];
        for (code, body, check) in cases {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            let err = status_error(status, body.as_bytes());
            assert!(check(&err), "{code} {body}: {err:?}");
        }
        assert!(
            status_error(StatusCode::INTERNAL_SERVER_ERROR, b"No cluster leader").is_transient()
        );
        assert!(!status_error(StatusCode::FORBIDDEN, b"Permission denied").is_transient());
    }

    #[test]
    fn backoff_is_bounded() {
        let mut last = Duration::ZERO;
        for attempt in 0..40 {
            let d = backoff(attempt);
            assert!(d >= BACKOFF_START.min(BACKOFF_MAX));
            assert!(d <= BACKOFF_MAX + BACKOFF_MAX / 2, "{attempt}: {d:?}");
            last = last.max(d);
        }
        assert!(last >= BACKOFF_MAX);
    }
}
