//! What the auto-unseal loop is doing, for people looking at a sealed node:
//! the last failure in operator words, since when the seal has been
//! failing, and when the next attempt is due.
//!
//! A sealed auto-seal node has no tokens to check (they live behind the
//! barrier), so this is what a console or a status page can show while the
//! KMS is unreachable or refuses; the log says the same at every attempt.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// Where a node's auto-unseal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AutoUnsealState {
    /// A Shamir node: operators unseal it with key shares.
    NotApplicable,
    /// The node is unsealed.
    Unsealed,
    /// Sealed, and the auto-unseal loop is trying (see `next_attempt`).
    Retrying,
    /// Sealed on purpose (`sys/seal`): the node stays sealed until it is
    /// unsealed with recovery keys or restarted.
    SealedByOperator,
    /// Sealed, and no auto-unseal loop runs (the embedding application did
    /// not call [`Core::spawn_auto_unseal`](crate::Core::spawn_auto_unseal)).
    Stopped,
}

/// A snapshot of this node's auto-unseal, as `sys/auto-unseal-status`
/// reports it (a Strongroom endpoint; Vault has no equivalent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoUnsealStatus {
    /// Whether the seal unseals the node by itself (`false` for Shamir).
    pub auto_unseal: bool,
    /// The seal type (`shamir`, `awskms`, ...).
    pub seal_type: String,
    /// What the node is doing about being sealed.
    pub state: AutoUnsealState,
    /// Why the last attempt failed, as the log says it; `None` once an
    /// attempt succeeded.
    pub last_error: Option<String>,
    /// A stable label for `last_error` (`seal_unreachable`,
    /// `seal_access_denied`, `wrong_key`, `corrupt_stored_keys`,
    /// `not_initialized`, `seal_migration_pending`, `internal`).
    pub last_error_kind: Option<String>,
    /// When the last attempt failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error_time: Option<OffsetDateTime>,
    /// Failed attempts since the last success (waiting for `sys/init` or
    /// for a seal migration is not counted).
    pub failures: u64,
    /// When the seal started failing (the first failure of this run of
    /// failures); `None` while it works.
    #[serde(with = "time::serde::rfc3339::option")]
    pub unhealthy_since: Option<OffsetDateTime>,
    /// When the loop tries next; `None` when no attempt is scheduled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
struct Tracked {
    last_error: Option<(String, &'static str, OffsetDateTime)>,
    failures: u64,
    unhealthy_since: Option<OffsetDateTime>,
    next_attempt: Option<OffsetDateTime>,
    loops_running: usize,
}

/// The auto-unseal loop's record, shared by the loop and status readers.
#[derive(Debug, Default)]
pub(crate) struct AutoUnsealTracker {
    tracked: Mutex<Tracked>,
}

impl AutoUnsealTracker {
    fn with<T>(&self, f: impl FnOnce(&mut Tracked) -> T) -> T {
        f(&mut self.tracked.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// An attempt failed; `counts` is false while merely waiting (for
    /// init, for a migration), which says nothing about the seal's health.
    pub(crate) fn failed(&self, message: String, kind: &'static str, counts: bool) {
        let now = OffsetDateTime::now_utc();
        self.with(|t| {
            t.last_error = Some((message, kind, now));
            if counts {
                t.failures += 1;
                t.unhealthy_since.get_or_insert(now);
            }
        });
    }

    /// The seal opened the stored root key.
    pub(crate) fn succeeded(&self) {
        self.with(|t| {
            t.last_error = None;
            t.failures = 0;
            t.unhealthy_since = None;
            t.next_attempt = None;
        });
    }

    /// The loop sleeps `wait` before its next attempt.
    pub(crate) fn next_attempt_in(&self, wait: Duration) {
        let at = OffsetDateTime::now_utc() + wait;
        self.with(|t| t.next_attempt = Some(at));
    }

    /// Whether the last attempt failed on the seal (not merely waiting for
    /// init or a migration) and no retry has been scheduled since: the
    /// loop's first attempt then waits out a backoff first.
    pub(crate) fn failed_recently(&self) -> bool {
        self.with(|t| t.next_attempt.is_none() && t.failures > 0)
    }

    /// The message of the last failure, if the last attempt failed.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.with(|t| t.last_error.as_ref().map(|(m, _, _)| m.clone()))
    }

    /// Marks a loop as running until the guard drops (also on abort).
    pub(crate) fn running(self: &std::sync::Arc<Self>) -> LoopGuard {
        self.with(|t| t.loops_running += 1);
        LoopGuard(self.clone())
    }

    pub(crate) fn status(
        &self,
        seal_type: &str,
        auto: bool,
        sealed: bool,
        by_operator: bool,
    ) -> AutoUnsealStatus {
        self.with(|t| {
            let state = if !auto {
                AutoUnsealState::NotApplicable
            } else if !sealed {
                AutoUnsealState::Unsealed
            } else if by_operator {
                AutoUnsealState::SealedByOperator
            } else if t.loops_running > 0 {
                AutoUnsealState::Retrying
            } else {
                AutoUnsealState::Stopped
            };
            let retrying = state == AutoUnsealState::Retrying;
            AutoUnsealStatus {
                auto_unseal: auto,
                seal_type: seal_type.to_owned(),
                state,
                last_error: t.last_error.as_ref().map(|(m, _, _)| m.clone()),
                last_error_kind: t.last_error.as_ref().map(|(_, k, _)| (*k).to_owned()),
                last_error_time: t.last_error.as_ref().map(|(_, _, at)| *at),
                failures: t.failures,
                unhealthy_since: t.unhealthy_since,
                next_attempt: t.next_attempt.filter(|_| retrying),
            }
        })
    }
}

/// Held by a running auto-unseal loop.
#[derive(Debug)]
pub(crate) struct LoopGuard(std::sync::Arc<AutoUnsealTracker>);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.with(|t| {
            t.loops_running = t.loops_running.saturating_sub(1);
            if t.loops_running == 0 {
                t.next_attempt = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn failures_count_until_a_success() {
        let tracker = Arc::new(AutoUnsealTracker::default());
        let guard = tracker.running();
        tracker.failed("not initialized".into(), "not_initialized", false);
        let s = tracker.status("awskms", true, true, false);
        assert_eq!(s.state, AutoUnsealState::Retrying);
        assert_eq!((s.failures, s.unhealthy_since), (0, None));

        tracker.failed("KMS refused".into(), "seal_access_denied", true);
        tracker.next_attempt_in(Duration::from_secs(4));
        tracker.failed("KMS refused again".into(), "seal_access_denied", true);
        let s = tracker.status("awskms", true, true, false);
        assert_eq!(s.failures, 2);
        assert_eq!(s.last_error.as_deref(), Some("KMS refused again"));
        assert_eq!(s.last_error_kind.as_deref(), Some("seal_access_denied"));
        assert!(s.unhealthy_since.unwrap() <= s.last_error_time.unwrap());
        assert!(s.next_attempt.unwrap() > OffsetDateTime::now_utc());

        tracker.succeeded();
        drop(guard);
        let s = tracker.status("awskms", true, false, false);
        assert_eq!(s.state, AutoUnsealState::Unsealed);
        assert_eq!((s.failures, s.last_error, s.next_attempt), (0, None, None));
    }

    #[test]
    fn states_follow_the_node() {
        let tracker = Arc::new(AutoUnsealTracker::default());
        let shamir = tracker.status("shamir", false, true, false);
        assert_eq!(shamir.state, AutoUnsealState::NotApplicable);
        assert_eq!(
            tracker.status("awskms", true, true, true).state,
            AutoUnsealState::SealedByOperator
        );
        assert_eq!(
            tracker.status("awskms", true, true, false).state,
            AutoUnsealState::Stopped
        );
        tracker.next_attempt_in(Duration::from_secs(1));
        let stopped = tracker.status("awskms", true, true, false);
        assert_eq!(stopped.next_attempt, None, "no loop, no attempt due");
    }

    #[test]
    fn the_json_names_are_stable() {
        let tracker = Arc::new(AutoUnsealTracker::default());
        let _guard = tracker.running();
        tracker.failed("down".into(), "seal_unreachable", true);
        tracker.next_attempt_in(Duration::from_secs(2));
        let json = serde_json::to_value(tracker.status("awskms", true, true, false)).unwrap();
        for key in [
            "auto_unseal",
            "seal_type",
            "state",
            "last_error",
            "last_error_kind",
            "last_error_time",
            "failures",
            "unhealthy_since",
            "next_attempt",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        assert_eq!(json["state"], "retrying");
        assert!(json["next_attempt"].as_str().unwrap().ends_with('Z'));
    }
}
