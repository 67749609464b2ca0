//! Clients that keep a Vault-API service busy during a fault and record
//! every operation in a [`History`].
//!
//! * [`Service`] stands in for a Kubernetes Service in front of the nodes:
//!   it probes each node's readiness URL (the chart's
//!   `/v1/sys/health?standbyok=true`) and hands requests round-robin to the
//!   nodes that passed their last probe. Readiness changes go on the
//!   timeline.
//! * [`Load`] runs a few workers that write and read numbered KV v2
//!   secrets through the service — unique values, a handful of keys so
//!   writers collide — recording each operation's invocation, completion
//!   and outcome. Stopping it lets in-flight operations finish.
//! * [`Load::finish`] reads every key once more, then every acknowledged
//!   write back by its version: what the scenario's checks need
//!   ([`History::check`], [`Finish::lost`]).
//!
//! ```no_run
//! # async fn example(nodes: &[testkit::Node], root: &str, timeline: &testkit::Timeline) {
//! use std::time::Duration;
//! use testkit::load::{Load, LoadOptions, Service};
//!
//! let service = Service::start(nodes, timeline);
//! let load = Load::start(&service, LoadOptions::new(root, "secret", "scenario-1")).await;
//! // ... inject a fault, wait for recovery ...
//! let finish = load.finish(Duration::from_secs(60)).await;
//! assert!(finish.lost.is_empty());
//! assert!(finish.history.check().is_clean());
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::history::{Call, History, Outcome};
use crate::node::Node;
use crate::timeline::Timeline;
use crate::wait;

/// The readiness probe the Helm chart configures (`readinessProbe`).
pub const READINESS_PATH: &str = "sys/health?standbyok=true";
/// The liveness probe the Helm chart configures (`livenessProbe`).
pub const LIVENESS_PATH: &str = "sys/health?standbyok=true&sealedcode=204&uninitcode=204";

#[derive(Debug)]
struct Endpoint {
    name: String,
    base: String,
    ready: AtomicBool,
}

/// Nodes behind one name, as a Kubernetes Service with readiness probes
/// presents them (see the [module docs](self)). Probing stops when the
/// service drops.
#[derive(Debug)]
pub struct Service {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    timeline: Timeline,
    stop: CancellationToken,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Service {
    /// Starts probing `nodes` every 200 ms (1 s timeout, as kubelet's
    /// `timeoutSeconds: 1`) with [`READINESS_PATH`].
    pub fn start(nodes: &[Node], timeline: &Timeline) -> Arc<Self> {
        Self::start_on(
            nodes
                .iter()
                .map(|n| (n.name().to_owned(), n.addr().to_owned()))
                .collect(),
            timeline,
            Duration::from_millis(200),
        )
    }

    /// Starts probing `(name, base URL)` endpoints every `every`.
    pub fn start_on(
        endpoints: Vec<(String, String)>,
        timeline: &Timeline,
        every: Duration,
    ) -> Arc<Self> {
        let service = Arc::new(Self {
            endpoints: endpoints
                .into_iter()
                .map(|(name, base)| Endpoint {
                    name,
                    base,
                    ready: AtomicBool::new(false),
                })
                .collect(),
            next: AtomicUsize::new(0),
            timeline: timeline.clone(),
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&service);
        let stop = service.stop.clone();
        tokio::spawn(async move {
            let http = client(Duration::from_secs(1));
            loop {
                let Some(service) = weak.upgrade() else {
                    return;
                };
                service.probe_all(&http).await;
                drop(service);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        service
    }

    async fn probe_all(&self, http: &reqwest::Client) {
        let probes = self.endpoints.iter().map(|e| async move {
            let url = format!("{}/v1/{READINESS_PATH}", e.base);
            let answer = http.get(&url).send().await;
            let (ready, why) = match answer {
                Ok(r) if (200..400).contains(&r.status().as_u16()) => (true, String::new()),
                Ok(r) => (false, r.status().as_u16().to_string()),
                Err(e) if e.is_timeout() => (false, "probe timed out".to_owned()),
                Err(_) => (false, "no connection".to_owned()),
            };
            (e, ready, why)
        });
        for (e, ready, why) in futures::future::join_all(probes).await {
            if e.ready.swap(ready, Ordering::SeqCst) != ready {
                let what = if ready {
                    "ready: in the service".to_owned()
                } else {
                    format!("not ready ({why}): out of the service")
                };
                self.timeline.record(&e.name, what);
            }
        }
    }

    /// Waits until the service has probed every endpoint once and at least
    /// one is ready.
    ///
    /// # Panics
    /// When none is ready within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let http = client(Duration::from_secs(1));
        wait::until("a node is ready behind the service", timeout, || async {
            self.probe_all(&http).await;
            !self.ready_names().is_empty()
        })
        .await;
    }

    /// The endpoints that passed their last probe.
    pub fn ready_names(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|e| e.ready.load(Ordering::SeqCst))
            .map(|e| e.name.clone())
            .collect()
    }

    /// The next ready endpoint, round-robin: `(name, base URL)`.
    pub fn pick(&self) -> Option<(String, String)> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| e.ready.load(Ordering::SeqCst))
            .map(|e| (e.name.clone(), e.base.clone()))
    }

    /// The endpoint named `name`: `(name, base URL)`.
    ///
    /// # Panics
    /// When there is none.
    pub fn endpoint(&self, name: &str) -> (String, String) {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.name.clone(), e.base.clone()))
            .unwrap_or_else(|| panic!("no endpoint {name}"))
    }

    /// The timeline readiness changes go to.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"))
}

/// What the load does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Concurrent workers (default 4).
    pub workers: usize,
    /// Keys they share (default 4, so writes to one key overlap).
    pub keys: usize,
    /// The token.
    pub token: String,
    /// The KV v2 mount.
    pub mount: String,
    /// Keys are `<prefix>/k<i>`.
    pub prefix: String,
    /// Writes per hundred operations (default 50).
    pub write_percent: u64,
    /// A worker's pause after each operation (default 40 ms): the load is
    /// steady, not a benchmark.
    pub pause: Duration,
    /// Per-request timeout; a request that runs into it is
    /// [`Outcome::Unknown`] (default 10 s).
    pub timeout: Duration,
}

impl LoadOptions {
    /// Default load on `mount` (KV v2) under `prefix`, with `token`.
    pub fn new(token: &str, mount: &str, prefix: &str) -> Self {
        Self {
            workers: 4,
            keys: 4,
            token: token.to_owned(),
            mount: mount.to_owned(),
            prefix: prefix.to_owned(),
            write_percent: 50,
            pause: Duration::from_millis(40),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Whether writes are being acknowledged, to note changes on the
/// timeline once instead of per operation.
#[derive(Debug, Default)]
struct WriteState {
    failing: Mutex<Option<String>>,
}

impl WriteState {
    fn note(&self, timeline: &Timeline, ok: bool, why: impl FnOnce() -> String) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match (ok, failing.is_some()) {
            (true, true) => {
                *failing = None;
                timeline.record("load", "writes acknowledged again");
            }
            (false, false) => {
                let why = why();
                timeline.record("load", format!("a write was not acknowledged: {why}"));
                *failing = Some(why);
            }
            _ => {}
        }
    }
}

/// A running load (see the [module docs](self)).
#[derive(Debug)]
pub struct Load {
    service: Arc<Service>,
    options: LoadOptions,
    history: History,
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        // A scenario that panics must not leave its workers running.
        self.stop.cancel();
    }
}

/// What [`Load::finish`] found.
#[derive(Debug)]
pub struct Finish {
    /// Every operation, the final reads included.
    pub history: History,
    /// Acknowledged writes that did not read back with their value (by
    /// version), each with what was read instead.
    pub lost: Vec<String>,
    /// Acknowledged writes read back.
    pub verified: usize,
}

impl Load {
    /// Raises the mount's `max_versions` (so every acknowledged write stays
    /// readable by version) and starts the workers.
    ///
    /// # Panics
    /// When the mount's config cannot be written within 60 s.
    pub async fn start(service: &Arc<Service>, options: LoadOptions) -> Self {
        service.wait_ready(Duration::from_secs(60)).await;
        let http = client(options.timeout);
        wait::until(
            &format!("{}/config takes max_versions", options.mount),
            Duration::from_secs(60),
            || async {
                let (_, base) = service.pick().ok_or("no ready node")?;
                let url = format!("{base}/v1/{}/config", options.mount);
                let answer = http
                    .post(&url)
                    .header("X-Vault-Token", &options.token)
                    .json(&json!({"max_versions": 1_000_000}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("{}", answer.status()))
                }
            },
        )
        .await;
        let history = History::new(service.timeline());
        let stop = CancellationToken::new();
        let state = Arc::new(WriteState::default());
        let seq = Arc::new(AtomicU64::new(0));
        let workers = (0..options.workers)
            .map(|w| {
                tokio::spawn(worker(
                    w,
                    service.clone(),
                    options.clone(),
                    history.clone(),
                    stop.clone(),
                    state.clone(),
                    seq.clone(),
                ))
            })
            .collect();
        service.timeline().record(
            "load",
            format!(
                "{} workers on {} keys under {}/{}",
                options.workers, options.keys, options.mount, options.prefix
            ),
        );
        Self {
            service: service.clone(),
            options,
            history,
            stop,
            workers,
        }
    }

    /// The history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The keys the workers use.
    pub fn keys(&self) -> Vec<String> {
        (0..self.options.keys)
            .map(|i| format!("{}/k{i}", self.options.prefix))
            .collect()
    }

    /// Writes `value` to `key` through the node `name` (not the service),
    /// recorded in the history as client `client` — for requests a scenario
    /// aims at one node (a frozen one, say).
    pub async fn write_via(&self, client: usize, name: &str, key: &str, value: &str) -> Outcome {
        self.spawn_writes_via(
            client,
            name,
            vec![(key.to_owned(), value.to_owned())],
            self.options.timeout,
        )
        .await
        .ok()
        .and_then(|mut outcomes| outcomes.pop())
        .unwrap_or_else(|| Outcome::Unknown("the write task failed".to_owned()))
    }

    /// Sends the `(key, value)` writes at once through the node `name`
    /// (not the service) as client `client`, each with `timeout`, in the
    /// background; the task returns their outcomes (each also recorded in
    /// the history). For requests that will wait (a frozen node).
    pub fn spawn_writes_via(
        &self,
        client: usize,
        name: &str,
        writes: Vec<(String, String)>,
        timeout: Duration,
    ) -> JoinHandle<Vec<Outcome>> {
        let (name, base) = self.service.endpoint(name);
        let http = crate::load::client(timeout);
        let options = self.options.clone();
        let history = self.history.clone();
        tokio::spawn(async move {
            let sends = writes.iter().map(|(key, value)| {
                let (http, base, options, history, name) =
                    (&http, &base, &options, &history, &name);
                async move {
                    let invoke = history.now();
                    let outcome = kv2_write(http, base, options, key, value).await;
                    history.record(
                        client,
                        key,
                        Call::Write(value.clone()),
                        name,
                        invoke,
                        history.now(),
                        outcome.clone(),
                    );
                    outcome
                }
            });
            futures::future::join_all(sends).await
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Stops the workers (their in-flight operations finish), reads every
    /// key once more through the service, then reads every acknowledged
    /// write back by its version.
    ///
    /// # Panics
    /// When the final reads are not answered within `timeout`.
    pub async fn finish(mut self, timeout: Duration) -> Finish {
        self.stop.cancel();
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        let timeline = self.service.timeline().clone();
        let s = self.history.summary();
        timeline.record(
            "load",
            format!(
                "stopped: {} operations, {} writes acknowledged, {} failed, {} unknown",
                s.attempted, s.writes_acknowledged, s.failed, s.unknown
            ),
        );
        let http = client(self.options.timeout);
        let final_client = self.options.workers;
        for key in self.keys() {
            wait::until(
                &format!("a final read of {key} is answered"),
                timeout,
                || async {
                    let (name, base) = self.service.pick().ok_or("no ready node")?;
                    let invoke = self.history.now();
                    let outcome = kv2_read(&http, &base, &self.options, &key, None).await;
                    self.history.record(
                        final_client,
                        &key,
                        Call::Read,
                        &name,
                        invoke,
                        self.history.now(),
                        outcome.clone(),
                    );
                    match outcome {
                        Outcome::Ok { .. } => Ok(()),
                        Outcome::Failed(e) | Outcome::Unknown(e) => Err(e),
                    }
                },
            )
            .await;
        }
        let mut lost = Vec::new();
        let mut verified = 0;
        for op in self.history.ops() {
            let (Call::Write(value), Outcome::Ok { version, .. }) = (&op.call, &op.outcome) else {
                continue;
            };
            let Some(version) = version else {
                lost.push(format!("{op}: acknowledged without a version"));
                continue;
            };
            let seen = wait::until(
                &format!("{} version {version} is read back", op.key),
                timeout,
                || async {
                    let (_, base) = self.service.pick().ok_or("no ready node")?;
                    match kv2_read(&http, &base, &self.options, &op.key, Some(*version)).await {
                        Outcome::Ok { value, .. } => Ok(value),
                        Outcome::Failed(e) | Outcome::Unknown(e) => Err(e),
                    }
                },
            )
            .await;
            if seen.as_deref() == Some(value.as_str()) {
                verified += 1;
            } else {
                lost.push(format!("{op}: version {version} reads {seen:?}"));
            }
        }
        timeline.record(
            "load",
            format!(
                "{verified} acknowledged writes read back by version, {} lost",
                lost.len()
            ),
        );
        Finish {
            history: self.history.clone(),
            lost,
            verified,
        }
    }
}

/// A small xorshift: the workers' choices need no quality, only variety.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn worker(
    id: usize,
    service: Arc<Service>,
    options: LoadOptions,
    history: History,
    stop: CancellationToken,
    state: Arc<WriteState>,
    seq: Arc<AtomicU64>,
) {
    let http = client(options.timeout);
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
    let keys = options.keys.max(1) as u64;
    while !stop.is_cancelled() {
        let key = format!("{}/k{}", options.prefix, next_random(&mut rng) % keys);
        let write = next_random(&mut rng) % 100 < options.write_percent;
        let invoke = history.now();
        let (node, call, outcome) = match service.pick() {
            None => (
                "-".to_owned(),
                if write {
                    Call::Write(format!("c{id}-{}", seq.fetch_add(1, Ordering::Relaxed)))
                } else {
                    Call::Read
                },
                Outcome::Failed("no ready node behind the service".to_owned()),
            ),
            Some((name, base)) if write => {
                let value = format!("c{id}-{}", seq.fetch_add(1, Ordering::Relaxed));
                let outcome = kv2_write(&http, &base, &options, &key, &value).await;
                (name, Call::Write(value), outcome)
            }
            Some((name, base)) => {
                let outcome = kv2_read(&http, &base, &options, &key, None).await;
                (name, Call::Read, outcome)
            }
        };
        let ok = outcome.is_ok();
        if write {
            state.note(service.timeline(), ok, || match &outcome {
                Outcome::Failed(e) | Outcome::Unknown(e) => format!("{node}: {e}"),
                Outcome::Ok { .. } => String::new(),
            });
        }
        history.record(id, &key, call, &node, invoke, history.now(), outcome);
        let pause = if ok { options.pause } else { options.pause * 3 };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Why a request got no HTTP answer.
enum NoAnswer {
    /// Nothing was sent (connection refused): certainly no effect.
    NotSent(String),
    /// Sent, but the answer never came (timeout, cut connection).
    Lost(String),
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Option<String>, Value), NoAnswer> {
    let mut request = http.request(method, url).header("X-Vault-Token", token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_connect() {
            NoAnswer::NotSent(format!("not sent: {}", root_cause(&e)))
        } else if e.is_timeout() {
            NoAnswer::Lost("timed out".to_owned())
        } else {
            NoAnswer::Lost(root_cause(&e))
        }
    })?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| NoAnswer::Lost(format!("{status}, body lost: {}", root_cause(&e))))?;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, location, value))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn errors_of(status: u16, body: &Value) -> String {
    match body["errors"].as_array() {
        Some(errors) if !errors.is_empty() => format!(
            "{status} {}",
            errors
                .iter()
                .map(|e| e.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => format!("{status} {body}"),
    }
}

/// `PUT <mount>/data/<key>` with `{"data": {"v": value}}` through `base`,
/// following one 307 to the active node as Vault's clients do. An answer
/// is [`Outcome::Ok`] with the version; a refused connection on the first
/// leg is [`Outcome::Failed`]; anything else [`Outcome::Unknown`] (a
/// standby may have forwarded it before failing).
pub async fn kv2_write(
    http: &reqwest::Client,
    base: &str,
    options: &LoadOptions,
    key: &str,
    value: &str,
) -> Outcome {
    let path = format!("/v1/{}/data/{key}", options.mount);
    let body = json!({"data": {"v": value}});
    let mut url = format!("{base}{path}");
    for leg in 0..2 {
        match send(
            http,
            reqwest::Method::PUT,
            &url,
            &options.token,
            Some(&body),
        )
        .await
        {
            Ok((200 | 204, _, answer)) => {
                return Outcome::Ok {
                    value: None,
                    version: answer["data"]["version"].as_u64(),
                };
            }
            Ok((307, Some(location), _)) if leg == 0 => url = location,
            Ok((status, _, answer)) => return Outcome::Unknown(errors_of(status, &answer)),
            Err(NoAnswer::NotSent(e)) if leg == 0 => return Outcome::Failed(e),
            Err(NoAnswer::NotSent(e) | NoAnswer::Lost(e)) => return Outcome::Unknown(e),
        }
    }
    Outcome::Unknown("redirected twice".to_owned())
}

/// `GET <mount>/data/<key>` (at `version` when given) through `base`,
/// following one 307: [`Outcome::Ok`] with the value of `v` and the
/// version (no value on 404), otherwise [`Outcome::Failed`] (reads have no
/// effect, so an error is only an error).
pub async fn kv2_read(
    http: &reqwest::Client,
    base: &str,
    options: &LoadOptions,
    key: &str,
    version: Option<u64>,
) -> Outcome {
    let mut url = format!("{base}/v1/{}/data/{key}", options.mount);
    if let Some(v) = version {
        url.push_str(&format!("?version={v}"));
    }
    for leg in 0..2 {
        match send(http, reqwest::Method::GET, &url, &options.token, None).await {
            Ok((200, _, answer)) => {
                return Outcome::Ok {
                    value: answer["data"]["data"]["v"].as_str().map(str::to_owned),
                    version: answer["data"]["metadata"]["version"].as_u64(),
                };
            }
            Ok((404, _, answer)) if answer["errors"].as_array().is_some_and(Vec::is_empty) => {
                return Outcome::Ok {
                    value: None,
                    version: None,
                };
            }
            Ok((307, Some(location), _)) if leg == 0 => url = location,
            Ok((status, _, answer)) => return Outcome::Failed(errors_of(status, &answer)),
            Err(NoAnswer::NotSent(e) | NoAnswer::Lost(e)) => return Outcome::Failed(e),
        }
    }
    Outcome::Failed("redirected twice".to_owned())
}
