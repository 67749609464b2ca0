//! Vault's response conventions: JSON bodies, `{"errors":[...]}` on
//! failure, 204 for an empty success, `Cache-Control: no-store` everywhere
//! (answers carry secrets).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use strongroom::CoreError;

/// An error answer: an HTTP status and Vault's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    /// HTTP status code.
    pub(crate) status: u16,
    /// Messages for the `errors` array (may be empty, as Vault's 404s).
    pub(crate) errors: Vec<String>,
}

impl HttpError {
    /// An error with one message.
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            errors: vec![message.into()],
        }
    }

    /// 400 with a message.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 405 for a method a path does not take.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(405, "unsupported operation")
    }

    /// 404 with an empty `errors` list, like Vault's unknown paths.
    pub(crate) fn not_found() -> Self {
        HttpError {
            status: 404,
            errors: Vec::new(),
        }
    }

    /// The JSON response. A 413 also says `Connection: close`: the rest of
    /// the body was never read, so the connection cannot carry another
    /// request, and a client that pooled it would fail its next request on
    /// it.
    pub(crate) fn into_response(self) -> Response {
        let mut response = json_response(self.status, &json!({ "errors": self.errors }));
        if self.status == 413 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<CoreError> for HttpError {
    fn from(err: CoreError) -> Self {
        let status = err.status();
        let errors = err.errors();
        if status >= 500 && status != 503 {
            tracing::error!(error = %err, status, "request failed");
        }
        HttpError { status, errors }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A JSON answer with the given status.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_headers(status, Body::from(bytes), Some("application/json")),
        Err(err) => {
            tracing::error!(error = %err, "serializing a response failed");
            with_headers(
                500,
                Body::from(r#"{"errors":["internal error: serializing the response failed"]}"#),
                Some("application/json"),
            )
        }
    }
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    with_headers(204, Body::empty(), None)
}

/// A 200 JSON answer from a serializable value.
pub(crate) fn ok<T: Serialize + ?Sized>(body: &T) -> Response {
    json_response(200, body)
}

/// A plain-text answer (Prometheus exposition format).
pub(crate) fn text(status: u16, body: String, content_type: &'static str) -> Response {
    with_headers(status, Body::from(body), Some(content_type))
}

/// A status with no body (HEAD answers).
pub(crate) fn empty(status: u16) -> Response {
    with_headers(status, Body::empty(), Some("application/json"))
}

fn with_headers(status: u16, body: Body, content_type: Option<&'static str>) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status_code(status);
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Vault's answer for sys endpoints served by its logical system backend:
/// the standard envelope with `data`, plus the same keys at the top level,
/// which older clients read.
pub(crate) fn sys_envelope(request_id: &str, data: Value) -> Value {
    let mut body = serde_json::Map::new();
    if let Value::Object(fields) = &data {
        body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    body.insert("request_id".into(), json!(request_id));
    body.insert("lease_id".into(), json!(""));
    body.insert("renewable".into(), json!(false));
    body.insert("lease_duration".into(), json!(0));
    body.insert("data".into(), data);
    body.insert("wrap_info".into(), Value::Null);
    body.insert("warnings".into(), Value::Null);
    body.insert("auth".into(), Value::Null);
    body.insert("mount_type".into(), json!("system"));
    Value::Object(body)
}
