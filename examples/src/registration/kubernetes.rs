//! `service_registration "kubernetes"`: the pod's labels say what the node
//! is, as Vault sets them.
//!
//! | label | value |
//! |---|---|
//! | `vault-active` | `"true"` on the node that serves (the HA lock holder) |
//! | `vault-sealed` | `"true"` while sealed |
//! | `vault-initialized` | `"true"` once initialized |
//! | `vault-perf-standby` | always `"false"` (an Enterprise feature) |
//! | `vault-version` | the server's version, set once |
//!
//! The chart's `-active` and `-standby` Services select on `vault-active`,
//! so clients always reach the leader; `kubectl get pods -L vault-active,vault-sealed`
//! shows the cluster at a glance.
//!
//! Two API calls, with the pod's service account (in-cluster token and CA
//! files): `GET` the pod, then `PATCH` it with an RFC 6902 JSON patch. A
//! pod without a labels map gets one `add` of the whole map; otherwise each
//! label is its own `add` operation (which sets a member whether or not it
//! exists). A failed patch is retried every 5 s with the latest values (a
//! value that changed meanwhile is never written stale); the token file is
//! read again after a 401 or 403, since projected tokens rotate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{NodeStatus, ServiceRegistration};
use crate::config::KubernetesRegistrationConfig;
use crate::error::Error;

/// Vault's label names.
const ACTIVE: &str = "vault-active";
const SEALED: &str = "vault-sealed";
const INITIALIZED: &str = "vault-initialized";
const PERF_STANDBY: &str = "vault-perf-standby";
const VERSION: &str = "vault-version";

/// Where Kubernetes mounts the service account's token and CA.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Vault retries failed label patches every 5 s.
const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// How long shutdown waits for the final labels to be written.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Why one API call failed.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("reading the service account token {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("GET {url} answered a body that is not a pod: {reason}")]
    NotAPod { url: String, reason: String },
}

/// The in-cluster API client: just what the two calls need.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    pod_url: String,
    token_path: PathBuf,
    token: Mutex<String>,
}

impl Api {
    fn read_token(&self) -> Result<String, ApiError> {
        std::fs::read_to_string(&self.token_path)
            .map(|t| t.trim().to_owned())
            .map_err(|source| ApiError::Token {
                path: self.token_path.display().to_string(),
                source,
            })
    }

    fn current_token(&self) -> String {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn call(&self, method: Method, patch: Option<&Value>) -> Result<Value, ApiError> {
        let mut retried = false;
        loop {
            let token = self.current_token();
            let mut request = self
                .http
                .request(method.clone(), &self.pod_url)
                .bearer_auth(&token)
                .header("Accept", "application/json");
            if let Some(patch) = patch {
                request = request
                    .header("Content-Type", "application/json-patch+json")
                    .body(patch.to_string());
            }
            let transport = |source| ApiError::Transport {
                method: method.clone(),
                url: self.pod_url.clone(),
                source,
            };
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let body = response.bytes().await.map_err(transport)?;
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| ApiError::NotAPod {
                    url: self.pod_url.clone(),
                    reason: e.to_string(),
                });
            }
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !retried {
                // Projected service account tokens rotate: read the file
                // again and retry once if it changed.
                let fresh = self.read_token()?;
                if fresh != token {
                    *self.token.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
                    retried = true;
                    continue;
                }
            }
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
            return Err(ApiError::Status {
                method,
                url: self.pod_url.clone(),
                status,
                message,
            });
        }
    }
}

fn labels(status: NodeStatus) -> BTreeMap<&'static str, String> {
    let flag = |b: bool| b.to_string();
    BTreeMap::from([
        (ACTIVE, flag(status.active)),
        (SEALED, flag(status.sealed)),
        (INITIALIZED, flag(status.initialized)),
        (PERF_STANDBY, flag(false)),
        (VERSION, strongroom::VERSION.to_owned()),
    ])
}

/// The patch that sets `want` on a pod, given the labels written last
/// (`None`: the pod as read from the API, first time).
fn patch_for(
    want: &BTreeMap<&'static str, String>,
    written: &BTreeMap<&'static str, String>,
) -> Vec<Value> {
    want.iter()
        .filter(|(k, v)| written.get(*k) != Some(*v))
        .map(|(k, v)| json!({"op": "add", "path": format!("/metadata/labels/{k}"), "value": v}))
        .collect()
}

/// Labels the pod and keeps its labels in step with the node.
#[derive(Debug)]
pub(crate) struct KubernetesRegistration {
    desired: watch::Sender<NodeStatus>,
    /// Set by `shutdown`: later notices are ignored, so a status read
    /// just before shutdown cannot overwrite the shut-down labels.
    closed: AtomicBool,
    applied: watch::Receiver<Option<NodeStatus>>,
    stop: CancellationToken,
}

impl KubernetesRegistration {
    /// Checks the settings, reads the service account's CA and token, and
    /// starts labelling the pod with `status` in the background (an API
    /// server that is down is retried, never failing the start).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the namespace or pod name is missing (set
    /// `VAULT_K8S_NAMESPACE` / `VAULT_K8S_POD_NAME` or the stanza), the
    /// process is not in a cluster (`KUBERNETES_SERVICE_HOST` unset), or
    /// the CA or token file cannot be read.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the loop is spawned on it).
    pub(crate) fn start(
        config: &KubernetesRegistrationConfig,
        status: NodeStatus,
    ) -> Result<Self, Error> {
        let fail = |message: String| Error::Backend {
            what: format!(
                "service_registration \"kubernetes\" (config line {})",
                config.line
            ),
            message,
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let namespace = env("VAULT_K8S_NAMESPACE")
            .or_else(|| config.namespace.clone())
            .ok_or_else(|| fail("no namespace: set VAULT_K8S_NAMESPACE (the chart sets it from metadata.namespace) or namespace in the stanza".into()))?;
        let pod_name = env("VAULT_K8S_POD_NAME")
            .or_else(|| config.pod_name.clone())
            .ok_or_else(|| fail("no pod name: set VAULT_K8S_POD_NAME (the chart sets it from metadata.name) or pod_name in the stanza".into()))?;
        let host = env("KUBERNETES_SERVICE_HOST").ok_or_else(|| {
            fail(
                "KUBERNETES_SERVICE_HOST is not set: this is not running in a Kubernetes pod"
                    .into(),
            )
        })?;
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".to_owned());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = env("STRONGROOM_K8S_SERVICE_ACCOUNT_DIR")
            .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from);
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path)
            .map_err(|e| fail(format!("reading the cluster CA {}: {e}", ca_path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| {
            fail(format!(
                "the cluster CA {} is not PEM: {e}",
                ca_path.display()
            ))
        })?;
        let mut http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        for cert in certs {
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| fail(format!("building the API client: {e}")))?;
        let segment = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let api = Api {
            http,
            pod_url: format!(
                "https://{host}:{port}/api/v1/namespaces/{}/pods/{}",
                segment(&namespace),
                segment(&pod_name)
            ),
            token_path: dir.join("token"),
            token: Mutex::new(String::new()),
        };
        let token = api.read_token().map_err(|e| fail(e.to_string()))?;
        *api.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
        tracing::info!(
            namespace,
            pod = pod_name,
            "labelling this pod with the node's status (service_registration \"kubernetes\")"
        );

        let (desired, wanted) = watch::channel(status);
        let (applied_tx, applied) = watch::channel(None);
        let stop = CancellationToken::new();
        let retry = config.retry_interval.unwrap_or(DEFAULT_RETRY);
        tokio::spawn(run(Arc::new(api), wanted, applied_tx, retry, stop.clone()));
        Ok(KubernetesRegistration {
            desired,
            closed: AtomicBool::new(false),
            applied,
            stop,
        })
    }
}

impl Drop for KubernetesRegistration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl ServiceRegistration for KubernetesRegistration {
    fn notify(&self, status: NodeStatus) {
        // Under the channel's lock, so it cannot interleave with shutdown.
        self.desired.send_if_modified(|current| {
            if self.closed.load(Ordering::SeqCst) || *current == status {
                return false;
            }
            *current = status;
            true
        });
    }

    async fn shutdown(&self) {
        self.desired.send_modify(|current| {
            self.closed.store(true, Ordering::SeqCst);
            *current = NodeStatus::SHUT_DOWN;
        });
        let mut applied = self.applied.clone();
        let done = applied.wait_for(|s| *s == Some(NodeStatus::SHUT_DOWN));
        if tokio::time::timeout(SHUTDOWN_WAIT, done).await.is_err() {
            tracing::warn!("the pod's labels could not be set to sealed before shutdown");
        }
        self.stop.cancel();
    }
}

/// The labelling loop: label the pod, then follow `wanted`, retrying
/// failures every `retry`.
async fn run(
    api: Arc<Api>,
    mut wanted: watch::Receiver<NodeStatus>,
    applied: watch::Sender<Option<NodeStatus>>,
    retry: Duration,
    stop: CancellationToken,
) {
    // The labels as last written; `None` until the pod was first labelled.
    let mut written: Option<BTreeMap<&'static str, String>> = None;
    loop {
        let status = *wanted.borrow_and_update();
        let want = labels(status);
        let result = match &written {
            None => label_first(&api, &want).await,
            Some(written) => {
                let ops = patch_for(&want, written);
                if ops.is_empty() {
                    Ok(())
                } else {
                    api.call(Method::PATCH, Some(&Value::Array(ops)))
                        .await
                        .map(drop)
                }
            }
        };
        let wait = match result {
            Ok(()) => {
                tracing::debug!(?status, "pod labels updated");
                written = Some(want);
                applied.send_replace(Some(status));
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?retry, "updating this pod's vault-* labels failed");
                Some(retry)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            changed = wanted.changed() => if changed.is_err() { return },
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Reads the pod and writes every label: one `add` of the map when the pod
/// has none, else one `add` per label.
async fn label_first(api: &Api, want: &BTreeMap<&'static str, String>) -> Result<(), ApiError> {
    let pod = api.call(Method::GET, None).await?;
    let metadata = pod.get("metadata").ok_or_else(|| ApiError::NotAPod {
        url: api.pod_url.clone(),
        reason: "no metadata".into(),
    })?;
    let ops = match metadata.get("labels") {
        Some(Value::Object(_)) => patch_for(want, &BTreeMap::new()),
        _ => vec![json!({"op": "add", "path": "/metadata/labels", "value": want})],
    };
    api.call(Method::PATCH, Some(&Value::Array(ops)))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_vaults() {
        let l = labels(NodeStatus {
            active: true,
            sealed: false,
            initialized: true,
        });
        assert_eq!(l[ACTIVE], "true");
        assert_eq!(l[SEALED], "false");
        assert_eq!(l[INITIALIZED], "true");
        assert_eq!(l[PERF_STANDBY], "false");
        assert_eq!(l[VERSION], strongroom::VERSION);
    }

    #[test]
    fn patches_carry_only_what_changed() {
        let before = labels(NodeStatus::SHUT_DOWN);
        let after = labels(NodeStatus {
            active: false,
            sealed: false,
            initialized: true,
        });
        let ops = patch_for(&after, &before);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/labels/vault-initialized", "value": "true"}),
                json!({"op": "add", "path": "/metadata/labels/vault-sealed", "value": "false"}),
            ]
        );
        assert!(patch_for(&after, &after).is_empty());
        assert_eq!(patch_for(&after, &BTreeMap::new()).len(), 5);
    }
}
