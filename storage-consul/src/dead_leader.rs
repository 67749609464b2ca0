//! Dead-leader detection: freeing the lock of an active node whose process
//! is gone without waiting for its session's TTL.
//!
//! Consul invalidates a session only when its TTL timer runs out, and that
//! timer runs up to twice the TTL after the last renewal; a holder killed
//! with SIGKILL keeps the lock that long, then lock-delay follows. Its
//! address says more: where a process is gone nothing listens, and the
//! kernel refuses a connection at once. A standby that finds the holder's
//! advertised `api_addr` refusing every connection over a short window,
//! after it had answered before, and the lock still held by the same
//! session at the same index, destroys the session; Consul then applies
//! lock-delay and a standby takes the lock. An address that never answered
//! proves nothing (a wrong `api_addr` of a live node looks so).
//!
//! Not evidence: a timeout, an unreachable network, a name that does not
//! resolve. A paused (SIGSTOP) process's kernel still completes handshakes
//! into its backlog, and a partition drops packets; both keep waiting for
//! the TTL. Safety does not rest on the probe: should the holder be alive
//! after all, its writes are fenced on the destroyed session, fail, and
//! make it step down.
//!
//! A node that starts and finds the lock held by a session advertising its
//! own `api_addr` with another process's `node_id` finds its previous
//! process, killed (a live one would still hold the listening port this
//! process has bound): it destroys that session at once, once per start.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::Url;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::DeadLeaderConfig;
use crate::error::ConsulError;
use crate::ha::{LockEntry, read_lock};
use crate::session::try_destroy_session;
use crate::storage::ConsulStorage;

/// Fewest refused probes in a row before a holder is taken for dead,
/// whatever the window.
const MIN_REFUSALS: u32 = 3;

/// What one TCP connection attempt to the holder's address showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Every address refused the connection: nothing listens there.
    Refused,
    /// A connection was accepted (by the process, or into its backlog).
    Answered,
    /// A timeout, an unreachable network, a name that does not resolve,
    /// an address that cannot be read: no evidence either way.
    Inconclusive,
}

/// What the probes so far say about one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not (or no longer) suspected.
    Alive,
    /// Refused, but not yet often or long enough.
    Suspect,
    /// Refused `refusals` times in a row over `over`.
    Dead { refusals: u32, over: Duration },
}

/// The lock holder as the lock key shows it: its session, the key's
/// `ModifyIndex`, and what its advertisement (the lock value) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) session: String,
    pub(crate) modify_index: u64,
    pub(crate) api_addr: String,
    pub(crate) node_id: String,
}

impl Holder {
    /// The holder of `entry`; `None` when the key is free.
    pub(crate) fn of(entry: &LockEntry) -> Option<Self> {
        let session = entry.session.clone()?;
        let (api_addr, node_id) = advertised(&entry.value);
        Some(Self {
            session,
            modify_index: entry.modify_index,
            api_addr,
            node_id,
        })
    }
}

/// `api_addr` and `node_id` of a lock value (the advertisement JSON that
/// `ha-lock` writes); empty strings for anything else. The value comes
/// from Consul and is not trusted.
pub(crate) fn advertised(value: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Advertised {
        #[serde(default)]
        api_addr: String,
        #[serde(default)]
        node_id: String,
    }
    serde_json::from_slice::<Advertised>(value)
        .map(|a| (a.api_addr, a.node_id))
        .unwrap_or_default()
}

/// What the probes of one holder's session showed so far: whether its
/// address ever answered, and the current run of refusals.
#[derive(Debug, Default)]
pub(crate) struct Suspicion {
    session: String,
    answered: bool,
    first_refused: Option<Instant>,
    refusals: u32,
}

impl Suspicion {
    /// Records `probe` of the holder `session` made at `now`. A refusal
    /// after the address has answered at least once extends the run of
    /// refusals; anything else ends it, and a new session starts afresh.
    /// Dead once the run holds at least [`MIN_REFUSALS`] refusals and spans
    /// `window`. An address that never answered proves nothing: it may be
    /// a wrong `api_addr` (a port nothing ever listened on, `0.0.0.0`)
    /// of a live node, which must not lose its lock to every standby.
    pub(crate) fn record(
        &mut self,
        session: &str,
        probe: Probe,
        now: Instant,
        window: Duration,
    ) -> Verdict {
        if self.session != session {
            *self = Self {
                session: session.to_owned(),
                ..Self::default()
            };
        }
        if probe == Probe::Answered {
            self.answered = true;
        }
        if probe != Probe::Refused || !self.answered {
            self.first_refused = None;
            self.refusals = 0;
            return Verdict::Alive;
        }
        let first = *self.first_refused.get_or_insert(now);
        self.refusals += 1;
        let over = now.saturating_duration_since(first);
        if self.refusals >= MIN_REFUSALS && over >= window {
            Verdict::Dead {
                refusals: self.refusals,
                over,
            }
        } else {
            Verdict::Suspect
        }
    }
}

/// One TCP connection attempt to each address `api_addr` names, each
/// bounded by `timeout`. Refused only when every address refused.
pub(crate) async fn probe(api_addr: &str, timeout: Duration) -> Probe {
    let Ok(url) = Url::parse(api_addr) else {
        return Probe::Inconclusive;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Probe::Inconclusive;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => return Probe::Inconclusive,
        };
    if addrs.is_empty() {
        return Probe::Inconclusive;
    }
    let mut refused = 0;
    for addr in &addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Probe::Answered,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Ok(Err(_)) | Err(_) => {}
        }
    }
    if refused == addrs.len() {
        Probe::Refused
    } else {
        Probe::Inconclusive
    }
}

/// How a conditional destroy ended.
#[derive(Debug)]
enum Destroy {
    Done,
    /// The key moved on (released, or another session or index): nothing
    /// was destroyed.
    Changed,
    Failed(ConsulError),
}

/// Re-reads the lock key and destroys `holder`'s session only if the key is
/// still held by it at the same `ModifyIndex`, then logs what happened and
/// `why`. Runs as a task of its own: the destroy frees the key, which wakes
/// the blocking query the caller races it against, and dropping the caller
/// must not lose the log line.
async fn destroy_if_still_held(
    storage: &ConsulStorage,
    full_key: &str,
    holder: &Holder,
    why: String,
    lock_delay: Duration,
) -> Destroy {
    let storage = storage.clone();
    let full_key = full_key.to_owned();
    let holder = holder.clone();
    let task = tokio::spawn(async move {
        let outcome = conditional_destroy(&storage, &full_key, &holder).await;
        report(&holder, &outcome, &why, lock_delay);
        outcome
    });
    task.await.unwrap_or_else(|e| {
        Destroy::Failed(ConsulError::Decode {
            what: "destroying a dead holder's session",
            message: e.to_string(),
        })
    })
}

async fn conditional_destroy(storage: &ConsulStorage, full_key: &str, holder: &Holder) -> Destroy {
    let now = match read_lock(storage, full_key, 0, None).await {
        Ok((entry, _)) => entry.as_ref().and_then(Holder::of),
        Err(e) => return Destroy::Failed(e),
    };
    let same =
        now.is_some_and(|h| h.session == holder.session && h.modify_index == holder.modify_index);
    if !same {
        return Destroy::Changed;
    }
    match try_destroy_session(storage, &holder.session).await {
        Ok(()) => Destroy::Done,
        Err(e) => Destroy::Failed(e),
    }
}

fn report(holder: &Holder, outcome: &Destroy, why: &str, lock_delay: Duration) {
    let Holder {
        session,
        api_addr,
        node_id,
        ..
    } = holder;
    match outcome {
        Destroy::Done => tracing::warn!(
            %session,
            holder_api_addr = %api_addr,
            holder_node_id = %node_id,
            ?lock_delay,
            "destroyed the HA lock session of a dead active node: {why}; the lock is free after lock-delay"
        ),
        Destroy::Changed => tracing::info!(
            %session,
            holder_api_addr = %api_addr,
            "the HA lock changed hands before the dead holder's session was destroyed; nothing destroyed"
        ),
        Destroy::Failed(e @ ConsulError::PermissionDenied { .. }) => tracing::warn!(
            %session,
            holder_api_addr = %api_addr,
            error = %e,
            "destroying the HA lock session of a dead active node was refused: {why}; destroying another node's session needs `session_prefix \"\" {{ policy = \"write\" }}` in the token's ACL; waiting for the session TTL instead"
        ),
        Destroy::Failed(e) => tracing::warn!(
            %session,
            holder_api_addr = %api_addr,
            error = %e,
            "destroying the HA lock session of a dead active node failed: {why}; trying again"
        ),
    }
}

/// One contender's dead-leader detection: the suspicion of the current
/// holder, a session whose destroy Consul refused (left to its TTL), and
/// whether the start-up check for this node's previous process ran.
#[derive(Debug)]
pub(crate) struct DeadLeader {
    config: DeadLeaderConfig,
    lock_delay: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    suspicion: Suspicion,
    given_up: Option<String>,
    startup_checked: bool,
}

impl DeadLeader {
    pub(crate) fn new(config: DeadLeaderConfig, lock_delay: Duration) -> Self {
        Self {
            config,
            lock_delay,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This contender took the lock: whatever held it before is no
    /// previous process of its own any more.
    pub(crate) fn acquired(&self) {
        self.state().startup_checked = true;
    }

    /// The first time this contender sees a holder: when it advertises
    /// this node's `api_addr` (from `own_value`, this node's lock value)
    /// under another `node_id`, it is this node's previous process, and
    /// its session is destroyed at once. Returns whether it was.
    pub(crate) async fn reclaim_previous(
        &self,
        storage: &ConsulStorage,
        full_key: &str,
        holder: &Holder,
        own_value: &[u8],
    ) -> bool {
        if !self.config.enabled || std::mem::replace(&mut self.state().startup_checked, true) {
            return false;
        }
        let (own_addr, own_id) = advertised(own_value);
        if own_addr.is_empty() || holder.api_addr != own_addr || holder.node_id == own_id {
            return false;
        }
        let why = "it advertises this node's own api_addr under another node id: this node's previous process, which is gone";
        let outcome =
            destroy_if_still_held(storage, full_key, holder, why.to_owned(), self.lock_delay).await;
        matches!(outcome, Destroy::Done)
    }

    /// Probes `holder`'s `api_addr` every `probe_interval` until it has
    /// refused long enough, then destroys its session if the key is still
    /// held by it and returns. Returns too when the key moved on. Never
    /// returns while the holder answers or the probes are inconclusive,
    /// when detection is off, when the holder advertises no address or
    /// this node's own (this node cannot judge itself), or after Consul
    /// refused to destroy this session (the TTL frees it).
    pub(crate) async fn watch(
        &self,
        storage: &ConsulStorage,
        full_key: &str,
        holder: &Holder,
        own_value: &[u8],
    ) {
        let (own_addr, _) = advertised(own_value);
        if !self.config.enabled || holder.api_addr.is_empty() || holder.api_addr == own_addr {
            return std::future::pending().await;
        }
        let interval = self.config.probe_interval;
        loop {
            if self.state().given_up.as_deref() == Some(holder.session.as_str()) {
                return std::future::pending().await;
            }
            let started = Instant::now();
            let seen = probe(&holder.api_addr, interval).await;
            let verdict = self.state().suspicion.record(
                &holder.session,
                seen,
                Instant::now(),
                self.config.probe_window,
            );
            if let Verdict::Dead { refusals, over } = verdict {
                let why = format!(
                    "its api_addr {} refused all {refusals} connection attempts over {over:?} (nothing listens there: the process is gone)",
                    holder.api_addr
                );
                let outcome =
                    destroy_if_still_held(storage, full_key, holder, why, self.lock_delay).await;
                match outcome {
                    Destroy::Done | Destroy::Changed => return,
                    Destroy::Failed(ConsulError::PermissionDenied { .. }) => {
                        self.state().given_up = Some(holder.session.clone());
                    }
                    // Tried again after the next refusal.
                    Destroy::Failed(_) => {}
                }
            }
            tokio::time::sleep_until(started + interval).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WINDOW: Duration = Duration::from_secs(1);
    const STEP: Duration = Duration::from_millis(250);

    /// Feeds `probes` of `session`, one every [`STEP`]; the last verdict.
    fn run(s: &mut Suspicion, start: Instant, session: &str, probes: &[Probe]) -> Verdict {
        let mut verdict = Verdict::Alive;
        for (i, p) in probes.iter().enumerate() {
            verdict = s.record(session, *p, start + STEP * i as u32, WINDOW);
        }
        verdict
    }

    /// A suspicion of `session` whose address answered once, just before
    /// `start`.
    fn seen_alive(session: &str, start: Instant) -> Suspicion {
        let mut s = Suspicion::default();
        let before = start.checked_sub(STEP).unwrap_or(start);
        assert_eq!(
            s.record(session, Probe::Answered, before, WINDOW),
            Verdict::Alive
        );
        s
    }

    #[test]
    fn refusals_over_the_whole_window_mean_dead() {
        let start = Instant::now();
        let mut s = seen_alive("a", start);
        let refused = [Probe::Refused; 5];
        assert_eq!(run(&mut s, start, "a", &refused[..4]), Verdict::Suspect);
        assert_eq!(
            s.record("a", Probe::Refused, start + STEP * 4, WINDOW),
            Verdict::Dead {
                refusals: 5,
                over: WINDOW
            }
        );
    }

    #[test]
    fn timeouts_and_answers_are_not_evidence_and_end_the_run() {
        let start = Instant::now();
        for interrupt in [Probe::Inconclusive, Probe::Answered] {
            let mut s = seen_alive("a", start);
            let probes = [
                Probe::Refused,
                Probe::Refused,
                Probe::Refused,
                interrupt,
                Probe::Refused,
                Probe::Refused,
                Probe::Refused,
            ];
            // Six refusals over 1.5 s, but no unbroken run spans the window.
            assert_eq!(run(&mut s, start, "a", &probes), Verdict::Suspect);
        }
        let mut s = seen_alive("a", start);
        let timeouts = [Probe::Inconclusive; 20];
        assert_eq!(run(&mut s, start, "a", &timeouts), Verdict::Alive);
    }

    #[test]
    fn another_session_starts_afresh() {
        let start = Instant::now();
        let mut s = seen_alive("a", start);
        assert_eq!(
            run(&mut s, start, "a", &[Probe::Refused; 4]),
            Verdict::Suspect
        );
        // The lock changed hands: the new holder's address has not
        // answered yet, so its refusals prove nothing.
        let refused = [Probe::Refused; 8];
        assert_eq!(run(&mut s, start, "b", &refused), Verdict::Alive);
        assert_eq!(
            s.record("b", Probe::Answered, start + STEP * 8, WINDOW),
            Verdict::Alive
        );
        assert_eq!(
            s.record("b", Probe::Refused, start + STEP * 9, WINDOW),
            Verdict::Suspect
        );
    }

    #[test]
    fn an_address_that_never_answered_is_never_taken_for_dead() {
        let mut s = Suspicion::default();
        let refused = [Probe::Refused; 40];
        assert_eq!(run(&mut s, Instant::now(), "a", &refused), Verdict::Alive);
    }

    #[test]
    fn a_long_window_needs_the_time_and_a_short_one_three_refusals() {
        let start = Instant::now();
        let mut s = seen_alive("a", start);
        // Three refusals in 10 ms: the window (1 s) has not passed.
        for i in 0..3u32 {
            let v = s.record(
                "a",
                Probe::Refused,
                start + Duration::from_millis(5) * i,
                WINDOW,
            );
            assert_eq!(v, Verdict::Suspect);
        }
        let mut s = seen_alive("a", start);
        // A window shorter than the probes' spacing still needs three.
        assert_eq!(
            s.record("a", Probe::Refused, start, Duration::from_millis(1)),
            Verdict::Suspect
        );
        assert_eq!(
            s.record("a", Probe::Refused, start + STEP, Duration::from_millis(1)),
            Verdict::Suspect
        );
        assert!(matches!(
            s.record(
                "a",
                Probe::Refused,
                start + STEP * 2,
                Duration::from_millis(1)
            ),
            Verdict::Dead { refusals: 3, .. }
        ));
    }

    #[test]
    fn advertisements_are_read_and_garbage_names_nothing() {
        let (addr, id) = advertised(br#"{"api_addr":"http://10.0.0.1:8200","node_id":"n1"}"#);
        assert_eq!((addr.as_str(), id.as_str()), ("http://10.0.0.1:8200", "n1"));
        assert_eq!(advertised(b"not json"), (String::new(), String::new()));
        assert_eq!(advertised(b"\"a uuid\""), (String::new(), String::new()));
    }

    #[tokio::test]
    async fn a_listening_port_answers_a_closed_one_refuses_garbage_is_inconclusive() {
        // A bound listener that never accepts: a paused process looks so.
        let port = testkit::ports::reserve();
        let listener = tokio::net::TcpListener::bind(port.addr()).await.unwrap();
        let url = format!("http://{}", port.addr());
        assert_eq!(probe(&url, STEP * 4).await, Probe::Answered);
        drop(listener);
        // The port stays reserved (nothing else takes it) but nothing
        // listens on it any more.
        assert_eq!(probe(&url, STEP * 4).await, Probe::Refused);
        for garbage in ["", "not a url", "http://", "mailto:x@y"] {
            assert_eq!(probe(garbage, STEP).await, Probe::Inconclusive, "{garbage}");
        }
    }

    proptest! {
        #[test]
        fn any_lock_value_is_read_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = advertised(&value);
        }
    }
}
