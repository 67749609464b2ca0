//! A minimal, strict stand-in for the Kubernetes API server on loopback:
//! just the two pod calls `service_registration "kubernetes"` makes, held
//! to the API server's rules so a wrong request fails here as it would in
//! a cluster.
//!
//! * HTTPS with its own CA; `ca.crt` and `token` are written to a service
//!   account directory like the one Kubernetes mounts in a pod.
//! * `Authorization: Bearer <token>` required (401 otherwise); the token
//!   can be rotated.
//! * `GET /api/v1/namespaces/{ns}/pods/{name}`: the pod, or 404.
//! * `PATCH` of the same path: only `Content-Type: application/json-patch+json`
//!   (415 otherwise); a body that is not an RFC 6902 patch is a 400
//!   BadRequest, an operation that does not apply (replace or remove of a
//!   missing member, add under a missing parent, a failed test) a 422, and
//!   labels that are not valid label values a 422 Invalid: the API
//!   server's answers. Every accepted patch is recorded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde_json::{Map, Value, json};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One accepted patch: the operations and the pod's labels afterwards.
#[derive(Debug, Clone)]
pub struct Patch {
    pub ops: Value,
    pub labels: Map<String, Value>,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    pods: HashMap<(String, String), Value>,
    patches: Vec<Patch>,
    rejected: Vec<(u16, String)>,
    /// Answer the next N patches with this status.
    fail_patches: Option<(u16, usize)>,
}

/// The running fake API server.
pub struct KubeApi {
    pub addr: SocketAddr,
    pub service_account_dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
    /// The harness's reservation of `addr`'s port, held while it serves.
    _port: testkit::Port,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl KubeApi {
    /// Starts the server on a reserved loopback port, writing `ca.crt` and
    /// `token` into `dir`.
    pub async fn start(dir: &Path) -> KubeApi {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.cert.pem()).unwrap();
        let token = "sa-token-1".to_owned();
        std::fs::write(dir.join("token"), &token).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (listener, port) = testkit::ports::listen_tokio();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            token,
            ..Inner::default()
        }));
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                axum::routing::any(pod),
            )
            .fallback(|| async {
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                });
            }
        });
        KubeApi {
            addr,
            service_account_dir: dir.to_path_buf(),
            inner,
            task,
            _port: port,
        }
    }

    /// Adds a pod; `labels: None` makes one without a labels map.
    pub fn add_pod(&self, namespace: &str, name: &str, labels: Option<Value>) {
        let mut metadata =
            json!({"name": name, "namespace": namespace, "uid": "0b1c", "resourceVersion": "1"});
        if let Some(labels) = labels {
            metadata["labels"] = labels;
        }
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": {"containers": [{"name": "strongroom", "image": "strongroom:0.1.0"}]}});
        self.inner
            .lock()
            .unwrap()
            .pods
            .insert((namespace.to_owned(), name.to_owned()), pod);
    }

    /// The pod's labels now (`None`: no labels map).
    pub fn labels(&self, namespace: &str, name: &str) -> Option<Map<String, Value>> {
        let inner = self.inner.lock().unwrap();
        inner.pods[&(namespace.to_owned(), name.to_owned())]["metadata"]["labels"]
            .as_object()
            .cloned()
    }

    /// Every accepted patch so far.
    pub fn patches(&self) -> Vec<Patch> {
        self.inner.lock().unwrap().patches.clone()
    }

    /// Every rejected request so far: (status, message).
    pub fn rejected(&self) -> Vec<(u16, String)> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Answers the next `count` patches with `code` (an outage).
    pub fn fail_patches(&self, code: u16, count: usize) {
        self.inner.lock().unwrap().fail_patches = Some((code, count));
    }

    /// A new token: the old one gets 401 from now on; the file has the
    /// new one (as kubelet rotates projected tokens).
    pub fn rotate_token(&self, token: &str) {
        std::fs::write(self.service_account_dir.join("token"), token).unwrap();
        self.inner.lock().unwrap().token = token.to_owned();
    }

    /// `https://127.0.0.1:<port>` with a client trusting this server.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.service_account_dir.join("ca.crt")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    /// The environment a pod's container would have.
    pub fn pod_env(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            (
                "KUBERNETES_SERVICE_PORT".into(),
                self.addr.port().to_string(),
            ),
            ("VAULT_K8S_NAMESPACE".into(), namespace.into()),
            ("VAULT_K8S_POD_NAME".into(), name.into()),
            (
                "STRONGROOM_K8S_SERVICE_ACCOUNT_DIR".into(),
                self.service_account_dir.display().to_string(),
            ),
        ]
    }
}

async fn pod(
    State(inner): State<Arc<Mutex<Inner>>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    let reject = |inner: &mut Inner, code: u16, reason: &str, message: String| {
        inner.rejected.push((code, message.clone()));
        status(code, reason, message)
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(inner.token.as_str()) {
        return reject(&mut inner, 401, "Unauthorized", "Unauthorized".into());
    }
    let key = (ns.clone(), name.clone());
    if !inner.pods.contains_key(&key) {
        return reject(
            &mut inner,
            404,
            "NotFound",
            format!("pods \"{name}\" not found"),
        );
    }
    match method {
        Method::GET => Json(inner.pods[&key].clone()).into_response(),
        Method::PATCH => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if content_type != "application/json-patch+json" {
                return reject(
                    &mut inner,
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
                    ),
                );
            }
            if let Some((code, left)) = inner.fail_patches {
                inner.fail_patches = (left > 1).then(|| (code, left - 1));
                return reject(&mut inner, code, "InternalError", "injected failure".into());
            }
            let ops = match parse_patch(&body) {
                Ok(ops) => ops,
                Err(message) => return reject(&mut inner, 400, "BadRequest", message),
            };
            let mut pod = inner.pods[&key].clone();
            for op in &ops {
                if let Err(message) = apply(&mut pod, op) {
                    return reject(&mut inner, 422, "", message);
                }
            }
            if let Err(message) = validate_labels(&pod) {
                return reject(
                    &mut inner,
                    422,
                    "Invalid",
                    format!("Pod \"{name}\" is invalid: {message}"),
                );
            }
            let version: u64 = pod["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            pod["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            let labels = pod["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            inner.patches.push(Patch {
                ops: Value::Array(ops),
                labels,
            });
            inner.pods.insert(key, pod.clone());
            Json(pod).into_response()
        }
        _ => reject(
            &mut inner,
            405,
            "MethodNotAllowed",
            format!("method {method} is not supported here"),
        ),
    }
}

use axum::Json;

/// Decodes an RFC 6902 document: an array of operations, each with a
/// known `op`, a JSON-pointer `path`, and `value` / `from` where needed.
fn parse_patch(body: &[u8]) -> Result<Vec<Value>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("json: {e}"))?;
    let Value::Array(ops) = doc else {
        return Err("json: cannot unmarshal object into Go value of type jsonpatch.Patch".into());
    };
    for op in &ops {
        let Some(obj) = op.as_object() else {
            return Err("json: cannot unmarshal into Go value of type jsonpatch.Operation".into());
        };
        let kind = obj.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = obj.get("path").and_then(Value::as_str);
        let Some(path) = path else {
            return Err(format!("operation {kind:?} has no path"));
        };
        pointer(path)?;
        match kind {
            "add" | "replace" | "test" if !obj.contains_key("value") => {
                return Err(format!("operation {kind:?} at {path} has no value"));
            }
            "add" | "replace" | "test" | "remove" => {}
            "move" | "copy" => {
                let from = obj
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("missing from")?;
                pointer(from)?;
            }
            other => return Err(format!("Unexpected kind: {other:?}")),
        }
    }
    Ok(ops)
}

/// Splits a JSON pointer (RFC 6901) into unescaped tokens.
fn pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "invalid JSON pointer {path:?}: it must start with /"
        ));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::new();
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(format!("invalid escape in JSON pointer {path:?}")),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn parent<'a>(doc: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut at = doc;
    for t in tokens {
        at = match at {
            Value::Object(map) => map.get_mut(t),
            Value::Array(items) => t.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    }
    Ok(at)
}

fn apply(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op["op"].as_str().unwrap_or_default();
    let path = op["path"].as_str().unwrap_or_default();
    match kind {
        "add" => add(doc, path, op["value"].clone()),
        "remove" => remove(doc, path).map(drop),
        "replace" => {
            remove(doc, path).map_err(|_| {
                format!("replace operation does not apply: doc is missing key: {path}")
            })?;
            add(doc, path, op["value"].clone())
        }
        "test" => {
            let tokens = pointer(path)?;
            let found = parent(doc, &tokens, path)?;
            if *found == op["value"] {
                Ok(())
            } else {
                Err(format!("testing value {path} failed: test failed"))
            }
        }
        "move" => {
            let value = remove(doc, op["from"].as_str().unwrap_or_default())?;
            add(doc, path, value)
        }
        "copy" => {
            let from = op["from"].as_str().unwrap_or_default();
            let value = parent(doc, &pointer(from)?, from)?.clone();
            add(doc, path, value)
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut tokens = pointer(path)?;
    let Some(last) = tokens.pop() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, &tokens, path)? {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| {
                        format!("add operation does not apply: index out of bounds: {path}")
                    })?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: {path:?}"
        )),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let mut tokens = pointer(path)?;
    let last = tokens.pop().ok_or("remove of the whole document")?;
    let missing = || format!("remove operation does not apply: doc is missing key: {path}");
    match parent(doc, &tokens, path).map_err(|_| missing())? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i))
            .ok_or_else(missing),
        _ => Err(missing()),
    }
}

/// Label values: strings of at most 63 characters, alphanumerics with
/// `-`, `_`, `.` inside (the API server's validation).
fn validate_labels(pod: &Value) -> Result<(), String> {
    let Some(labels) = pod["metadata"].get("labels") else {
        return Ok(());
    };
    let Some(labels) = labels.as_object() else {
        return Err("metadata.labels: Invalid value: must be a map of strings".into());
    };
    for (key, value) in labels {
        let Some(value) = value.as_str() else {
            return Err(format!(
                "metadata.labels: Invalid value: {value}: label values must be strings"
            ));
        };
        let ok = value.len() <= 63
            && (value.is_empty()
                || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && value.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))));
        if !ok {
            return Err(format!(
                "metadata.labels: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.' (label {key})"
            ));
        }
    }
    Ok(())
}
