//! Vault-API calls against one node, for scenarios: raw calls plus the few
//! steps every scenario repeats (init, unseal, mount, KV, status waits).

use std::time::Duration;

use serde_json::{Value, json};

use crate::wait;

/// What `sys/init` returned.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitKeys {
    /// Unseal keys (base64); empty with an auto seal.
    pub keys_base64: Vec<String>,
    /// Recovery keys (base64); empty with Shamir.
    pub recovery_keys_base64: Vec<String>,
    /// The root token.
    pub root_token: String,
    /// The whole answer.
    pub body: Value,
}

/// An HTTP client for one node's `/v1/` API.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http(s)://127.0.0.1:<port>`.
    pub base: String,
    /// The underlying client (trusts the node's test CA in TLS mode).
    pub http: reqwest::Client,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Client {
    /// A client for `base`, trusting `ca_pem` in addition to the system
    /// roots when given.
    ///
    /// # Panics
    /// When the CA cannot be parsed.
    pub fn new(base: String, ca_pem: Option<&[u8]>) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // A standby's 307 is part of what tests check.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .unwrap_or_else(|e| panic!("testkit: node CA certificate: {e}"));
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"));
        Self { base, http }
    }

    /// One API call to `/v1/<path>`; the status and the JSON body (`Null`
    /// when empty, a JSON string when not JSON). Transport errors are
    /// `Err`.
    ///
    /// # Errors
    /// When the request cannot be sent or the answer not read.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.try_call_bytes(method, path, token, body).await
    }

    /// [`Client::try_call`] with a body of raw bytes (malformed JSON,
    /// oversized requests, …).
    ///
    /// # Errors
    /// When the request cannot be sent or the answer not read.
    pub async fn try_call_bytes(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}/v1/{path}", self.base);
        let method_ = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("method {method}: {e}"))?;
        let mut request = self.http.request(method_, &url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{method} {url}: body: {e}"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// [`Client::try_call`] that panics on transport errors.
    ///
    /// # Panics
    /// When the node cannot be reached.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET sys/health` with `query` (e.g. `"standbyok=true"`): the status.
    ///
    /// # Panics
    /// When the node cannot be reached.
    pub async fn health_code(&self, query: &str) -> u16 {
        let path = if query.is_empty() {
            "sys/health".to_owned()
        } else {
            format!("sys/health?{query}")
        };
        self.call("GET", &path, None, None).await.0
    }

    /// `GET sys/seal-status`.
    ///
    /// # Panics
    /// When the node cannot be reached or answers other than 200.
    pub async fn seal_status(&self) -> Value {
        let (code, body) = self.call("GET", "sys/seal-status", None, None).await;
        assert_eq!(code, 200, "seal-status: {body}");
        body
    }

    /// `PUT sys/init` with `params`; asserts 200.
    ///
    /// # Panics
    /// When init is refused.
    pub async fn init_with(&self, params: Value) -> InitKeys {
        let (code, body) = self.call("PUT", "sys/init", None, Some(params)).await;
        assert_eq!(code, 200, "init: {body}");
        InitKeys {
            keys_base64: strings(&body["keys_base64"]),
            recovery_keys_base64: strings(&body["recovery_keys_base64"]),
            root_token: body["root_token"].as_str().unwrap_or_default().to_owned(),
            body,
        }
    }

    /// Shamir init with `shares` / `threshold`.
    ///
    /// # Panics
    /// When init is refused.
    pub async fn init(&self, shares: u32, threshold: u32) -> InitKeys {
        self.init_with(json!({"secret_shares": shares, "secret_threshold": threshold}))
            .await
    }

    /// Auto-seal init with `shares` / `threshold` recovery keys.
    ///
    /// # Panics
    /// When init is refused.
    pub async fn init_recovery(&self, shares: u32, threshold: u32) -> InitKeys {
        self.init_with(json!({"recovery_shares": shares, "recovery_threshold": threshold}))
            .await
    }

    /// Submits keys until the node reports unsealed.
    ///
    /// # Panics
    /// When a key is refused or the node is still sealed after all.
    pub async fn unseal(&self, keys: &[String]) {
        for key in keys {
            let (code, body) = self
                .call("PUT", "sys/unseal", None, Some(json!({"key": key})))
                .await;
            assert_eq!(code, 200, "unseal: {body}");
            if body["sealed"] == json!(false) {
                return;
            }
        }
        panic!("still sealed after {} keys", keys.len());
    }

    /// Shamir init (shares/threshold) and unseal; returns the keys.
    ///
    /// # Panics
    /// As [`Client::init`] and [`Client::unseal`].
    pub async fn init_unsealed(&self, shares: u32, threshold: u32) -> InitKeys {
        let init = self.init(shares, threshold).await;
        self.unseal(&init.keys_base64).await;
        init
    }

    /// Mounts a KV engine (`version` `"1"` or `"2"`) at `path`.
    ///
    /// # Panics
    /// When the mount is refused.
    pub async fn mount_kv(&self, token: &str, path: &str, version: &str) {
        let (code, body) = self
            .call(
                "POST",
                &format!("sys/mounts/{path}"),
                Some(token),
                Some(json!({"type": "kv", "options": {"version": version}})),
            )
            .await;
        assert!(code == 204 || code == 200, "mount {path}: {code} {body}");
    }

    /// Writes `data` at a KV v1 `path` (or any path that takes a JSON
    /// object); asserts success.
    ///
    /// # Panics
    /// When the write is refused.
    pub async fn write(&self, token: &str, path: &str, data: Value) {
        let (code, body) = self.call("PUT", path, Some(token), Some(data)).await;
        assert!(code == 204 || code == 200, "write {path}: {code} {body}");
    }

    /// Reads `path`: the `data` object, or `None` on 404.
    ///
    /// # Panics
    /// On any status but 200 and 404.
    pub async fn read(&self, token: &str, path: &str) -> Option<Value> {
        let (code, body) = self.call("GET", path, Some(token), None).await;
        match code {
            200 => Some(body["data"].clone()),
            404 => None,
            other => panic!("read {path}: {other} {body}"),
        }
    }

    /// Waits until `sealed` is `want`; returns the seal status.
    ///
    /// # Panics
    /// When it does not happen within `timeout`.
    pub async fn wait_sealed(&self, want: bool, timeout: Duration) -> Value {
        wait::until(
            &format!("{} reports sealed = {want}", self.base),
            timeout,
            || async {
                match self.try_call("GET", "sys/seal-status", None, None).await {
                    Ok((200, status)) if status["sealed"] == json!(want) => Ok(status),
                    Ok((code, status)) => Err(format!("{code} {status}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    /// Waits until `sys/health` answers `code` (200 active, 429 standby,
    /// 501 uninitialised, 503 sealed).
    ///
    /// # Panics
    /// When it does not within `timeout`.
    pub async fn wait_health(&self, code: u16, timeout: Duration) {
        wait::until(
            &format!("{} health is {code}", self.base),
            timeout,
            || async {
                match self.try_call("GET", "sys/health", None, None).await {
                    Ok((c, _)) if c == code => Ok(()),
                    Ok((c, body)) => Err(format!("{c} {body}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }

    /// Waits until the node is the active node (health 200).
    ///
    /// # Panics
    /// When it does not become active within `timeout`.
    pub async fn wait_active(&self, timeout: Duration) {
        self.wait_health(200, timeout).await;
    }

    /// Waits until the node is an unsealed standby (health 429).
    ///
    /// # Panics
    /// When it does not within `timeout`.
    pub async fn wait_standby(&self, timeout: Duration) {
        self.wait_health(429, timeout).await;
    }

    /// Waits until the node is a standby that names `active` (a node's
    /// `base`) as the active node in `sys/leader`. A standby learns that
    /// from its own reads of the HA lock, shortly after it unseals; until
    /// then it cannot forward (Vault: "active cluster node not found").
    ///
    /// # Panics
    /// When it does not within `timeout`.
    pub async fn wait_standby_of(&self, active: &str, timeout: Duration) {
        wait::until(
            &format!("{} is a standby of {active}", self.base),
            timeout,
            || async {
                match self.try_call("GET", "sys/leader", None, None).await {
                    Ok((200, body))
                        if body["is_self"] == json!(false)
                            && body["leader_address"] == json!(active) =>
                    {
                        Ok(())
                    }
                    Ok((c, body)) => Err(format!("{c} {body}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }
}
