//! Every operation a test's clients made, with when it was invoked, when it
//! completed and what came back — checked afterwards instead of asserted as
//! it goes (Jepsen's way).
//!
//! Outcomes are recorded honestly: an operation that got an answer is
//! [`Outcome::Ok`]; one that certainly had no effect (the connection was
//! refused, so nothing was sent) is [`Outcome::Failed`]; anything else — a
//! timeout, a cut connection, a 5xx after the request went out — is
//! [`Outcome::Unknown`]: it may or may not have taken effect, and the
//! checker treats it so.
//!
//! Times are offsets on the scenario's [`Timeline`], so a history lines up
//! with the steps and process events printed beside it.
//!
//! ```
//! use testkit::history::{Call, History, Outcome};
//! use testkit::Timeline;
//!
//! let history = History::new(&Timeline::new());
//! let t0 = history.now();
//! history.record(0, "k1", Call::Write("c0-1".into()), "n1", t0, history.now(),
//!     Outcome::Ok { value: None, version: Some(1) });
//! let t1 = history.now();
//! history.record(1, "k1", Call::Read, "n2", t1, history.now(),
//!     Outcome::Ok { value: Some("c0-1".into()), version: Some(1) });
//! assert!(history.check().is_clean());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::linearizability::{CheckError, RegisterCall, RegisterOp, check_register};
use crate::timeline::Timeline;

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Read the key.
    Read,
    /// Write this value (unique across the history).
    Write(String),
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It happened. A read carries the value it saw (`None`: no value); a
    /// write may carry the version the server gave it, a read the version
    /// it saw.
    Ok {
        /// The value a read saw.
        value: Option<String>,
        /// The server's version number for the value, if it has one.
        version: Option<u64>,
    },
    /// It certainly had no effect (why).
    Failed(String),
    /// It may or may not have taken effect (why).
    Unknown(String),
}

impl Outcome {
    /// Whether the operation was acknowledged.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Index in the history.
    pub id: usize,
    /// Which client (worker) made it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// What it asked.
    pub call: Call,
    /// Which endpoint it was sent to.
    pub node: String,
    /// When it was invoked (offset on the timeline).
    pub invoke: Duration,
    /// When the answer (or the error) came.
    pub complete: Duration,
    /// What came back.
    pub outcome: Outcome,
}

impl Op {
    /// An acknowledged write.
    pub fn is_acknowledged_write(&self) -> bool {
        matches!(self.call, Call::Write(_)) && self.outcome.is_ok()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} c{} {:>8.3}s..{:>8.3}s {:<4} ",
            self.id,
            self.client,
            self.invoke.as_secs_f64(),
            self.complete.as_secs_f64(),
            self.node
        )?;
        match &self.call {
            Call::Read => write!(f, "read {}", self.key)?,
            Call::Write(v) => write!(f, "write {}={v}", self.key)?,
        }
        match &self.outcome {
            Outcome::Ok { value, version } => {
                write!(f, " ok")?;
                if let Some(v) = value {
                    write!(f, " {v}")?;
                }
                if let Some(n) = version {
                    write!(f, " (v{n})")?;
                }
                Ok(())
            }
            Outcome::Failed(why) => write!(f, " FAILED {why}"),
            Outcome::Unknown(why) => write!(f, " UNKNOWN {why}"),
        }
    }
}

/// Counts over a history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every operation.
    pub attempted: usize,
    /// Writes attempted.
    pub writes: usize,
    /// Writes acknowledged.
    pub writes_acknowledged: usize,
    /// Reads answered.
    pub reads_acknowledged: usize,
    /// Operations that certainly had no effect.
    pub failed: usize,
    /// Operations whose effect is unknown.
    pub unknown: usize,
}

impl Summary {
    /// Operations acknowledged (writes and reads).
    pub fn acknowledged(&self) -> usize {
        self.writes_acknowledged + self.reads_acknowledged
    }
}

/// What [`History::check`] found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Keys checked.
    pub keys: usize,
    /// Per key that failed: why.
    pub anomalies: BTreeMap<String, CheckError>,
}

impl Verdict {
    /// Whether every key's history is linearizable.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "{} keys, every history linearizable", self.keys);
        }
        for (key, why) in &self.anomalies {
            writeln!(f, "key {key}: {why}")?;
        }
        Ok(())
    }
}

/// A shared, append-only history (clone the handle into every client).
#[derive(Debug, Clone)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
    timeline: Timeline,
}

impl History {
    /// An empty history whose times are offsets on `timeline`.
    pub fn new(timeline: &Timeline) -> Self {
        Self {
            ops: Arc::new(Mutex::new(Vec::new())),
            timeline: timeline.clone(),
        }
    }

    /// The timeline the times refer to.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Now, as an offset on the timeline (take it just before invoking).
    pub fn now(&self) -> Duration {
        self.timeline.elapsed()
    }

    /// Records one finished operation; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        client: usize,
        key: &str,
        call: Call,
        node: &str,
        invoke: Duration,
        complete: Duration,
        outcome: Outcome,
    ) -> usize {
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let id = ops.len();
        ops.push(Op {
            id,
            client,
            key: key.to_owned(),
            call,
            node: node.to_owned(),
            invoke,
            complete,
            outcome,
        });
        id
    }

    /// A copy of every operation, in the order they completed.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts over the whole history.
    pub fn summary(&self) -> Summary {
        summarize(self.ops().iter())
    }

    /// Counts over the operations invoked in `[from, to)`.
    pub fn summary_between(&self, from: Duration, to: Duration) -> Summary {
        summarize(
            self.ops()
                .iter()
                .filter(|op| op.invoke >= from && op.invoke < to),
        )
    }

    /// The operations invoked in `[from, to)` that were not acknowledged.
    pub fn unacknowledged_between(&self, from: Duration, to: Duration) -> Vec<Op> {
        self.ops()
            .into_iter()
            .filter(|op| op.invoke >= from && op.invoke < to && !op.outcome.is_ok())
            .collect()
    }

    /// The first acknowledged write invoked at or after `t`: when writes
    /// were served again after a fault.
    pub fn first_acknowledged_write_after(&self, t: Duration) -> Option<Op> {
        self.ops()
            .into_iter()
            .filter(|op| op.is_acknowledged_write() && op.invoke >= t)
            .min_by_key(|op| op.complete)
    }

    /// The longest stretch inside `[from, to]` with no write acknowledged
    /// (between the completions of consecutive acknowledged writes, and
    /// from `from` / to `to`): how long writers were refused.
    pub fn longest_write_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut done: Vec<Duration> = self
            .ops()
            .iter()
            .filter(|op| op.is_acknowledged_write() && op.complete >= from && op.complete <= to)
            .map(|op| op.complete)
            .collect();
        done.sort();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for t in done.into_iter().chain(std::iter::once(to)) {
            longest = longest.max(t.saturating_sub(last));
            last = t;
        }
        longest
    }

    /// Checks every key's history for linearizability as a register that
    /// starts empty (see [`crate::linearizability`]). A definitely failed
    /// write is left out (if a read saw its value, that is an anomaly);
    /// an unknown one may have taken effect; unanswered reads say nothing.
    pub fn check(&self) -> Verdict {
        let mut per_key: BTreeMap<String, Vec<RegisterOp>> = BTreeMap::new();
        for op in self.ops() {
            let register_op = match (&op.call, &op.outcome) {
                (Call::Write(v), Outcome::Ok { .. }) => RegisterOp::new(
                    op.id,
                    RegisterCall::Write(v.clone()),
                    op.invoke,
                    Some(op.complete),
                ),
                (Call::Write(v), Outcome::Unknown(_)) => {
                    RegisterOp::new(op.id, RegisterCall::Write(v.clone()), op.invoke, None)
                }
                (Call::Read, Outcome::Ok { value, .. }) => RegisterOp::new(
                    op.id,
                    RegisterCall::Read(value.clone()),
                    op.invoke,
                    Some(op.complete),
                ),
                _ => continue,
            };
            per_key.entry(op.key.clone()).or_default().push(register_op);
        }
        let mut verdict = Verdict {
            keys: per_key.len(),
            ..Verdict::default()
        };
        for (key, ops) in per_key {
            if let Err(e) = check_register(&ops) {
                verdict.anomalies.insert(key, e);
            }
        }
        verdict
    }

    /// Pairs of acknowledged writes to one key that the server gave the
    /// same version number, or version numbers against real-time order (a
    /// write acknowledged before another began must have the lower
    /// version): signs of two nodes writing at once.
    pub fn version_anomalies(&self) -> Vec<String> {
        let mut per_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        let ops = self.ops();
        for op in &ops {
            if op.is_acknowledged_write() {
                per_key.entry(op.key.as_str()).or_default().push(op);
            }
        }
        let version = |op: &Op| match op.outcome {
            Outcome::Ok { version, .. } => version,
            _ => None,
        };
        let mut found = Vec::new();
        for (key, writes) in per_key {
            for (i, a) in writes.iter().enumerate() {
                for b in &writes[i + 1..] {
                    let (Some(va), Some(vb)) = (version(a), version(b)) else {
                        continue;
                    };
                    if va == vb {
                        found.push(format!(
                            "{key}: version {va} given to two writes: {a} / {b}"
                        ));
                    } else if (a.complete < b.invoke && va > vb)
                        || (b.complete < a.invoke && vb > va)
                    {
                        found.push(format!(
                            "{key}: versions against real-time order: {a} / {b}"
                        ));
                    }
                }
            }
        }
        found
    }

    /// A per-second account of the history (ok / failed / unknown, and
    /// which nodes answered), for the printed timeline.
    pub fn per_second(&self) -> String {
        let mut buckets: BTreeMap<u64, (usize, usize, usize, BTreeMap<String, usize>)> =
            BTreeMap::new();
        for op in self.ops() {
            let b = buckets.entry(op.invoke.as_secs()).or_default();
            match op.outcome {
                Outcome::Ok { .. } => {
                    b.0 += 1;
                    *b.3.entry(op.node.clone()).or_default() += 1;
                }
                Outcome::Failed(_) => b.1 += 1,
                Outcome::Unknown(_) => b.2 += 1,
            }
        }
        let mut out = String::new();
        for (s, (ok, failed, unknown, nodes)) in buckets {
            let by: Vec<String> = nodes.iter().map(|(n, c)| format!("{n} {c}")).collect();
            out.push_str(&format!(
                "{s:>6}s  ok {ok:>4}  failed {failed:>3}  unknown {unknown:>3}  answered by: {}\n",
                by.join(", ")
            ));
        }
        out
    }
}

fn summarize<'a>(ops: impl Iterator<Item = &'a Op>) -> Summary {
    let mut s = Summary::default();
    for op in ops {
        s.attempted += 1;
        let write = matches!(op.call, Call::Write(_));
        if write {
            s.writes += 1;
        }
        match op.outcome {
            Outcome::Ok { .. } if write => s.writes_acknowledged += 1,
            Outcome::Ok { .. } => s.reads_acknowledged += 1,
            Outcome::Failed(_) => s.failed += 1,
            Outcome::Unknown(_) => s.unknown += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(value: Option<&str>, version: Option<u64>) -> Outcome {
        Outcome::Ok {
            value: value.map(Into::into),
            version,
        }
    }

    #[test]
    fn failed_writes_are_left_out_and_unknown_ones_may_count() {
        let h = History::new(&Timeline::new());
        h.record(
            0,
            "k",
            Call::Write("a".into()),
            "n1",
            ms(0),
            ms(1),
            ok(None, Some(1)),
        );
        h.record(
            1,
            "k",
            Call::Write("b".into()),
            "n1",
            ms(2),
            ms(3),
            Outcome::Unknown("timeout".into()),
        );
        h.record(
            0,
            "k",
            Call::Read,
            "n2",
            ms(10),
            ms(11),
            ok(Some("b"), Some(2)),
        );
        assert!(h.check().is_clean(), "{}", h.check());

        // A value from a write that certainly failed cannot be read.
        h.record(
            1,
            "k",
            Call::Write("c".into()),
            "n3",
            ms(12),
            ms(13),
            Outcome::Failed("refused".into()),
        );
        h.record(
            0,
            "k",
            Call::Read,
            "n2",
            ms(20),
            ms(21),
            ok(Some("c"), Some(3)),
        );
        let verdict = h.check();
        assert!(!verdict.is_clean());
        assert!(verdict.to_string().contains("key k"), "{verdict}");
    }

    #[test]
    fn summary_gaps_and_versions() {
        let h = History::new(&Timeline::new());
        h.record(
            0,
            "k",
            Call::Write("a".into()),
            "n1",
            ms(0),
            ms(100),
            ok(None, Some(1)),
        );
        h.record(
            0,
            "k",
            Call::Write("b".into()),
            "n1",
            ms(200),
            ms(300),
            Outcome::Failed("x".into()),
        );
        h.record(
            0,
            "k",
            Call::Write("c".into()),
            "n1",
            ms(400),
            ms(1100),
            ok(None, Some(1)),
        );
        h.record(
            1,
            "k",
            Call::Read,
            "n2",
            ms(500),
            ms(600),
            Outcome::Unknown("y".into()),
        );
        let s = h.summary();
        assert_eq!((s.attempted, s.writes, s.writes_acknowledged), (4, 3, 2));
        assert_eq!((s.failed, s.unknown, s.acknowledged()), (1, 1, 2));
        assert_eq!(h.longest_write_gap(ms(0), ms(1200)), ms(1000));
        assert_eq!(
            h.first_acknowledged_write_after(ms(150)).map(|op| op.id),
            Some(2)
        );
        let dup = h.version_anomalies();
        assert_eq!(dup.len(), 1, "{dup:?}");
        assert!(dup[0].contains("version 1 given to two writes"), "{dup:?}");
        assert!(h.per_second().contains("failed   1"), "{}", h.per_second());
    }
}
