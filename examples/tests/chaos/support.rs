//! The scenario runner: one shared cluster, one scenario at a time, the
//! load and samplers around each, the checks after each, and the failure
//! output (timeline, history per second, log tails).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use serde_json::json;
use testkit::Node;
use testkit::ha::LeaderSampler;
use testkit::history::{Call, Op, Outcome};
use testkit::kms_cluster::{KmsCluster, KmsClusterOptions};
use testkit::load::{Load, LoadOptions, Service};
use testkit::roles::{Role, RoleSampler};
use testkit::{Timeline, wait};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;

use super::report::ScenarioReport;

/// How long any one condition may take on a loaded 2-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(90);
/// How often roles and leaders are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Acknowledged writes the load must make after convergence before the
/// scenario ends (the window "exactly one active" is checked over).
const WRITES_AFTER_CONVERGENCE: usize = 60;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
});

/// The cluster the scenarios share; `None` after a failed scenario (the
/// next one starts a fresh cluster).
static SHARED: LazyLock<tokio::sync::Mutex<Option<KmsCluster>>> =
    LazyLock::new(|| tokio::sync::Mutex::new(None));

/// How many scenarios `chaos.rs` has: the last one to finish stops the
/// shared cluster (a static is never dropped, so its processes would only
/// die with the test binary and its directories would stay behind).
const SCENARIOS: usize = 8;
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// The cluster's timings: short session TTL, lock-delay and auto-unseal
/// retry, set through the config.
pub(crate) fn options() -> KmsClusterOptions {
    KmsClusterOptions::default()
}

async fn start_cluster(timeline: &Timeline, initialize: bool) -> KmsCluster {
    let mut cluster =
        KmsCluster::start(timeline, env!("CARGO_BIN_EXE_strongroom").into(), options()).await;
    if initialize {
        cluster.init_with_cli(5, 3).await;
        for node in cluster.nodes() {
            node.wait_sealed(false, DEADLINE).await;
        }
        cluster.mount_kv2("secret").await;
    }
    cluster
}

/// Runs scenario `id` on the shared cluster (a fresh, uninitialized one
/// when `fresh`), then the checks every scenario ends with. A failure
/// prints the timeline and every log tail and leaves no cluster behind.
pub(crate) fn scenario(
    id: &'static str,
    title: &'static str,
    fresh: bool,
    body: impl AsyncFnOnce(&mut Chaos),
) {
    RUNTIME.block_on(async move {
        let mut shared = SHARED.lock().await;
        let (cluster, mark) = match shared.take() {
            Some(cluster) if !fresh => {
                let mark = cluster.timeline().mark();
                (cluster, mark)
            }
            old => {
                drop(old);
                let timeline = Timeline::new();
                timeline.step(format!("scenario {id}: starting a fresh cluster"));
                (start_cluster(&timeline, !fresh).await, 0)
            }
        };
        let mut chaos = Chaos::new(id, title, cluster, mark);
        let outcome = AssertUnwindSafe(async {
            body(&mut chaos).await;
            chaos.check().await
        })
        .catch_unwind()
        .await;
        match outcome {
            Ok(report) => {
                println!("{}", report.text());
                report.save();
                if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 < SCENARIOS {
                    *shared = Some(chaos.cluster);
                }
            }
            Err(panic) => {
                eprintln!(
                    "\n===== scenario {id} failed: {title} =====\n----- timeline -----\n{}",
                    chaos.cluster.timeline().since(chaos.mark)
                );
                if let Some(load) = &chaos.load {
                    eprintln!(
                        "----- operations per second -----\n{}",
                        load.history().per_second()
                    );
                }
                eprintln!("----- log tails -----\n{}", chaos.cluster.log_tails());
                FINISHED.fetch_add(1, Ordering::SeqCst);
                drop(chaos);
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// One scenario's context: the cluster, the service the load goes
/// through, the samplers, and what the scenario measured.
pub(crate) struct Chaos {
    pub(crate) cluster: KmsCluster,
    id: &'static str,
    title: &'static str,
    mark: usize,
    began: Duration,
    service: Arc<Service>,
    roles: RoleSampler,
    leaders: Option<LeaderSampler>,
    load: Option<Load>,
    converged: Option<Duration>,
    figures: Mutex<Vec<(String, Duration)>>,
    notes: Mutex<Vec<String>>,
}

impl Chaos {
    fn new(id: &'static str, title: &'static str, cluster: KmsCluster, mark: usize) -> Self {
        let timeline = cluster.timeline().clone();
        timeline.step(format!("===== scenario {id}: {title}"));
        let service = Service::start(cluster.nodes(), &timeline);
        let roles = RoleSampler::start(cluster.nodes(), &timeline, SAMPLE_EVERY);
        let leaders = LeaderSampler::start_on(cluster.nodes(), SAMPLE_EVERY);
        Self {
            began: timeline.elapsed(),
            cluster,
            id,
            title,
            mark,
            service,
            roles,
            leaders: Some(leaders),
            load: None,
            converged: None,
            figures: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Records a named step.
    pub(crate) fn step(&self, what: impl Into<String>) {
        self.cluster.timeline().step(what);
    }

    /// Now, on the timeline.
    pub(crate) fn now(&self) -> Duration {
        self.cluster.timeline().elapsed()
    }

    /// Node `i`'s name.
    pub(crate) fn name(&self, i: usize) -> String {
        self.cluster.node(i).name().to_owned()
    }

    /// Records a measured time (goes in the report).
    pub(crate) fn figure(&self, label: &str, d: Duration) {
        self.cluster
            .timeline()
            .record("figure", format!("{label}: {:.2} s", d.as_secs_f64()));
        lock(&self.figures).push((label.to_owned(), d));
    }

    /// Records an observation (goes in the report).
    pub(crate) fn note(&self, text: impl Into<String>) {
        let text = text.into();
        self.cluster.timeline().record("note", text.clone());
        lock(&self.notes).push(text);
    }

    /// Starts the load on `secret/chaos/<id>/k*`.
    pub(crate) async fn start_load(&mut self) {
        let options =
            LoadOptions::new(self.cluster.root(), "secret", &format!("chaos/{}", self.id));
        self.load = Some(Load::start(&self.service, options).await);
    }

    /// The running load.
    pub(crate) fn load(&self) -> &Load {
        self.load.as_ref().expect("start_load first")
    }

    /// Waits until `n` writes invoked at or after `t` were acknowledged.
    pub(crate) async fn acknowledged_writes_after(&self, t: Duration, n: usize) {
        let history = self.load().history();
        wait::until(
            &format!(
                "{n} writes invoked after {:.2}s are acknowledged",
                t.as_secs_f64()
            ),
            DEADLINE,
            || async {
                let done = history
                    .ops()
                    .iter()
                    .filter(|op| op.invoke >= t && op.is_acknowledged_write())
                    .count();
                if done >= n {
                    Ok(())
                } else {
                    Err(format!("{done} so far"))
                }
            },
        )
        .await;
    }

    /// Waits for the first acknowledged write invoked at or after `t`;
    /// returns how long after `t` it was acknowledged.
    pub(crate) async fn write_acknowledged_after(&self, t: Duration) -> Duration {
        let history = self.load().history();
        let op = wait::until(
            &format!(
                "a write invoked after {:.2}s is acknowledged",
                t.as_secs_f64()
            ),
            DEADLINE,
            || async { history.first_acknowledged_write_after(t) },
        )
        .await;
        op.complete.saturating_sub(t)
    }

    /// Waits until `n` writes invoked after `t` have come back
    /// unacknowledged; returns every such write.
    pub(crate) async fn failed_writes_after(&self, t: Duration, n: usize) -> Vec<Op> {
        let history = self.load().history();
        wait::until(
            &format!("{n} writes invoked after {:.2}s fail", t.as_secs_f64()),
            DEADLINE,
            || async {
                let failed: Vec<Op> = history
                    .unacknowledged_between(t, Duration::MAX)
                    .into_iter()
                    .filter(|op| matches!(op.call, Call::Write(_)) && op.node != "-")
                    .collect();
                (failed.len() >= n).then_some(failed)
            },
        )
        .await
    }

    /// Waits until node `i` reports its seal healthy (`want`) or not;
    /// returns the last error it reports.
    pub(crate) async fn seal_healthy(&self, i: usize, want: bool) -> String {
        let node = self.cluster.node(i);
        wait::until(
            &format!("{} reports its seal healthy = {want}", node.name()),
            DEADLINE,
            || async {
                let (_, status) = node
                    .try_call(
                        "GET",
                        "sys/seal-backend-status",
                        Some(self.cluster.root()),
                        None,
                    )
                    .await?;
                if status["healthy"] == json!(want) {
                    Ok(status["backends"][0]["last_error"]
                        .as_str()
                        .unwrap_or("(no error)")
                        .to_owned())
                } else {
                    Err(format!("{status}"))
                }
            },
        )
        .await
    }

    /// Waits until a sampled round at or after `t` saw node `i` as
    /// `role`; returns how long after `t`.
    pub(crate) async fn seen_as(&self, i: usize, role: Role, t: Duration) -> Duration {
        let at = wait::until(
            &format!(
                "{} is seen {role} after {:.2}s",
                self.name(i),
                t.as_secs_f64()
            ),
            DEADLINE,
            || async { self.roles.first(t, |roles| roles[i] == role) },
        )
        .await;
        at.saturating_sub(t)
    }

    /// Waits until a sampled round at or after `t` saw no active node;
    /// returns how long after `t`.
    pub(crate) async fn no_active_after(&self, t: Duration) -> Duration {
        let at = wait::until(
            &format!("a moment after {:.2}s with no active node", t.as_secs_f64()),
            DEADLINE,
            || async { self.roles.first(t, |roles| !roles.contains(&Role::Active)) },
        )
        .await;
        at.saturating_sub(t)
    }

    /// Waits until node `i`'s `sys/auto-unseal-status` names a failure of
    /// kind `kind` (`seal_access_denied`, `seal_unreachable`, `internal`,
    /// …); returns its message.
    pub(crate) async fn auto_unseal_error_kind(&self, i: usize, kind: &str) -> String {
        let node = self.cluster.node(i);
        wait::until(
            &format!(
                "{} reports an auto-unseal failure of kind {kind}",
                node.name()
            ),
            DEADLINE,
            || async {
                let (_, status) = node
                    .try_call("GET", "sys/auto-unseal-status", None, None)
                    .await?;
                if status["last_error_kind"] == json!(kind) {
                    Ok(status["last_error"].as_str().unwrap_or_default().to_owned())
                } else {
                    Err(format!("{status}"))
                }
            },
        )
        .await
    }

    /// Excuses node `i` from the "never two active" check until it says
    /// it is a standby (call before freezing it).
    pub(crate) fn excuse_until_standby(&self, i: usize) {
        if let Some(leaders) = &self.leaders {
            leaders.excuse_until_standby(i);
        }
    }

    /// Sends `n` writes to node `i` directly, in the background.
    pub(crate) fn writes_to(&self, i: usize, n: usize) -> JoinHandle<Vec<Outcome>> {
        let keys = self.load().keys();
        let writes = (0..n)
            .map(|j| {
                (
                    keys[j % keys.len()].clone(),
                    format!("direct-{}-{j}", self.name(i)),
                )
            })
            .collect();
        self.load()
            .spawn_writes_via(90 + i, &self.name(i), writes, DEADLINE)
    }

    /// SIGTERM node `i`, start it, and wait until it is unsealed and the
    /// cluster has one active node again.
    pub(crate) async fn rolling_restart(&mut self, i: usize) {
        self.step(format!("restart {} (SIGTERM, start)", self.name(i)));
        let node = self.cluster.node(i);
        assert!(
            node.terminate().is_some(),
            "{} stops on SIGTERM",
            node.name()
        );
        node.start_again().await;
        node.wait_sealed(false, DEADLINE).await;
        self.cluster.active(DEADLINE).await;
    }

    /// Declares the cluster recovered: one active node, every node
    /// unsealed. "Exactly one active" is checked from here to the end.
    pub(crate) async fn converged(&mut self) {
        for node in self.cluster.nodes() {
            node.wait_sealed(false, DEADLINE).await;
        }
        let active = self.cluster.active(DEADLINE).await;
        let at = self.now();
        self.step(format!(
            "converged: {} active, the others standby",
            self.name(active)
        ));
        self.converged = Some(at);
    }

    /// The side-by-side the issue asks for: HashiCorp Vault v1.1.2 with
    /// `seal "awskms"` started while the KMS denies the seal's user. Only
    /// when a Vault binary is cached (never required).
    pub(crate) async fn reference_vault_1_1_2(&self) {
        match super::vault_reference::run(&self.cluster).await {
            Some(observed) => self.note(format!("reference, HashiCorp Vault v1.1.2 with KMS permissions revoked: {observed}")),
            None => self.note(
                "reference: no HashiCorp Vault v1.1.2 binary cached (STRONGROOM_VAULT_BIN or $STRONGROOM_CACHE/vault-1.1.2/vault); side-by-side not run",
            ),
        }
    }

    /// The checks every scenario ends with.
    async fn check(&mut self) -> ScenarioReport {
        let converged = self
            .converged
            .expect("the scenario says when the cluster converged");
        self.acknowledged_writes_after(converged, WRITES_AFTER_CONVERGENCE)
            .await;
        let end = self.now();
        self.roles.stop().await;
        let one_active = self.roles.exactly_one_active(converged, end);
        let load = self.load.take().expect("the scenario ran a load");
        let finish = load.finish(DEADLINE).await;
        let verdict = finish.history.check();
        let versions = finish.history.version_anomalies();
        let summary = finish.history.summary();
        self.step(format!(
            "checked: {} acknowledged writes read back, {} lost; {verdict}; {} version anomalies; {}",
            finish.verified,
            finish.lost.len(),
            versions.len(),
            match &one_active {
                Ok(rounds) => format!("exactly one active in all {rounds} rounds after convergence"),
                Err(e) => e.clone(),
            }
        ));
        let refused: Vec<Op> = finish
            .history
            .ops()
            .into_iter()
            .filter(|op| !op.outcome.is_ok())
            .collect();
        let report = ScenarioReport {
            refusals: distinct_errors(&refused),
            id: self.id.to_owned(),
            title: self.title.to_owned(),
            figures: lock(&self.figures)
                .iter()
                .map(|(l, d)| (l.clone(), d.as_secs_f64()))
                .collect(),
            notes: lock(&self.notes).clone(),
            attempted: summary.attempted,
            writes_acknowledged: summary.writes_acknowledged,
            reads_acknowledged: summary.reads_acknowledged,
            failed: summary.failed,
            unknown: summary.unknown,
            lost: finish.lost.len(),
            anomalies: verdict.anomalies.len() + versions.len(),
            one_active_rounds: *one_active.as_ref().unwrap_or(&0),
            seconds: (end - self.began).as_secs_f64(),
            timeline: self.cluster.timeline().since(self.mark),
            per_second: finish.history.per_second(),
        };
        assert!(
            finish.lost.is_empty(),
            "acknowledged writes lost:\n{}",
            finish.lost.join("\n")
        );
        assert!(verdict.is_clean(), "{verdict}");
        assert!(versions.is_empty(), "{}", versions.join("\n"));
        one_active.unwrap_or_else(|e| panic!("after convergence: {e}"));
        if let Some(leaders) = self.leaders.take() {
            leaders.stop_and_check().await;
        }
        report
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The auto-unseal attempts a node's current run logged ("failed to
/// unseal core: …"), with their times.
pub(crate) struct LogRetries {
    pub(crate) lines: Vec<String>,
    pub(crate) times: Vec<OffsetDateTime>,
    pub(crate) span: Duration,
    /// WARN/ERROR lines of the same run that are not these.
    pub(crate) other_warnings: Vec<String>,
    pub(crate) fetch_attempts: usize,
}

impl LogRetries {
    /// Waits until node's current run has logged `n` failed attempts.
    pub(crate) async fn wait_for(node: &Node, n: usize, retry: Duration) -> Self {
        let deadline = DEADLINE + retry * u32::try_from(n).unwrap_or(1);
        let log = wait::until(
            &format!("{} logs {n} failed auto-unseal attempts", node.name()),
            deadline,
            || async {
                let log = node.log_since_start();
                let count = log.matches("failed to unseal core").count();
                (count >= n).then_some(log)
            },
        )
        .await;
        Self::parse(&log)
    }

    fn parse(log: &str) -> Self {
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("failed to unseal core"))
            .map(str::to_owned)
            .collect();
        let times: Vec<OffsetDateTime> = lines
            .iter()
            .filter_map(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            })
            .collect();
        let span = match (times.first(), times.last()) {
            (Some(a), Some(b)) => Duration::try_from(*b - *a).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let other_warnings = log
            .lines()
            .filter(|l| {
                (l.contains(" WARN ") || l.contains(" ERROR "))
                    && !l.contains("failed to unseal core")
            })
            .map(str::to_owned)
            .collect();
        let fetch_attempts = log.matches("attempting fetch").count();
        Self {
            lines,
            times,
            span,
            other_warnings,
            fetch_attempts,
        }
    }

    fn gaps(&self) -> Vec<Duration> {
        self.times
            .windows(2)
            .map(|w| Duration::try_from(w[1] - w[0]).unwrap_or_default())
            .collect()
    }

    /// "0.6 s, 1.2 s, 1.9 s".
    pub(crate) fn gaps_text(&self) -> String {
        self.gaps()
            .iter()
            .map(|g| format!("{:.1} s", g.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line per attempt, attempts spaced by the backoff (never closer
    /// than half the first wait, never further apart than the retry
    /// interval plus one attempt), and no other warning repeating.
    pub(crate) fn assert_backoff(&self, retry: Duration) {
        assert_eq!(
            self.times.len(),
            self.lines.len(),
            "every line has a timestamp: {:?}",
            self.lines
        );
        assert!(
            self.fetch_attempts <= self.lines.len() + 1,
            "one failure line per attempt: {} attempts, {} failure lines",
            self.fetch_attempts,
            self.lines.len()
        );
        for gap in self.gaps() {
            assert!(
                gap >= Duration::from_millis(400),
                "attempts {gap:?} apart: a flood, not a backoff (gaps {})",
                self.gaps_text()
            );
            assert!(
                gap <= retry + Duration::from_secs(6),
                "attempts {gap:?} apart with a {retry:?} retry interval (gaps {})",
                self.gaps_text()
            );
        }
        assert!(
            self.other_warnings.len() <= self.lines.len(),
            "other warnings repeat while sealed:\n{}",
            self.other_warnings.join("\n")
        );
    }
}

/// A log line without its leading timestamp.
pub(crate) fn without_timestamp(line: &str) -> String {
    line.split_once(' ')
        .map_or(line, |(_, rest)| rest)
        .trim()
        .to_owned()
}

/// The longest a storage write may take to fail when Consul cannot
/// answer: every attempt's request timeout, on the active node and once
/// more for a forwarding standby, plus slack for a loaded machine.
pub(crate) fn storage_bound(o: &KmsClusterOptions) -> Duration {
    o.consul_request_timeout * (o.consul_max_retries + 1) * 2 + Duration::from_secs(5)
}

/// The distinct reasons among failed operations, with counts.
pub(crate) fn distinct_errors(ops: &[Op]) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::new();
    for op in ops {
        let kind = if matches!(op.call, Call::Write(_)) {
            "write"
        } else {
            "read"
        };
        *counts
            .entry(format!("{kind} {}", outcome_text(&op.outcome)))
            .or_insert(0) += 1;
    }
    let mut by_count: Vec<(String, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_count
        .into_iter()
        .map(|(text, n)| format!("{n}× {text}"))
        .collect()
}

/// An outcome in a few words.
pub(crate) fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { version, .. } => format!("acknowledged (version {version:?})"),
        Outcome::Failed(why) => format!("failed: {why}"),
        Outcome::Unknown(why) => format!("unknown: {why}"),
    }
}
