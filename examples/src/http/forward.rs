//! What a standby does with requests that belong to the active node.
//!
//! Vault's `handleRequestForwarding`: a standby sends the request on to the
//! active node's `api_addr` as it came — method, path, query, headers with
//! the token, body streamed — and hands back status, headers and body as
//! they come, so a client talking to any node works unchanged. The
//! client's address goes into `X-Forwarded-For`. Connections to the active
//! node are kept alive and reused (one pooled client per server).
//!
//! Instead it answers `307 Temporary Redirect` to the same path on the
//! active node when the client sends `X-Vault-No-Request-Forwarding`, when
//! forwarding fails, or when the request was already forwarded once (two
//! nodes that briefly disagree about the leader never bounce a request
//! between them).
//!
//! Requests that describe the node itself are answered locally (see
//! [`is_node_local`]).
//!
//! A forward is abandoned when the active node changes and the old one has
//! not answered within a short grace (Vault's `clearForwardingClients`):
//! an old active node that froze would otherwise hold the request until it
//! runs again or the client gives up, although a new active node serves.
//! See [`abandoned`].

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use strongroom::{HaMode, LeaderAddress, NodeState};
use tokio::sync::watch;

use super::response::HttpError;
use crate::error::Error;

/// Vault's header asking a standby to redirect instead of forwarding.
pub(crate) const NO_FORWARDING_HEADER: &str = "x-vault-no-request-forwarding";

/// Marks a request a standby forwarded, so the receiver never forwards it
/// again.
const FORWARDED_HEADER: &str = "x-strongroom-forwarded";

/// How long connecting to the active node may take before the standby
/// redirects instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a forward may still run after the node it went to stopped
/// being the active node (see [`leader_changed`]).
pub(crate) const LEADER_CHANGE_GRACE: Duration = Duration::from_secs(3);

/// Headers that belong to one hop (RFC 9110 §7.6.1) and are not passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The unauthenticated endpoints that describe this node rather than the
/// cluster: a standby answers them itself (Vault: init, seal-status,
/// unseal, leader, health, metrics, and seal, which a standby refuses).
pub(crate) fn is_node_local(path: &str) -> bool {
    matches!(
        path,
        "sys/health"
            | "sys/seal-status"
            | "sys/leader"
            | "sys/unseal"
            | "sys/init"
            | "sys/seal"
            | "sys/metrics"
    )
}

/// Whether the client asked for a redirect instead of forwarding.
pub(crate) fn wants_redirect(headers: &HeaderMap) -> bool {
    headers
        .get(NO_FORWARDING_HEADER)
        .is_some_and(|v| !v.is_empty())
}

/// Whether another node already forwarded this request.
pub(crate) fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// Vault's 307 to the same path and query on the active node.
pub(crate) fn redirect(leader_api_addr: &str, request: &Request) -> Response {
    redirect_to(&target_url(leader_api_addr, request))
}

/// Resolves with the node's state once it has not named `leader` as the
/// active node for `grace`: another node took the lock, the lock is free,
/// this node became active, or it sealed. The grace lets a node that
/// handed over on purpose (`sys/step-down`, forwarded here) deliver the
/// answer it sends after releasing the lock. Never resolves while
/// `leader` stays.
pub(crate) async fn leader_changed(
    changes: &mut watch::Receiver<NodeState>,
    leader: &LeaderAddress,
    grace: Duration,
) -> NodeState {
    let moved = |s: &NodeState| match &s.mode {
        HaMode::Standby { leader: Some(now) } => s.sealed || now != leader,
        _ => true,
    };
    loop {
        if changes.wait_for(moved).await.is_err() {
            // The core is gone: nothing will ever change.
            return std::future::pending().await;
        }
        tokio::time::sleep(grace).await;
        let now = changes.borrow_and_update().clone();
        if moved(&now) {
            return now;
        }
    }
}

/// The answer to a forward abandoned because the active node changed
/// (`now` is this node's state then). A read goes to the new active node
/// with a 307, as Vault answers a failed forward. Anything else gets a 503
/// the client can retry: the old active node may have applied it, so it is
/// not sent on again behind the client's back (a 307 would make most
/// clients resend it), nor is a read when no other node serves yet.
pub(crate) fn abandoned(method: &Method, path_and_query: &str, now: &NodeState) -> Response {
    if let HaMode::Standby {
        leader: Some(leader),
    } = &now.mode
        && !now.sealed
        && is_read(method)
    {
        return redirect_to(&format!(
            "{}{path_and_query}",
            leader.api_addr.trim_end_matches('/')
        ));
    }
    HttpError::new(
        503,
        "the active node changed while the request was forwarded to it; it may or may not \
         have been applied: retry",
    )
    .into_response()
}

/// Methods that change nothing (Vault's `LIST` included).
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || method.as_str() == "LIST"
}

fn redirect_to(target: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn target_url(leader_api_addr: &str, request: &Request) -> String {
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{}{path_and_query}", leader_api_addr.trim_end_matches('/'))
}

/// Sends requests on to the active node over kept-alive connections.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    client: reqwest::Client,
}

impl Forwarder {
    /// A forwarder with its own connection pool. An `https` active node is
    /// verified against the usual roots plus the PEM bundle named by
    /// `VAULT_CACERT`, if set (a cluster with a private CA).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when `VAULT_CACERT` cannot be read or the HTTP
    /// client cannot be built.
    pub(crate) fn new() -> Result<Self, Error> {
        let fail = |message: String| Error::Backend {
            what: "the request forwarder (standby to active node)".into(),
            message,
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        if let Some(path) = std::env::var_os("VAULT_CACERT").filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path)
                .map_err(|e| fail(format!("reading VAULT_CACERT {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fail(format!("VAULT_CACERT {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| fail(e.to_string()))?;
        Ok(Self { client })
    }

    /// The pooled client with the forwarder's TLS trust (`VAULT_CACERT`),
    /// for the other calls between nodes (a standby's echo, the active
    /// node asking a silent standby whether it is sealed), so every
    /// node-to-node call trusts the same CA.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Forwards `request` to the active node at `leader_api_addr` and
    /// returns its answer; when the request cannot be delivered,
    /// `Err` with a 307 to the active node instead (the client still has
    /// the body to send), so the caller can count the failure.
    pub(crate) async fn forward(
        &self,
        leader_api_addr: &str,
        request: Request,
        client: Option<SocketAddr>,
    ) -> Result<Response, Response> {
        let url = target_url(leader_api_addr, &request);
        let has_body = request.headers().contains_key(header::CONTENT_LENGTH)
            || request.headers().contains_key(header::TRANSFER_ENCODING);
        let mut headers = request.headers().clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.insert(
            HeaderName::from_static(FORWARDED_HEADER),
            HeaderValue::from_static("1"),
        );
        if let Some(client) = client {
            append_forwarded_for(&mut headers, client);
        }
        let mut outgoing = self
            .client
            .request(request.method().clone(), &url)
            .headers(headers);
        // Without a body there is nothing to stream (and no chunked
        // encoding on a GET).
        if has_body {
            outgoing = outgoing.body(reqwest::Body::wrap_stream(
                request.into_body().into_data_stream(),
            ));
        }
        match outgoing.send().await {
            Ok(answer) => Ok(relay(answer)),
            Err(err) => {
                tracing::warn!(
                    %url,
                    error = %describe(&err),
                    "forwarding to the active node failed; answering with a redirect to it"
                );
                Err(redirect_to(&url))
            }
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The active node's answer, as it came, minus hop-by-hop headers.
fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let mut headers = answer.headers().clone();
    strip_hop_by_hop(&mut headers);
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_local_paths_are_the_unauthenticated_node_endpoints() {
        for local in [
            "sys/health",
            "sys/seal-status",
            "sys/leader",
            "sys/unseal",
            "sys/init",
            "sys/metrics",
        ] {
            assert!(is_node_local(local), "{local}");
        }
        for forwarded in [
            "sys/step-down",
            "sys/rotate",
            "sys/mounts",
            "secret/data/x",
            "auth/token/lookup-self",
            "sys/rekey/init",
        ] {
            assert!(!is_node_local(forwarded), "{forwarded}");
        }
    }

    #[test]
    fn redirects_keep_path_and_query() {
        let request = Request::builder()
            .uri("/v1/secret/data/a%20b?version=2")
            .body(Body::empty())
            .unwrap();
        let response = redirect("http://10.0.0.2:8200/", &request);
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "http://10.0.0.2:8200/v1/secret/data/a%20b?version=2"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_the_client_appended() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-vault-token", HeaderValue::from_static("t"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        strip_hop_by_hop(&mut headers);
        append_forwarded_for(&mut headers, "10.1.2.3:5555".parse().unwrap());
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key("x-private"));
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
        assert_eq!(headers["x-vault-token"], "t");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
    }

    /// An "active node" that echoes what it received.
    async fn echo_server() -> String {
        async fn echo(request: Request) -> Response {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::CREATED;
            let seen = response.headers_mut();
            for name in [
                "x-forwarded-for",
                "x-vault-token",
                FORWARDED_HEADER,
                "content-type",
            ] {
                if let Some(v) = parts.headers.get(name) {
                    seen.insert(
                        HeaderName::from_bytes(format!("x-seen-{name}").as_bytes()).unwrap(),
                        v.clone(),
                    );
                }
            }
            seen.insert(
                "x-seen-uri",
                HeaderValue::from_str(&parts.uri.to_string()).unwrap(),
            );
            seen.insert(
                "x-seen-method",
                HeaderValue::from_str(parts.method.as_str()).unwrap(),
            );
            response
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, axum::Router::new().fallback(echo)).await;
        });
        base
    }

    #[tokio::test]
    async fn forwarding_passes_method_path_headers_and_body_and_relays_the_answer() {
        let active = echo_server().await;
        let forwarder = Forwarder::new().unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(b"{\"a\":".to_vec()), Ok(b"1}".to_vec())];
        let request = Request::builder()
            .method("PUT")
            .uri("/v1/secret/data/x?cas=0")
            .header("x-vault-token", "s.token")
            .header("content-type", "application/json")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::CONNECTION, "keep-alive")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let response = forwarder
            .forward(&active, request, Some("192.0.2.7:4242".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let h = response.headers().clone();
        assert_eq!(h["x-seen-method"], "PUT");
        assert_eq!(h["x-seen-uri"], "/v1/secret/data/x?cas=0");
        assert_eq!(h["x-seen-x-vault-token"], "s.token");
        assert_eq!(h["x-seen-x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-seen-content-type"], "application/json");
        assert!(h.contains_key(format!("x-seen-{FORWARDED_HEADER}").as_str()));
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn an_unreachable_active_node_means_a_redirect() {
        // A reserved port: nobody listens there.
        let port = testkit::reserve_port();
        let closed = format!("127.0.0.1:{}", port.get());
        let request = Request::builder()
            .uri("/v1/secret/data/x")
            .body(Body::empty())
            .unwrap();
        let response = Forwarder::new()
            .unwrap()
            .forward(&format!("http://{closed}"), request, None)
            .await
            .unwrap_err();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            format!("http://{closed}/v1/secret/data/x").as_str()
        );
    }

    fn standby_of(api_addr: Option<&str>) -> NodeState {
        NodeState {
            initialized: true,
            sealed: false,
            mode: HaMode::Standby {
                leader: api_addr.map(|a| LeaderAddress {
                    api_addr: a.to_owned(),
                    cluster_addr: String::new(),
                }),
            },
        }
    }

    #[tokio::test]
    async fn a_forward_is_abandoned_only_when_the_active_node_changes() {
        use futures::FutureExt as _;
        let old = LeaderAddress {
            api_addr: "http://10.0.0.1:8200".into(),
            cluster_addr: String::new(),
        };
        let (states, mut changes) = watch::channel(standby_of(Some("http://10.0.0.1:8200")));
        assert_eq!(
            leader_changed(&mut changes, &old, Duration::ZERO).now_or_never(),
            None
        );
        for now in [
            standby_of(Some("http://10.0.0.2:8200")),
            standby_of(None),
            NodeState {
                mode: HaMode::Active,
                ..standby_of(None)
            },
            NodeState {
                sealed: true,
                ..standby_of(Some("http://10.0.0.1:8200"))
            },
        ] {
            states.send_replace(now.clone());
            assert_eq!(
                leader_changed(&mut changes, &old, Duration::ZERO).await,
                now
            );
        }
    }

    #[test]
    fn an_abandoned_read_goes_to_the_new_active_node_and_anything_else_is_retried() {
        let new = standby_of(Some("http://10.0.0.2:8200/"));
        let list = Method::from_bytes(b"LIST").unwrap();
        for read in [Method::GET, list] {
            let answer = abandoned(&read, "/v1/kv/a?x=1", &new);
            assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(
                answer.headers()[header::LOCATION],
                "http://10.0.0.2:8200/v1/kv/a?x=1"
            );
        }
        for write in [Method::PUT, Method::POST, Method::DELETE] {
            let answer = abandoned(&write, "/v1/kv/a", &new);
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let nobody = abandoned(&Method::GET, "/v1/kv/a", &standby_of(None));
        assert_eq!(nobody.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_no_forwarding_header_means_redirect_when_set() {
        let mut headers = HeaderMap::new();
        assert!(!wants_redirect(&headers));
        headers.insert(NO_FORWARDING_HEADER, HeaderValue::from_static("true"));
        assert!(wants_redirect(&headers));
    }
}
