//! The HTTP client the CLI subcommands use.
//!
//! It resolves the address and token the way Vault's CLI does (flag, then
//! `STRONGROOM_*`, then `VAULT_*`, then the default), sends the token in
//! `X-Vault-Token`, and turns error answers into [`ApiError`]s that print
//! like Vault's ("Error making API request. … Code: 400. Errors: …").

use reqwest::Method;
use serde_json::Value;
use zeroize::Zeroizing;

use super::ClientArgs;
use crate::error::{ApiError, Error};

/// Where a client connects when nothing says otherwise (Vault's default).
pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";

/// A server answer: status code and JSON body (None for an empty body).
#[derive(Debug)]
pub(crate) struct Response {
    /// HTTP status code.
    pub(crate) status: u16,
    /// The parsed JSON body, if there was one.
    pub(crate) body: Option<Value>,
}

/// A connection to one server.
#[derive(Debug)]
pub(crate) struct Client {
    base: String,
    token: Option<Zeroizing<String>>,
    http: reqwest::Client,
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

fn env_flag(names: &[&str]) -> bool {
    env_first(names).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "t" | "yes"
        )
    })
}

impl Client {
    /// Builds a client from the flags and the environment.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the CA file cannot be read or is not PEM.
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, Error> {
        let base = args
            .address
            .clone()
            .or_else(|| env_first(&["STRONGROOM_ADDR", "VAULT_ADDR", "BAO_ADDR"]))
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let base = base.trim().trim_end_matches('/').to_owned();
        let token = env_first(&["STRONGROOM_TOKEN", "VAULT_TOKEN", "BAO_TOKEN"])
            .map(|t| Zeroizing::new(t.trim().to_owned()));
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("strongroom-cli/", env!("CARGO_PKG_VERSION")));
        let ca = args
            .ca_cert
            .clone()
            .or_else(|| env_first(&["STRONGROOM_CACERT", "VAULT_CACERT"]).map(Into::into));
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| {
                Error::Usage(format!("reading the CA certificate {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Error::Usage(format!(
                    "the CA certificate {} is not PEM: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        if args.tls_skip_verify || env_flag(&["STRONGROOM_SKIP_VERIFY", "VAULT_SKIP_VERIFY"]) {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Usage(format!("setting up the HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// Sends one request to `/v1/<path>` and returns the answer whatever its
    /// status.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when the server cannot be reached or answers
    /// something that is not JSON.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, Error> {
        let url = self.url(path);
        let method_value = Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::Usage(format!("bad HTTP method {method}: {e}")))?;
        let mut request = self.http.request(method_value, &url);
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token.as_str());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |message: String| Error::Transport {
            method: method.to_owned(),
            url: url.clone(),
            message,
        };
        let response = request.send().await.map_err(|e| transport(describe(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(describe(&e)))?;
        let body = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => Some(value),
                Err(_) if status >= 400 => Some(serde_json::json!({
                    "errors": [String::from_utf8_lossy(&bytes).trim().to_owned()]
                })),
                Err(e) => return Err(transport(format!("the answer is not JSON ({e})"))),
            }
        };
        Ok(Response { status, body })
    }

    /// Like [`Client::send`] but a status of 400 or more is an error.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for error statuses, [`Error::Transport`] as for `send`.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, Error> {
        let response = self.send(method, path, body).await?;
        if response.status >= 400 {
            return Err(self.api_error(method, path, &response).into());
        }
        Ok(response.body)
    }

    /// The [`ApiError`] for an error answer.
    pub(crate) fn api_error(&self, method: &str, path: &str, response: &Response) -> ApiError {
        let errors = response
            .body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ApiError {
            method: method.to_owned(),
            url: self.url(path),
            status: response.status,
            errors,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.base, path.trim_start_matches('/'))
    }
}

fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}
