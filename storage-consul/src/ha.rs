//! [`ConsulHaBackend`]: leader election over Consul sessions and the KV
//! `?acquire` / `?release` lock, beside [`ConsulStorage`].
//!
//! One contender is one [`ConsulHaBackend`]. It keeps one Consul session
//! ready (created and renewed before it is needed), so taking a free lock
//! is a single `PUT /v1/kv/<path>core/lock?acquire=<session>`. While the
//! lock is held by someone else, `try_lock` parks on a blocking query on
//! the lock key and wakes as soon as the key is released. The holder runs
//! a watch of its own on the key and a renewal loop; either noticing the
//! loss cancels [`HaLock::lost`], and so does the first write refused by
//! the write fence the backend arms on the shared [`ConsulStorage`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use seal_core::{HaBackend, HaError, HaLock, Parked, validate_key};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Reply, Request};
use crate::dead_leader::{DeadLeader, Holder};
use crate::error::ConsulError;
use crate::session::{
    Session, destroy_session, encode_segment, go_duration, ha_error, spawn, unexpected,
};
use crate::storage::{ConsulStorage, HaSettings, WriteFence};

/// Beyond its `wait`, Consul may hold a blocking query up to wait/16 more;
/// this is added on top before the request is given up as hung.
const BLOCKING_MARGIN: Duration = Duration::from_secs(5);

/// Longest wait of the holder's own watch on the lock key: a change wakes
/// it at once whatever the wait; the wait only bounds how long a silently
/// dead connection can hide a loss (renewal catches that too).
const WATCH_WAIT_MAX: Duration = Duration::from_secs(60);

/// Delay after a failed watch request before the next one.
const WATCH_RETRY: Duration = Duration::from_millis(250);

/// The `Flags` every acquire and release writes on the lock key: Consul's
/// lock marker (`LockFlagValue` of its Go API), which Vault's Consul HA
/// lock writes too and checks before it contends. A lock key with other
/// flags makes Vault refuse the lock for good ("Existing key does not
/// match lock use"), so without it a Vault started again on a prefix
/// Strongroom once served (a read-only takeover tried and abandoned)
/// could never become active.
pub const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

/// The Consul HA backend: one contender for locks under the storage path
/// of the [`ConsulStorage`] it is built from, sharing that storage's HTTP
/// client, token, TLS settings and request accounting.
///
/// # Sessions
/// Each contender holds its own session: `Name` [`crate::SESSION_NAME`], `TTL` =
/// `session_ttl` (renewed every TTL/2, using the TTL Consul answers with),
/// `LockDelay` = `lock_delay` (default 15 s, Consul's and so Vault's; lower
/// it for faster takeover after a crash, at the price of less protection
/// for a holder that is only slow), `Behavior = release`.
///
/// Sessions are created with **no node checks** (`NodeChecks: []`, not
/// Consul's default `serfHealth`): the lock must follow the life of this
/// process, which only its TTL renewals prove. `serfHealth` follows the
/// Consul agent the node talks to, which several nodes may share: a
/// flapping agent would depose all of them at once and start a lock-delay,
/// while a dead Strongroom process next to a healthy agent would keep its
/// lock just as long as without the check.
///
/// # Fencing
/// When a lock is handed out, the storage's write fence
/// ([`ConsulStorage::set_write_fence`]) is armed with its session: every
/// write then carries a `check-session` on the lock key, and a refused
/// write fails with [`seal_core::StorageError::Fenced`] and cancels the
/// lock's [`HaLock::lost`] at once. The fence keeps that session after the
/// lock is lost or released, so a deposed (or paused) node cannot write any
/// more; the next acquisition replaces it. Before the first acquisition
/// writes are not fenced (initialisation writes happen then).
///
/// Build it from the same [`ConsulStorage`] (or a clone) the node writes
/// through, so the fence covers those writes. Cloning the backend shares
/// the contender.
#[derive(Clone)]
pub struct ConsulHaBackend {
    shared: Arc<Shared>,
}

struct Shared {
    storage: ConsulStorage,
    settings: HaSettings,
    /// The session a standby keeps for its next attempt.
    ready: Mutex<Option<Session>>,
    /// `try_lock` calls parked on a blocking query right now.
    waiting: AtomicUsize,
    /// Frees the lock of a holder whose process is gone.
    dead_leader: DeadLeader,
}

impl fmt::Debug for ConsulHaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulHaBackend")
            .field("address", &self.shared.storage.address())
            .field("path", &self.shared.storage.path())
            .field("session_ttl", &self.shared.settings.session_ttl)
            .field("lock_wait_time", &self.shared.settings.lock_wait_time)
            .field("lock_delay", &self.shared.settings.lock_delay)
            .field("dead_leader", &self.shared.settings.dead_leader)
            .finish_non_exhaustive()
    }
}

impl ConsulHaBackend {
    /// A contender using `storage`'s connection and its configuration's
    /// `session_ttl`, `lock_wait_time` and `lock_delay`. Sends nothing: the
    /// first session is created by the first `try_lock`.
    pub fn new(storage: &ConsulStorage) -> Self {
        let settings = storage.ha_settings();
        Self {
            shared: Arc::new(Shared {
                storage: storage.clone(),
                settings,
                ready: Mutex::new(None),
                waiting: AtomicUsize::new(0),
                dead_leader: DeadLeader::new(settings.dead_leader, settings.lock_delay),
            }),
        }
    }

    /// The storage whose writes this backend fences.
    pub fn storage(&self) -> &ConsulStorage {
        &self.shared.storage
    }

    /// How many `try_lock` calls of this contender are parked on a blocking
    /// query, waiting for the holder to release, right now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn ready(&self) -> MutexGuard<'_, Option<Session>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ready session, or a new one when there is none (or it died).
    async fn take_session(self: &Arc<Self>, key: &str) -> Result<Session, HaError> {
        let ready = self.ready().take();
        match ready {
            Some(s) if !s.dead.is_cancelled() => Ok(s),
            _ => Session::create(&self.storage, self.settings, key).await,
        }
    }

    /// Keeps `session` for the next attempt, unless one is kept already or
    /// it died (it is destroyed then, by its `Drop`).
    fn keep(&self, session: Session) {
        if session.dead.is_cancelled() {
            return;
        }
        let mut ready = self.ready();
        if ready.is_none() {
            *ready = Some(session);
        }
    }

    /// Creates the next ready session in the background, so that a node
    /// which lost the lock contends again with one request.
    fn prepare_in_background(self: &Arc<Self>, key: String) {
        if self.ready().is_some() {
            return;
        }
        let shared = self.clone();
        spawn(async move {
            match Session::create(&shared.storage, shared.settings, &key).await {
                Ok(session) => shared.keep(session),
                Err(e) => tracing::debug!(error = %e, "preparing the next HA session failed"),
            }
        });
    }
}

/// The lock key as a KV read shows it.
#[derive(Debug, Default)]
pub(crate) struct LockEntry {
    /// The holding session; `None` when the key is free or missing.
    pub(crate) session: Option<String>,
    pub(crate) value: Vec<u8>,
    /// The key's `ModifyIndex`: changes with every acquire and release.
    pub(crate) modify_index: u64,
}

/// Reads the lock key: at once (`wait` `None`), or as a blocking query
/// returning when its index passes `index` or `wait` ends. Returns the
/// entry (`None` when the key does not exist) and `X-Consul-Index`.
pub(crate) async fn read_lock(
    storage: &ConsulStorage,
    full_key: &str,
    index: u64,
    wait: Option<Duration>,
) -> Result<(Option<LockEntry>, u64), ConsulError> {
    let settings = storage.ha_settings();
    let (query, timeout) = match wait {
        Some(wait) => (
            format!("?index={index}&wait={}", go_duration(wait)),
            wait + wait / 16 + BLOCKING_MARGIN,
        ),
        None => ("?index=0".to_owned(), settings.request_timeout),
    };
    let url = storage.kv_url(full_key, &query);
    let request = Request {
        method: Method::GET,
        path_and_query: &url,
        body: None,
    };
    let reply = storage.client().send_ha(&request, timeout).await?;
    let new_index = reply.index.unwrap_or(index).max(1);
    match reply.status {
        StatusCode::NOT_FOUND => Ok((None, new_index)),
        StatusCode::OK => Ok((Some(parse_lock_entry(&reply.body)?), new_index)),
        other => Err(unexpected(other, &reply)),
    }
}

fn parse_lock_entry(body: &[u8]) -> Result<LockEntry, ConsulError> {
    #[derive(serde::Deserialize)]
    struct Pair {
        #[serde(rename = "Session", default)]
        session: Option<String>,
        #[serde(rename = "Value", default)]
        value: Option<String>,
        #[serde(rename = "ModifyIndex", default)]
        modify_index: u64,
    }
    let decode = |message: String| ConsulError::Decode {
        what: "lock key",
        message,
    };
    let pairs: Vec<Pair> = serde_json::from_slice(body).map_err(|e| decode(e.to_string()))?;
    let Some(pair) = pairs.into_iter().next() else {
        return Ok(LockEntry::default());
    };
    let value = match pair.value {
        Some(v) => BASE64.decode(v).map_err(|e| decode(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(LockEntry {
        session: pair.session.filter(|s| !s.is_empty()),
        value,
        modify_index: pair.modify_index,
    })
}

/// `PUT ?acquire=<session>` with `value` and [`LOCK_FLAGS`]; whether
/// Consul granted it.
async fn acquire(
    storage: &ConsulStorage,
    full_key: &str,
    session: &str,
    value: &[u8],
) -> Result<bool, ConsulError> {
    let url = storage.kv_url(
        full_key,
        &format!("?acquire={}&flags={LOCK_FLAGS}", encode_segment(session)),
    );
    let request = Request {
        method: Method::PUT,
        path_and_query: &url,
        body: Some(Bytes::copy_from_slice(value)),
    };
    let reply = storage
        .client()
        .send_ha(&request, storage.ha_settings().request_timeout)
        .await?;
    granted(&reply)
}

/// `PUT ?release=<session>` with an empty value (so a released lock
/// advertises nothing) and [`LOCK_FLAGS`]. Releasing a key the session does not hold is a no-op.
async fn release_key(
    storage: &ConsulStorage,
    full_key: &str,
    session: &str,
) -> Result<bool, ConsulError> {
    let url = storage.kv_url(
        full_key,
        &format!("?release={}&flags={LOCK_FLAGS}", encode_segment(session)),
    );
    let request = Request {
        method: Method::PUT,
        path_and_query: &url,
        body: Some(Bytes::new()),
    };
    let reply = storage
        .client()
        .send_ha(&request, storage.ha_settings().request_timeout)
        .await?;
    granted(&reply)
}

fn granted(reply: &Reply) -> Result<bool, ConsulError> {
    match reply.status {
        StatusCode::OK => match reply.body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            _ => Err(ConsulError::Decode {
                what: "lock acquire/release",
                message: format!(
                    "expected true or false, got {:?}",
                    crate::error::truncate_body(&String::from_utf8_lossy(&reply.body))
                ),
            }),
        },
        other => Err(unexpected(other, reply)),
    }
}

/// Gives the key up and destroys the session, in that order, so the next
/// holder gets the lock without a lock-delay.
async fn release_and_destroy(storage: &ConsulStorage, full_key: &str, session: Session) {
    if let Err(e) = release_key(storage, full_key, &session.id).await {
        tracing::warn!(session = %session.id, key = full_key, error = %e, "releasing the HA lock failed; destroying its session");
    }
    session.destroy().await;
}

/// A `try_lock` in progress. If the future is dropped after an acquire was
/// sent but before its answer was read, Consul may have granted the lock:
/// the guard then releases it and destroys the session in the background.
/// Otherwise the session is kept for the next attempt.
struct Attempt {
    shared: Arc<Shared>,
    full_key: String,
    session: Option<Session>,
    uncertain: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if self.uncertain {
            let storage = self.shared.storage.clone();
            let full_key = std::mem::take(&mut self.full_key);
            spawn(async move { release_and_destroy(&storage, &full_key, session).await });
        } else {
            self.shared.keep(session);
        }
    }
}

#[async_trait]
impl HaBackend for ConsulHaBackend {
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError> {
        validate_key(key).map_err(|e| HaError::Backend {
            op: "acquiring",
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let shared = &self.shared;
        let storage = &shared.storage;
        let deadline = Instant::now() + shared.settings.lock_wait_time;
        let retry = (shared.settings.lock_delay / 20)
            .clamp(Duration::from_millis(25), Duration::from_millis(250));
        let full_key = storage.full_key(key);
        let mut attempt = Attempt {
            shared: shared.clone(),
            full_key: full_key.clone(),
            session: Some(shared.take_session(key).await?),
            uncertain: false,
        };
        let mut seen_holder: Option<String> = None;
        // Refusals of a free key in a row: the first may be a race with a
        // release (retried at once), later ones are lock-delay.
        let mut free_refusals = 0u32;
        let mut replaced_session = false;
        loop {
            let session_id = match attempt.session.as_ref() {
                Some(s) if !s.dead.is_cancelled() => s.id.clone(),
                _ => {
                    attempt.session = None;
                    attempt.session = Some(Session::create(storage, shared.settings, key).await?);
                    continue;
                }
            };
            attempt.uncertain = true;
            match acquire(storage, &full_key, &session_id, value).await {
                Ok(true) => {
                    let Some(session) = attempt.session.take() else {
                        continue;
                    };
                    shared.dead_leader.acquired();
                    return Ok(Some(Box::new(ConsulLock::start(
                        shared.clone(),
                        key,
                        full_key,
                        session,
                    )?)));
                }
                Ok(false) => attempt.uncertain = false,
                Err(ConsulError::Status { status: 500, body })
                    if body.contains("session") && !replaced_session =>
                {
                    // `invalid session`: it was invalidated since; take a
                    // new one (once per call). The guard destroys the old.
                    replaced_session = true;
                    tracing::warn!(session = %session_id, %body, "HA session no longer valid; creating a new one");
                    if let Some(s) = attempt.session.as_ref() {
                        s.dead.cancel();
                    }
                    attempt.uncertain = false;
                    attempt.session = None;
                    continue;
                }
                Err(e) => return Err(ha_error("acquiring", key, &e)),
            }
            let (entry, index) = read_lock(storage, &full_key, 0, None)
                .await
                .map_err(|e| ha_error("reading", key, &e))?;
            let holder = entry.as_ref().and_then(Holder::of);
            let now = Instant::now();
            match holder {
                // Free but refused: lock-delay after an invalidated
                // session. Try again shortly until the wait time ends.
                None => {
                    if now >= deadline {
                        return Ok(None);
                    }
                    if free_refusals > 0 {
                        tokio::time::sleep_until((now + retry).min(deadline)).await;
                    }
                    free_refusals += 1;
                }
                Some(h) if h.session == session_id => {
                    // Granted between our answer and our look (another call
                    // of ours cannot share this session): try again.
                }
                Some(h) => {
                    free_refusals = 0;
                    if seen_holder.as_ref().is_some_and(|seen| *seen != h.session) {
                        // Released and taken by someone else meanwhile:
                        // let the caller refresh the holder.
                        return Ok(None);
                    }
                    seen_holder = Some(h.session.clone());
                    let dead_leader = &shared.dead_leader;
                    if dead_leader
                        .reclaim_previous(storage, &full_key, &h, value)
                        .await
                    {
                        continue;
                    }
                    let left = deadline.saturating_duration_since(now);
                    if left < Duration::from_millis(5) {
                        return Ok(None);
                    }
                    // Wakes when the key changes (a release) or the wait
                    // time ends, or once the holder was found dead and its
                    // session destroyed; then one more attempt.
                    let parked = Parked::new(&shared.waiting);
                    tokio::select! {
                        woke = read_lock(storage, &full_key, index, Some(left)) => {
                            woke.map_err(|e| ha_error("waiting for", key, &e))?;
                        }
                        () = dead_leader.watch(storage, &full_key, &h, value) => {}
                    }
                    drop(parked);
                }
            }
        }
    }

    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError> {
        validate_key(key).map_err(|e| HaError::Backend {
            op: "reading",
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let storage = &self.shared.storage;
        let (entry, _) = read_lock(storage, &storage.full_key(key), 0, None)
            .await
            .map_err(|e| ha_error("reading", key, &e))?;
        Ok(entry.filter(|e| e.session.is_some()).map(|e| e.value))
    }
}

/// A held Consul lock: its session (still renewed), the watch on the key,
/// and the `lost` token the write fence cancels too.
struct ConsulLock {
    shared: Arc<Shared>,
    full_key: String,
    session_id: String,
    session: Option<Session>,
    lost: CancellationToken,
    /// Stops the watch (on release or drop).
    stop: CancellationToken,
}

impl fmt::Debug for ConsulLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulLock")
            .field("key", &self.full_key)
            .field("session", &self.session_id)
            .field("lost", &self.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ConsulLock {
    /// Arms the write fence with `session` and starts watching the key.
    fn start(
        shared: Arc<Shared>,
        key: &str,
        full_key: String,
        session: Session,
    ) -> Result<Self, HaError> {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let fence = WriteFence {
            lock_key: key.to_owned(),
            session: session.id.clone(),
        };
        if let Err(e) = shared.storage.arm_fence(Some(fence), Some(lost.clone())) {
            // The key was validated: unreachable, but never hold a lock
            // whose writes are not fenced.
            let storage = shared.storage.clone();
            spawn(async move { release_and_destroy(&storage, &full_key, session).await });
            return Err(HaError::Backend {
                op: "fencing",
                key: key.to_owned(),
                message: e.to_string(),
            });
        }
        tracing::info!(key = %full_key, session = %session.id, "acquired the HA lock");
        tokio::spawn(watch_lock(
            shared.clone(),
            key.to_owned(),
            full_key.clone(),
            SessionView {
                id: session.id.clone(),
                dead: session.dead.clone(),
                stop_renewal: session.stop.clone(),
            },
            lost.clone(),
            stop.clone(),
        ));
        Ok(Self {
            shared,
            full_key,
            session_id: session.id.clone(),
            session: Some(session),
            lost,
            stop,
        })
    }
}

/// Watches the held lock: a loss of the session, the key seen free, held
/// by another session or deleted, or `lost` cancelled from outside (a
/// refused fenced write) ends the holding: `lost` is cancelled, the key
/// released and the session destroyed, so nothing fenced on it can land
/// any more, and a new session is prepared for the next attempt.
async fn watch_lock(
    shared: Arc<Shared>,
    key: String,
    full_key: String,
    session: SessionView,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let SessionView {
        id: session_id,
        dead,
        stop_renewal,
    } = session;
    let storage = &shared.storage;
    let wait = shared
        .settings
        .lock_wait_time
        .clamp(Duration::from_secs(1), WATCH_WAIT_MAX);
    let mut index = 0u64;
    let reason = loop {
        let read = read_lock(storage, &full_key, index, (index > 0).then_some(wait));
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = dead.cancelled() => break "its Consul session was invalidated or could not be renewed",
            () = lost.cancelled() => break "a write fenced on it was refused, or it was given up",
            r = read => r,
        };
        match result {
            Ok((entry, new_index)) => {
                match entry.and_then(|e| e.session) {
                    Some(s) if s == session_id => {}
                    Some(_) => break "the lock key is held by another session",
                    None => break "the lock key was released or deleted",
                }
                // Consul's rule: an index going backwards restarts at 0.
                index = if new_index < index { 0 } else { new_index };
            }
            Err(e) => {
                tracing::warn!(key = %full_key, error = %e, "watching the HA lock failed; retrying");
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = dead.cancelled() => {}
                    () = lost.cancelled() => {}
                    () = tokio::time::sleep(WATCH_RETRY) => {}
                }
            }
        }
    };
    if stop.is_cancelled() {
        return;
    }
    tracing::warn!(key = %full_key, session = %session_id, reason, "HA lock lost; this node must stop writing");
    lost.cancel();
    if let Err(e) = release_key(storage, &full_key, &session_id).await {
        tracing::debug!(error = %e, "releasing a lost HA lock failed");
    }
    stop_renewal.cancel();
    destroy_session(storage, &session_id).await;
    shared.prepare_in_background(key);
}

/// What the lock's watch needs of its session.
struct SessionView {
    id: String,
    dead: CancellationToken,
    stop_renewal: CancellationToken,
}

#[async_trait]
impl HaLock for ConsulLock {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn fencing_token(&self) -> Option<String> {
        Some(self.session_id.clone())
    }

    /// The release runs as a task of its own: a caller that stops waiting
    /// (a timeout) does not cut it between giving up the key and
    /// destroying the session, which would start a lock-delay.
    async fn release(mut self: Box<Self>) -> Result<(), HaError> {
        self.stop.cancel();
        self.lost.cancel();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let storage = self.shared.storage.clone();
        let full_key = self.full_key.clone();
        let task = tokio::spawn(async move {
            let released = release_key(&storage, &full_key, &session.id).await;
            session.destroy().await;
            released
        });
        let released = task.await.map_err(|e| HaError::Backend {
            op: "releasing",
            key: self.full_key.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(key = %self.full_key, "released the HA lock");
        released
            .map(|_| ())
            .map_err(|e| ha_error("releasing", &self.full_key, &e))
    }
}

impl Drop for ConsulLock {
    fn drop(&mut self) {
        self.stop.cancel();
        self.lost.cancel();
        if let Some(session) = self.session.take() {
            let storage = self.shared.storage.clone();
            let full_key = std::mem::take(&mut self.full_key);
            spawn(async move { release_and_destroy(&storage, &full_key, session).await });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lock_entries_parse() {
        let held = br#"[{"LockIndex":1,"Key":"v/core/lock","Flags":0,"Value":"eyJhIjoxfQ==","Session":"abc","CreateIndex":5,"ModifyIndex":6}]"#;
        let e = parse_lock_entry(held).unwrap();
        assert_eq!(e.session.as_deref(), Some("abc"));
        assert_eq!(e.value, br#"{"a":1}"#);
        let free = br#"[{"LockIndex":1,"Key":"v/core/lock","Flags":0,"Value":null,"CreateIndex":5,"ModifyIndex":7}]"#;
        let e = parse_lock_entry(free).unwrap();
        assert_eq!(e.session, None);
        assert!(e.value.is_empty());
        assert!(parse_lock_entry(b"[]").unwrap().session.is_none());
        assert!(parse_lock_entry(b"<html>").is_err());
        assert!(parse_lock_entry(br#"[{"Value":"!!"}]"#).is_err());
    }

    #[test]
    fn acquire_answers_are_read() {
        let reply = |body: &'static [u8]| Reply {
            status: StatusCode::OK,
            body: Bytes::from_static(body),
            index: None,
        };
        assert!(granted(&reply(b"true\n")).unwrap());
        assert!(!granted(&reply(b"false")).unwrap());
        assert!(granted(&reply(b"maybe")).is_err());
    }

    proptest! {
        #[test]
        fn consul_answers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_lock_entry(&body);
            let _ = granted(&Reply { status: StatusCode::OK, body: Bytes::from(body), index: None });
        }
    }
}
