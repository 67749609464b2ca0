//! [`ConsulStorage`]: the [`Storage`] trait over Consul's KV and `/v1/txn`.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use seal_core::{
    MAX_KEY_LEN, Storage, StorageError, StorageLimits, TxnOp, list_children, validate_key,
    validate_prefix,
};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Reply, Request, RequestStats};
use crate::config::{ConsistencyMode, ConsulConfig, DeadLeaderConfig};
use crate::error::ConsulError;
use crate::group_commit::{Queue, Unit};

/// Most operations one [`Storage::transaction`] may hold.
///
/// Consul's documentation gives 64 operations per `/v1/txn` (servers from
/// 1.14 on accept 128, older ones 64). One slot is kept for the
/// `check-session` fencing operation an active HA node puts first, so 63
/// works on every Consul version, fenced or not (Vault uses 63 too).
pub const MAX_TRANSACTION_OPS: usize = 63;

/// Characters left as they are in a key placed in a URL path: RFC 3986
/// unreserved characters and the `/` separator. Everything else (space,
/// `%`, `?`, `#`, non-ASCII …) is percent-encoded, and Consul decodes it.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Makes every write conditional on an HA lock: each `/v1/txn` starts with
/// a `check-session` operation on `lock_key`, so Consul refuses the whole
/// write once `session` no longer holds the lock (fencing against a paused
/// or partitioned former leader).
#[derive(Clone, PartialEq, Eq)]
pub struct WriteFence {
    /// The lock key, relative to the storage `path` (e.g. `core/lock`).
    pub lock_key: String,
    /// The Consul session ID that holds the lock.
    pub session: String,
}

impl fmt::Debug for WriteFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteFence")
            .field("lock_key", &self.lock_key)
            .field("session", &self.session)
            .finish()
    }
}

/// The fence prepared for sending: full key and the op's JSON.
#[derive(Debug)]
pub(crate) struct Fence {
    pub(crate) full_key: String,
    pub(crate) session: String,
    pub(crate) json: Vec<u8>,
    /// Cancelled when a write is refused by this fence: the HA lock's
    /// `lost` token, so the node steps down at the first refused write.
    pub(crate) on_refused: Option<CancellationToken>,
}

/// A [`Storage`] keeping every entry as a Consul KV pair under a prefix.
///
/// * Reads are KV `GET`s (`?consistent` in strong mode); lists use
///   `?keys&separator=/`.
/// * Every write (put, delete, transaction) goes through `PUT /v1/txn`, so a
///   [`WriteFence`] can make all of them conditional on holding the HA lock,
///   and a write is reported done only after Consul answered 200 (raft
///   commit). Concurrent writes share transactions (group commit, see
///   `group_commit.rs`): at most two are in flight, and writes arriving
///   meanwhile go together in the next one.
/// * Limits are checked before anything is sent (see [`ConsulStorage::limits`]).
/// * At most `max_parallel` requests are in flight; transient failures are
///   retried with bounded exponential backoff.
///
/// Cloning is cheap and shares the connection pool and the parallelism bound.
#[derive(Clone)]
pub struct ConsulStorage {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    path: String,
    consistency: ConsistencyMode,
    max_parallel: usize,
    limits: Limits,
    fence: RwLock<Option<Arc<Fence>>>,
    queue: Queue,
    ha: HaSettings,
}

/// The HA lock settings of the configuration this storage was built from,
/// for the [`crate::ConsulHaBackend`] built on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HaSettings {
    pub(crate) session_ttl: Duration,
    pub(crate) lock_wait_time: Duration,
    pub(crate) lock_delay: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) dead_leader: DeadLeaderConfig,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_value_size: usize,
    max_body: usize,
}

impl fmt::Debug for ConsulStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulStorage")
            .field("address", &self.inner.client.base())
            .field("path", &self.inner.path)
            .field("max_parallel", &self.inner.max_parallel)
            .field("consistency", &self.inner.consistency)
            .finish_non_exhaustive()
    }
}

impl ConsulStorage {
    /// Builds the backend. No request is sent: a Consul that is down now
    /// only makes the first calls fail with [`StorageError::Unavailable`].
    ///
    /// # Errors
    /// [`ConsulError::Config`] for an invalid configuration,
    /// [`ConsulError::TlsFile`] when a TLS file cannot be read or parsed,
    /// [`ConsulError::Client`] when the HTTP client cannot be built.
    pub fn new(config: ConsulConfig) -> Result<Self, ConsulError> {
        config.validate()?;
        for (key, reason) in &config.ignored {
            tracing::warn!(setting = %key, reason, "consul storage setting accepted but not used");
        }
        if config.tls_skip_verify {
            tracing::warn!(
                "consul storage: tls_skip_verify is set; anyone between this node and Consul can read and forge storage traffic"
            );
        }
        let client = Client::new(&config)?;
        let limits = compute_limits(&config);
        let ha = HaSettings {
            session_ttl: config.session_ttl,
            lock_wait_time: config.lock_wait_time,
            lock_delay: config.lock_delay,
            request_timeout: config.request_timeout,
            dead_leader: config.dead_leader,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                path: config.path,
                consistency: config.consistency_mode,
                max_parallel: config.max_parallel,
                limits,
                fence: RwLock::new(None),
                queue: Queue::default(),
                ha,
            }),
        })
    }

    /// The key prefix every entry lives under (ends in `/`).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// `scheme://host:port` of the Consul agent.
    pub fn address(&self) -> &str {
        self.inner.client.base()
    }

    /// Request counters: in flight now, the peak (bounded by
    /// `max_parallel`), totals, retries and writes waiting for a
    /// transaction.
    pub fn request_stats(&self) -> RequestStats {
        RequestStats {
            queued_writes: self.inner.queue.len(),
            ..self.inner.client.stats()
        }
    }

    /// Restarts peak tracking from the current in-flight count.
    pub fn reset_peak_in_flight(&self) {
        self.inner.client.reset_peak();
    }

    /// Makes every later write conditional on `fence` (or unconditional
    /// again with `None`). A write whose fence check fails is refused with
    /// [`StorageError::Fenced`] (its source a [`ConsulError::Fenced`]), and
    /// nothing of it is written.
    ///
    /// # Errors
    /// [`StorageError::InvalidKey`] for a malformed lock key.
    pub fn set_write_fence(&self, fence: Option<WriteFence>) -> Result<(), StorageError> {
        self.arm_fence(fence, None)
    }

    /// [`ConsulStorage::set_write_fence`], cancelling `on_refused` when a
    /// write is refused by the fence.
    pub(crate) fn arm_fence(
        &self,
        fence: Option<WriteFence>,
        on_refused: Option<CancellationToken>,
    ) -> Result<(), StorageError> {
        let prepared = match fence {
            None => None,
            Some(f) => {
                validate_key(&f.lock_key)?;
                let full_key = format!("{}{}", self.inner.path, f.lock_key);
                let mut json = Vec::with_capacity(full_key.len() + f.session.len() + 64);
                json.extend_from_slice(br#"{"KV":{"Verb":"check-session","Key":"#);
                push_json_string(&mut json, &full_key);
                json.extend_from_slice(br#","Session":"#);
                push_json_string(&mut json, &f.session);
                json.extend_from_slice(b"}}");
                Some(Arc::new(Fence {
                    full_key,
                    session: f.session,
                    json,
                    on_refused,
                }))
            }
        };
        *self
            .inner
            .fence
            .write()
            .unwrap_or_else(PoisonError::into_inner) = prepared;
        Ok(())
    }

    /// The session the write fence checks, if one is armed (the lock's
    /// [`seal_core::HaLock::fencing_token`] after an HA acquisition).
    pub fn write_fence_session(&self) -> Option<String> {
        self.inner
            .fence
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| f.session.clone())
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The fence writes carry now, if one is armed.
    pub(crate) fn current_fence(&self) -> Option<Arc<Fence>> {
        self.inner
            .fence
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Room in one transaction for writes' operations: how many, and how
    /// many bytes of their JSON (with separators) beside the current fence.
    pub(crate) fn batch_room(&self) -> (usize, usize) {
        let fence = self.current_fence().map_or(0, |f| f.json.len() + 1);
        (
            MAX_TRANSACTION_OPS,
            self.inner.limits.max_body.saturating_sub(2 + fence),
        )
    }

    pub(crate) fn ha_settings(&self) -> HaSettings {
        self.inner.ha
    }

    pub(crate) fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.path, key)
    }

    /// `/v1/kv/<encoded full_key><query>`, plus `&consistent` in strong
    /// mode (`query` must start with `?`).
    pub(crate) fn kv_url(&self, full_key: &str, query: &str) -> String {
        let mut url = String::with_capacity(full_key.len() + query.len() + 16);
        url.push_str("/v1/kv/");
        url.extend(utf8_percent_encode(full_key, KEY_ENCODE));
        url.push_str(query);
        if self.inner.consistency == ConsistencyMode::Strong {
            url.push_str("&consistent");
        }
        url
    }

    /// GETs `url` for `op` on `key`; transport and retry failures become
    /// the `StorageError` get and list report.
    async fn get_reply(
        &self,
        op: &'static str,
        key: &str,
        url: &str,
    ) -> Result<Reply, StorageError> {
        let request = Request {
            method: Method::GET,
            path_and_query: url,
            body: None,
        };
        self.inner
            .client
            .send(op, key, &request)
            .await
            .map_err(|e| e.into_storage(op, key))
    }

    /// Encodes already validated `ops` as `/v1/txn` operations separated
    /// by commas (the body's brackets and the fence come with the batch).
    fn ops_json(&self, ops: &[TxnOp]) -> Vec<u8> {
        let path = &self.inner.path;
        let capacity = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => {
                    49 + 2 * (path.len() + key.len()) + base64_len(value.len())
                }
                TxnOp::Delete { key } => 41 + 2 * (path.len() + key.len()),
            })
            .sum::<usize>();
        let mut body = Vec::with_capacity(capacity);
        for (i, op) in ops.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            match op {
                TxnOp::Put { key, value } => {
                    body.extend_from_slice(br#"{"KV":{"Verb":"set","Key":"#);
                    push_json_string_parts(&mut body, path, key);
                    body.extend_from_slice(br#","Value":""#);
                    let start = body.len();
                    body.resize(start + base64_len(value.len()), 0);
                    // The buffer was sized for exactly this encoding.
                    let written = BASE64.encode_slice(value, &mut body[start..]).unwrap_or(0);
                    body.truncate(start + written);
                    body.extend_from_slice(b"\"}}");
                }
                TxnOp::Delete { key } => {
                    body.extend_from_slice(br#"{"KV":{"Verb":"delete","Key":"#);
                    push_json_string_parts(&mut body, path, key);
                    body.extend_from_slice(b"}}");
                }
            }
        }
        body
    }

    /// Validates `ops` against the key rules and every limit, then queues
    /// them for the next `/v1/txn` (see `group_commit.rs`) and waits for
    /// its answer. `op` and `key` name the caller for errors.
    async fn write(&self, op: &'static str, key: &str, ops: &[TxnOp]) -> Result<(), StorageError> {
        let limits = self.inner.limits;
        for o in ops {
            validate_key(o.key())?;
        }
        for o in ops {
            if let TxnOp::Put { key, value } = o
                && value.len() > limits.max_value_size
            {
                return Err(StorageError::ValueTooLarge {
                    op,
                    key: key.clone(),
                    size: value.len(),
                    limit: limits.max_value_size,
                });
            }
        }
        if ops.len() > MAX_TRANSACTION_OPS {
            return Err(StorageError::TransactionTooLarge {
                ops: ops.len(),
                reason: format!(
                    "Consul transactions hold at most {MAX_TRANSACTION_OPS} operations here (64 per /v1/txn, one kept for the HA fencing check); splitting would break atomicity"
                ),
            });
        }
        let json = self.ops_json(ops);
        let (_, room) = self.batch_room();
        if json.len() > room {
            let body = json.len() + limits.max_body - room;
            return Err(StorageError::TransactionTooLarge {
                ops: ops.len(),
                reason: format!(
                    "its /v1/txn request body would be {body} bytes (values grow by a third in base64), over Consul's txn_max_req_len of {} bytes; splitting would break atomicity",
                    limits.max_body
                ),
            });
        }
        let (unit, answer) = Unit::new(op, key, json, ops.len());
        if self.queue().push(unit) {
            tokio::spawn(self.clone().send_queued());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable {
                op,
                key: key.to_owned(),
                message:
                    "the write was abandoned before Consul answered (the runtime is shutting down)"
                        .to_owned(),
                source: None,
            })
        })
    }
}

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct TxnError {
    #[serde(rename = "OpIndex")]
    pub(crate) op_index: usize,
    #[serde(rename = "What")]
    pub(crate) what: String,
}

/// Reads Consul's 409 answer: `{"Errors":[{"OpIndex":n,"What":"…"}]}`.
pub(crate) fn parse_txn_errors(body: &[u8]) -> Result<Vec<TxnError>, ConsulError> {
    #[derive(serde::Deserialize)]
    struct TxnReply {
        #[serde(rename = "Errors", default)]
        errors: Option<Vec<TxnError>>,
    }
    let parsed: TxnReply = serde_json::from_slice(body).map_err(|e| ConsulError::Decode {
        what: "txn (409)",
        message: e.to_string(),
    })?;
    Ok(parsed.errors.unwrap_or_default())
}

/// The error for operations Consul refused (the fence aside, which the
/// caller checks first).
pub(crate) fn rolled_back(errors: &[TxnError]) -> ConsulError {
    // A token that exists but lacks `key:write` is refused per operation
    // inside a 409, not with a 403.
    if let Some(denied) = errors
        .iter()
        .find(|e| e.what.contains("Permission denied") || e.what.contains("ACL not found"))
    {
        return ConsulError::PermissionDenied {
            status: 409,
            body: crate::error::truncate_body(&denied.what),
        };
    }
    ConsulError::RolledBack {
        errors: errors
            .iter()
            .map(|e| {
                format!(
                    "op {}: {}",
                    e.op_index,
                    crate::error::truncate_body(&e.what)
                )
            })
            .collect(),
    }
}

/// Length of the standard (padded) base64 encoding of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    push_json_string_parts(out, s, "");
}

/// Writes `a` followed by `b` as one JSON string literal.
fn push_json_string_parts(out: &mut Vec<u8>, a: &str, b: &str) {
    out.push(b'"');
    for part in [a, b] {
        for ch in part.chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// The largest value one put may carry so that its `/v1/txn` body — the
/// base64 value, the longest possible key (every character escaped) and a
/// fencing `check-session` op on the longest possible lock key — stays
/// within the servers' `txn_max_req_len`, and the value within
/// `kv_max_value_size`.
///
/// With Consul's defaults (512 KiB for both) this is about 378 KiB: a
/// 512 KiB value would need a 683 KiB txn body, which Consul refuses with
/// 413 (consul#19021). Stating the real limit lets callers fail early and
/// clearly instead of meeting a 413 from the server.
fn compute_limits(config: &ConsulConfig) -> Limits {
    let max_body = config.txn_max_req_len.max(config.kv_max_value_size);
    let worst_key = 2 * (config.path.len() + MAX_KEY_LEN);
    let set_op = br#"[{"KV":{"Verb":"set","Key":"","Value":""}}]"#.len() + worst_key;
    // A session ID is a 36-character UUID; allow any 64 to be safe.
    let fence_op =
        br#"{"KV":{"Verb":"check-session","Key":"","Session":""}},"#.len() + worst_key + 64;
    let room = max_body.saturating_sub(set_op + fence_op);
    let fits_in_txn = room / 4 * 3;
    Limits {
        max_value_size: fits_in_txn.min(config.kv_max_value_size),
        max_body,
    }
}

#[async_trait]
impl Storage for ConsulStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        let url = self.kv_url(&self.full_key(key), "?raw");
        let reply = self.get_reply("get", key, &url).await?;
        match reply.status {
            // Reuses the buffer when reqwest handed over a unique one.
            StatusCode::OK => Ok(Some(Vec::from(reply.body))),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(ConsulError::Status {
                status: other.as_u16(),
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            }
            .into_storage("get", key)),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        // The trait hands a borrowed value; the txn body is built from it
        // without keeping a second owned copy around.
        validate_key(key)?;
        let limit = self.inner.limits.max_value_size;
        if value.len() > limit {
            return Err(StorageError::ValueTooLarge {
                op: "put",
                key: key.to_owned(),
                size: value.len(),
                limit,
            });
        }
        self.write("put", key, &[TxnOp::put(key, value)]).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.write("delete", key, &[TxnOp::delete(key)]).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let full_prefix = self.full_key(prefix);
        let url = self.kv_url(&full_prefix, "?keys&separator=/");
        let reply = self.get_reply("list", prefix, &url).await?;
        match reply.status {
            StatusCode::OK => {
                let keys: Vec<String> = serde_json::from_slice(&reply.body).map_err(|e| {
                    ConsulError::Decode {
                        what: "list",
                        message: e.to_string(),
                    }
                    .into_storage("list", prefix)
                })?;
                // Consul answers with full keys cut after the first `/`
                // past the prefix; list_children strips the prefix, drops
                // the prefix key itself and sorts.
                Ok(list_children(&full_prefix, keys.iter().map(String::as_str)))
            }
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            other => Err(ConsulError::Status {
                status: other.as_u16(),
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            }
            .into_storage("list", prefix)),
        }
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        let first = ops.first().map(|o| o.key().to_owned()).unwrap_or_default();
        self.write("transaction", &first, &ops).await
    }

    /// `max_value_size`: the largest value whose `/v1/txn` body fits Consul's
    /// `txn_max_req_len` (about 378 KiB with Consul's defaults; see the
    /// crate docs). `max_transaction_ops`: [`MAX_TRANSACTION_OPS`] (63).
    fn limits(&self) -> StorageLimits {
        StorageLimits {
            max_value_size: Some(self.inner.limits.max_value_size),
            max_transaction_ops: Some(MAX_TRANSACTION_OPS),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `/v1/txn` body of `ops` sent alone.
    fn body(s: &ConsulStorage, ops: &[TxnOp], fence: Option<&Fence>) -> Vec<u8> {
        let (unit, _) = Unit::new("test", "k", s.ops_json(ops), ops.len());
        crate::group_commit::txn_body(fence, &[unit])
    }

    fn storage(path: &str) -> ConsulStorage {
        let mut config = ConsulConfig::default();
        config.path = path.to_owned();
        ConsulStorage::new(config).unwrap()
    }

    #[test]
    fn default_limits() {
        let s = storage("vault/");
        let limits = s.limits();
        assert_eq!(limits.max_transaction_ops, Some(63));
        let max = limits.max_value_size.unwrap();
        assert!((380_000..393_216).contains(&max), "{max}");
        // The worst-case single put still fits Consul's 512 KiB txn body.
        let key = "\"".repeat(MAX_KEY_LEN);
        let fence = Fence {
            full_key: format!("vault/{key}"),
            session: "0".repeat(64),
            json: Vec::new(),
            on_refused: None,
        };
        let mut fenced = Vec::new();
        fenced.extend_from_slice(br#"{"KV":{"Verb":"check-session","Key":"#);
        push_json_string(&mut fenced, &fence.full_key);
        fenced.extend_from_slice(br#","Session":"#);
        push_json_string(&mut fenced, &fence.session);
        fenced.extend_from_slice(b"}}");
        let fence = Fence {
            json: fenced,
            ..fence
        };
        let body = body(&s, &[TxnOp::put(key, vec![0u8; max])], Some(&fence));
        assert!(body.len() <= 512 * 1024, "{}", body.len());
    }

    #[test]
    fn raised_server_limits_raise_ours() {
        let mut config = ConsulConfig::default();
        config.kv_max_value_size = 4 * 1024 * 1024;
        let s = ConsulStorage::new(config).unwrap();
        let max = s.limits().max_value_size.unwrap();
        assert!(max > 3_000_000 && max < 3 * 1024 * 1024 + 1024, "{max}");
    }

    #[test]
    fn txn_body_is_consul_json() {
        let s = storage("sr/");
        let body = body(
            &s,
            &[
                TxnOp::put("a \"q\"/ü", b"hi".to_vec()),
                TxnOp::delete("d"),
                TxnOp::put("e", Vec::new()),
            ],
            None,
        );
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"KV": {"Verb": "set", "Key": "sr/a \"q\"/ü", "Value": "aGk="}},
                {"KV": {"Verb": "delete", "Key": "sr/d"}},
                {"KV": {"Verb": "set", "Key": "sr/e", "Value": ""}},
            ])
        );
    }

    #[test]
    fn fence_goes_first() {
        let s = storage("sr/");
        s.set_write_fence(Some(WriteFence {
            lock_key: "core/lock".into(),
            session: "abc".into(),
        }))
        .unwrap();
        let fence = s.inner.fence.read().unwrap().clone().unwrap();
        let body = body(&s, &[TxnOp::delete("x")], Some(&fence));
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"KV": {"Verb": "check-session", "Key": "sr/core/lock", "Session": "abc"}},
                {"KV": {"Verb": "delete", "Key": "sr/x"}},
            ])
        );
        assert!(
            s.set_write_fence(Some(WriteFence {
                lock_key: "/bad".into(),
                session: "abc".into(),
            }))
            .is_err()
        );
    }

    #[test]
    fn keys_are_percent_encoded() {
        let s = storage("vault/");
        assert_eq!(
            s.kv_url("vault/with space/pct%20/ü?#", "?raw"),
            "/v1/kv/vault/with%20space/pct%2520/%C3%BC%3F%23?raw"
        );
        let mut config = ConsulConfig::default();
        config.consistency_mode = ConsistencyMode::Strong;
        let strong = ConsulStorage::new(config).unwrap();
        assert_eq!(
            strong.kv_url("vault/a", "?raw"),
            "/v1/kv/vault/a?raw&consistent"
        );
    }

    #[test]
    fn conflicts_are_read_per_operation() {
        let fenced = parse_txn_errors(
            br#"{"Results":null,"Errors":[{"OpIndex":0,"What":"failed session check for key \"vault/core/lock\", current session \"\" != \"s1\""}]}"#,
        )
        .unwrap();
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[0].op_index, 0);
        let err = rolled_back(&fenced);
        assert!(
            matches!(&err, ConsulError::RolledBack { errors } if errors.len() == 1),
            "{err}"
        );
        let denied = parse_txn_errors(
            br#"{"Results":null,"Errors":[{"OpIndex":3,"What":"Permission denied: token with AccessorID 'x' lacks permission 'key:write' on \"k\""}]}"#,
        )
        .unwrap();
        assert!(matches!(
            rolled_back(&denied),
            ConsulError::PermissionDenied { .. }
        ));
        assert!(matches!(
            parse_txn_errors(b"<html>"),
            Err(ConsulError::Decode { .. })
        ));
    }

    proptest! {
        #[test]
        fn txn_body_always_parses(
            key in "[^\\x00-\\x1f]{1,40}",
            value in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let s = storage("p/");
            let body = body(&s, &[TxnOp::put(key.clone(), value.clone())], None);
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(parsed[0]["KV"]["Key"].as_str().unwrap(), format!("p/{key}"));
            let decoded = BASE64.decode(parsed[0]["KV"]["Value"].as_str().unwrap()).unwrap();
            prop_assert_eq!(decoded, value);
        }

        #[test]
        fn conflict_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_txn_errors(&body).map(|errors| rolled_back(&errors));
        }
    }
}
