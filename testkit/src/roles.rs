//! What each node of an HA cluster says it is, sampled in rounds while a
//! scenario runs: every change goes on the timeline ("n2: standby →
//! active"), and afterwards the rounds answer "was there exactly one
//! active node at every sampled moment of this window?" and "when did n3
//! first come back unsealed?".
//!
//! A round asks every node `sys/health` at once (1 s timeout, so a frozen
//! node reads as [`Role::Down`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::timeline::Timeline;

/// What a node's `sys/health` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// 200: the active node.
    Active,
    /// 429: an unsealed standby.
    Standby,
    /// 503: sealed.
    Sealed,
    /// 501: not initialized.
    Uninitialized,
    /// Any other status.
    Other(u16),
    /// No answer within a second (stopped, frozen, starting).
    Down,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::Standby => f.write_str("standby"),
            Self::Sealed => f.write_str("sealed"),
            Self::Uninitialized => f.write_str("uninitialized"),
            Self::Other(code) => write!(f, "health {code}"),
            Self::Down => f.write_str("down"),
        }
    }
}

impl Role {
    fn from_status(code: u16) -> Self {
        match code {
            200 => Self::Active,
            429 => Self::Standby,
            503 => Self::Sealed,
            501 => Self::Uninitialized,
            other => Self::Other(other),
        }
    }
}

/// One round: when it began and each node's role.
#[derive(Debug, Clone)]
pub struct Round {
    /// Offset on the timeline when the round was asked.
    pub at: Duration,
    /// Roles, in node order.
    pub roles: Vec<Role>,
}

/// Samples roles until dropped or stopped (see the [module docs](self)).
#[derive(Debug)]
pub struct RoleSampler {
    names: Vec<String>,
    rounds: Arc<Mutex<Vec<Round>>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for RoleSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RoleSampler {
    /// Starts sampling `nodes` every `every`, recording changes on
    /// `timeline`.
    pub fn start(nodes: &[Node], timeline: &Timeline, every: Duration) -> Self {
        let targets: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.name().to_owned(), format!("{}/v1/sys/health", n.addr())))
            .collect();
        let names = targets.iter().map(|(n, _)| n.clone()).collect();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample_loop(
            targets,
            rounds.clone(),
            timeline.clone(),
            stop.clone(),
            every,
        ));
        Self {
            names,
            rounds,
            stop,
            task: Some(task),
        }
    }

    /// Stops sampling (waits for the round in flight).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The rounds so far.
    pub fn rounds(&self) -> Vec<Round> {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The node names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Checks that every round asked in `[from, to]` saw exactly one
    /// active node; returns how many rounds that was.
    ///
    /// # Errors
    /// The first round that did not, with what each node said; or that no
    /// round fell in the window.
    pub fn exactly_one_active(&self, from: Duration, to: Duration) -> Result<usize, String> {
        let rounds: Vec<Round> = self
            .rounds()
            .into_iter()
            .filter(|r| r.at >= from && r.at <= to)
            .collect();
        if rounds.is_empty() {
            return Err(format!(
                "no sample between {:.3}s and {:.3}s",
                from.as_secs_f64(),
                to.as_secs_f64()
            ));
        }
        for r in &rounds {
            let active = r.roles.iter().filter(|x| **x == Role::Active).count();
            if active != 1 {
                return Err(format!(
                    "{active} active nodes at {:.3}s: {}",
                    r.at.as_secs_f64(),
                    self.describe(r)
                ));
            }
        }
        Ok(rounds.len())
    }

    /// The first round at or after `after` where `pred` holds for the
    /// roles; its time.
    pub fn first(&self, after: Duration, pred: impl Fn(&[Role]) -> bool) -> Option<Duration> {
        self.rounds()
            .into_iter()
            .find(|r| r.at >= after && pred(&r.roles))
            .map(|r| r.at)
    }

    /// "n1 active, n2 standby, n3 sealed".
    pub fn describe(&self, round: &Round) -> String {
        self.names
            .iter()
            .zip(&round.roles)
            .map(|(n, r)| format!("{n} {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn sample_loop(
    targets: Vec<(String, String)>,
    rounds: Arc<Mutex<Vec<Round>>>,
    timeline: Timeline,
    stop: CancellationToken,
    every: Duration,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"));
    let mut last: Option<Vec<Role>> = None;
    while !stop.is_cancelled() {
        let at = timeline.elapsed();
        let asks = targets.iter().map(|(_, url)| {
            let http = &http;
            async move {
                match http.get(url).send().await {
                    Ok(r) => Role::from_status(r.status().as_u16()),
                    Err(_) => Role::Down,
                }
            }
        });
        let roles = futures::future::join_all(asks).await;
        for (i, role) in roles.iter().enumerate() {
            let before = last.as_ref().map(|l| l[i]);
            if before != Some(*role) {
                let what = match before {
                    Some(b) => format!("{b} -> {role}"),
                    None => format!("{role}"),
                };
                timeline.record(&targets[i].0, what);
            }
        }
        last = Some(roles.clone());
        rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Round { at, roles });
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler_with(rounds: Vec<Round>) -> RoleSampler {
        RoleSampler {
            names: vec!["n1".into(), "n2".into()],
            rounds: Arc::new(Mutex::new(rounds)),
            stop: CancellationToken::new(),
            task: None,
        }
    }

    #[test]
    fn exactly_one_active_names_the_round_that_broke_it() {
        let s = Duration::from_secs;
        let sampler = sampler_with(vec![
            Round {
                at: s(1),
                roles: vec![Role::Active, Role::Standby],
            },
            Round {
                at: s(2),
                roles: vec![Role::Down, Role::Standby],
            },
            Round {
                at: s(3),
                roles: vec![Role::Down, Role::Active],
            },
        ]);
        assert_eq!(sampler.exactly_one_active(s(3), s(4)), Ok(1));
        let err = sampler.exactly_one_active(s(0), s(4)).unwrap_err();
        assert!(
            err.contains("0 active nodes at 2.000s: n1 down, n2 standby"),
            "{err}"
        );
        assert_eq!(sampler.first(s(0), |r| r[1] == Role::Active), Some(s(3)));
    }
}
