//! The Vault-compatible HTTP API (`/v1/...`).
//!
//! On an HA standby, requests that belong to the active node are first
//! forwarded there (or redirected with 307, see [`forward`]). Otherwise
//! one dispatcher reads every request: it checks the body size (413 over
//! the listener's `max_request_size`), extracts the token (`X-Vault-Token`
//! or `Authorization: Bearer`), then hands `sys/*` endpoints the core serves
//! itself to [`sys`] and everything else (KV engines, `sys/mounts`,
//! `auth/token/*`, `sys/internal/ui/mounts/*`) to the core's logical router
//! as a [`LogicalRequest`]. Each request is timed for `sys/metrics`
//! (`vault.core.handle_request`).
//!
//! A single dispatcher (rather than one axum route per path) keeps Vault's
//! `LIST` method, `?list=true`, JSON error bodies and request timing in
//! one place.

mod forward;
mod ha_status;
mod health;
mod response;
mod sys;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::Value;
use strongroom::logical::{LogicalRequest, Operation};
use strongroom::{Core, HaMode};
use zeroize::Zeroizing;

use crate::metrics::Metrics;
pub(crate) use forward::Forwarder;
use response::HttpError;

/// How long a standby that knows no active node (a failover under way)
/// waits for one before answering 503.
const LEADER_WAIT: Duration = Duration::from_secs(2);

/// What every request handler needs.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    /// The core behind the API.
    pub(crate) core: Core,
    /// The server's metrics, shared by every listener.
    pub(crate) metrics: Arc<Metrics>,
    /// This listener's body size limit in bytes.
    pub(crate) max_request_size: usize,
    /// Whether `sys/metrics` is served without a token on this listener.
    pub(crate) unauthenticated_metrics: bool,
    /// Sends a standby's requests on to the active node.
    pub(crate) forwarder: Forwarder,
}

/// The axum application for one listener.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .fallback(|state, request| to_completion(dispatch(state, request)))
        .with_state(state)
}

/// Runs a request in a task of its own, so that a client hanging up does
/// not cancel it halfway. Hyper drops a connection's futures when the
/// client goes away; dropped inside the core, a request would stop at
/// whatever `.await` it had reached, between two steps that belong
/// together (a write sent but not yet in the read cache, a token stored
/// but not its accessor). Vault's handlers, too, finish what they started.
/// A handler that panics answers 500 instead of taking the connection down.
async fn to_completion(request: impl Future<Output = Response> + Send + 'static) -> Response {
    match tokio::spawn(request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(error = %err, "a request handler failed");
            HttpError::new(500, "internal error").into_response()
        }
    }
}

/// A parsed request, what the handlers see.
pub(crate) struct ApiRequest {
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path below `/v1/`, percent-decoded.
    pub(crate) path: String,
    /// Query parameters (last value wins).
    pub(crate) query: BTreeMap<String, String>,
    /// The client token, if one was sent.
    pub(crate) token: Option<Zeroizing<String>>,
    /// The `Accept` header (`sys/metrics` picks its format by it).
    pub(crate) accept: Option<String>,
    /// The raw body.
    pub(crate) body: Bytes,
    /// A fresh id for this request (Vault's `request_id`).
    pub(crate) request_id: String,
    /// The client's address, when the listener knows it.
    pub(crate) remote_address: Option<std::net::SocketAddr>,
}

impl ApiRequest {
    /// The token or `""` (the core answers 403 for an empty one).
    pub(crate) fn token_str(&self) -> &str {
        self.token.as_ref().map_or("", |t| t.as_str())
    }

    /// Parses the body into a typed request (empty body = defaults).
    ///
    /// # Errors
    ///
    /// 400 when the body is not JSON or a field has the wrong type.
    pub(crate) fn parse<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, HttpError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::bad_request(format!("failed to parse JSON input: {e}")))
    }

    /// The body as a JSON object for the logical router (`None` if empty).
    ///
    /// # Errors
    ///
    /// 400 when the body is not a JSON object.
    fn data(&self) -> Result<Option<serde_json::Map<String, Value>>, HttpError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(HttpError::bad_request(
                "failed to parse JSON input: the request body must be a JSON object",
            )),
            Err(e) => Err(HttpError::bad_request(format!(
                "failed to parse JSON input: {e}"
            ))),
        }
    }
}

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let request = match standby_route(&state, request).await {
        Ok(request) => request,
        Err(forwarded) => {
            state.metrics.handle_request.since(start);
            state
                .metrics
                .requests
                .record(&method, forwarded.status().as_u16());
            return forwarded;
        }
    };
    let (timed, response) = match read_request(&state, request).await {
        Ok(api) => {
            // Probes and scrapes arrive every few seconds and would drown
            // the request latencies operators look at.
            let timed = !matches!(api.path.as_str(), "sys/health" | "sys/metrics");
            let response = match route_request(&state, api).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            };
            (timed, response)
        }
        Err(err) => (true, err.into_response()),
    };
    if timed {
        state.metrics.handle_request.since(start);
    }
    state
        .metrics
        .requests
        .record(&method, response.status().as_u16());
    response
}

/// On an HA standby, sends what belongs to the active node there: forwarded,
/// or redirected with 307 (see [`forward`]). `Ok` hands the request back
/// to be served here: this node serves, is sealed, the endpoint describes
/// this node, or no active node is known (the core then answers 503).
async fn standby_route(state: &AppState, request: Request) -> Result<Request, Response> {
    let Some(path) = request.uri().path().strip_prefix("/v1/") else {
        return Ok(request);
    };
    if forward::is_node_local(path) {
        return Ok(request);
    }
    let mut node = state.core.node_state();
    if matches!(node.mode, HaMode::Standby { leader: None }) && !node.sealed {
        // A failover is under way: give the next active node a moment.
        let mut changes = state.core.watch_node_state();
        let _ = tokio::time::timeout(
            LEADER_WAIT,
            changes.wait_for(|s| s.sealed || !matches!(s.mode, HaMode::Standby { leader: None })),
        )
        .await;
        node = state.core.node_state();
    }
    let leader = match node.mode {
        HaMode::Standby {
            leader: Some(leader),
        } if !node.sealed => leader,
        _ => return Ok(request),
    };
    if forward::wants_redirect(request.headers()) || forward::was_forwarded(request.headers()) {
        return Err(forward::redirect(&leader.api_addr, &request));
    }
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    // Subscribed before sending: a change from here on abandons the forward.
    let mut changes = state.core.watch_node_state();
    let start = Instant::now();
    let answer = tokio::select! {
        biased;
        answer = state.forwarder.forward(&leader.api_addr, request, client) => answer,
        now = forward::leader_changed(&mut changes, &leader, forward::LEADER_CHANGE_GRACE) => {
            tracing::warn!(
                old = %leader.api_addr,
                grace = ?forward::LEADER_CHANGE_GRACE,
                "the active node changed while a request was forwarded to it and it did not \
                 answer within the grace; abandoning the forward"
            );
            Err(forward::abandoned(&method, &path_and_query, &now))
        }
    };
    state.metrics.forward.since(start);
    Err(answer.unwrap_or_else(|redirect| {
        state.metrics.forward_errors.inc();
        redirect
    }))
}

/// Finds the client token: `X-Vault-Token`, else `Authorization: Bearer`.
fn extract_token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    if let Some(value) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if !value.is_empty() {
            return Some(Zeroizing::new(value.to_owned()));
        }
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(Zeroizing::new(token.trim().to_owned()))
    } else {
        None
    }
}

fn parse_query(query: Option<&str>) -> Result<BTreeMap<String, String>, HttpError> {
    let Some(query) = query else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| HttpError::bad_request("the query string is not valid UTF-8"))
        };
        out.insert(decode(key)?, decode(value)?);
    }
    Ok(out)
}

async fn read_request(state: &AppState, request: Request) -> Result<ApiRequest, HttpError> {
    let (parts, body) = request.into_parts();
    let remote_address = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    let raw_path = parts.uri.path();
    let Some(rest) = raw_path.strip_prefix("/v1/") else {
        return Err(HttpError::not_found());
    };
    let path = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| HttpError::bad_request("the request path is not valid UTF-8"))?;
    let query = parse_query(parts.uri.query())?;
    let limit = state.max_request_size;
    let too_large = || {
        HttpError::new(
            413,
            format!(
                "http: request body too large (the limit is {limit} bytes; see the listener's max_request_size)"
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let body = read_body(body, limit)
        .await
        .map_err(|e| e.unwrap_or_else(too_large))?;
    Ok(ApiRequest {
        method: parts.method,
        path,
        query,
        token: extract_token(&parts.headers),
        accept: parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        request_id: uuid::Uuid::new_v4().to_string(),
        remote_address,
    })
}

/// Reads the body up to `limit` bytes; `Err(None)` means over the limit.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Option<HttpError>> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Some(HttpError::bad_request(format!(
                "reading the request body failed: {e}"
            )))
        })?;
        let total = first.as_ref().map_or(0, Bytes::len) + buffer.len() + chunk.len();
        if total > limit {
            return Err(None);
        }
        match first.take() {
            None if buffer.is_empty() => first = Some(chunk),
            None => buffer.extend_from_slice(&chunk),
            Some(previous) => {
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buffer)))
}

async fn route_request(state: &AppState, request: ApiRequest) -> Result<Response, HttpError> {
    if let Some(response) = sys::handle(state, &request).await? {
        return Ok(response);
    }
    logical(state, request).await
}

/// Everything that is not a core `sys/*` endpoint goes through the router.
async fn logical(state: &AppState, request: ApiRequest) -> Result<Response, HttpError> {
    let mut query = request.query.clone();
    let list_param = query
        .remove("list")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "TRUE" | "True"));
    let operation = match request.method.as_str() {
        "GET" if list_param => Operation::List,
        "GET" => Operation::Read,
        "LIST" => Operation::List,
        "PUT" | "POST" => Operation::Update,
        "DELETE" => Operation::Delete,
        "PATCH" => Operation::Patch,
        _ => return Err(HttpError::method_not_allowed()),
    };
    if request.path.is_empty() {
        return Err(HttpError::not_found());
    }
    let data = match operation {
        Operation::Update | Operation::Patch | Operation::Create => request.data()?,
        // Vault ignores bodies on reads, lists and deletes.
        _ => None,
    };
    let mut logical_request =
        LogicalRequest::new(operation, request.path.clone()).with_id(request.request_id.clone());
    logical_request.data = data;
    logical_request.query = query;
    logical_request.token = request.token.as_ref().map(|t| t.as_str().to_owned());
    logical_request.remote_address = request.remote_address.map(|a| a.to_string());
    let answer = state.core.handle(logical_request).await?;
    match answer.to_json(&request.request_id) {
        None => Ok(response::no_content()),
        Some(body) => Ok(response::json_response(answer.status, &body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_request_whose_client_went_away_still_finishes() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let request = async move {
            let _ = released.await;
            done.store(true, Ordering::SeqCst);
            response::no_content()
        };
        // The client hangs up while the request waits halfway: hyper
        // drops the future.
        let running = tokio::spawn(to_completion(request));
        tokio::task::yield_now().await;
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        testkit::wait::until(
            "the abandoned request finished",
            Duration::from_secs(10),
            || async { finished.load(Ordering::SeqCst) },
        )
        .await;
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        let response = to_completion(async { panic!("handler bug") }).await;
        assert_eq!(response.status(), 500);
    }

    #[test]
    fn tokens_come_from_either_header() {
        let mut headers = HeaderMap::new();
        assert!(extract_token(&headers).is_none());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(extract_token(&headers).unwrap().as_str(), "abc");
        headers.insert("x-vault-token", HeaderValue::from_static("xyz"));
        assert_eq!(extract_token(&headers).unwrap().as_str(), "xyz");
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(extract_token(&basic).is_none());
    }

    #[test]
    fn query_strings_decode() {
        let q = parse_query(Some("list=true&version=2&a%20b=c+d&flag")).unwrap();
        assert_eq!(q["list"], "true");
        assert_eq!(q["version"], "2");
        assert_eq!(q["a b"], "c d");
        assert_eq!(q["flag"], "");
        assert!(parse_query(Some("x=%FF")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn query_parsing_never_panics(query in ".{0,64}") {
            let _ = parse_query(Some(&query));
        }

        #[test]
        fn health_overrides_never_panic(key in "[a-z]{0,16}", value in ".{0,8}") {
            let query = BTreeMap::from([(key, value)]);
            let _ = health::HealthCodes::from_query(&query);
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let body = Body::from(vec![b'a'; 100]);
        assert!(matches!(read_body(body, 99).await, Err(None)));
        let body = Body::from(vec![b'a'; 100]);
        assert_eq!(read_body(body, 100).await.unwrap().len(), 100);
    }
}
