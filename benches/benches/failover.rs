//! Failover time of a three-node cluster: from the moment the active node
//! is told to go (SIGTERM, `sys/step-down`) or dies (SIGKILL) until a
//! *surviving* node accepts a write as the new active node (writes carry
//! `X-Vault-No-Request-Forwarding`, so a standby's 307 does not count).
//! The same harness, in the same run, measures
//!
//! * **Strongroom** on a real Consul (`storage "consul"`, session TTL 2 s,
//!   lock-delay 1 s, an agent with `session_ttl_min = "1s"`);
//! * **OpenBao** with integrated raft (three `bao server` nodes on loopback
//!   with `retry_join`, default raft settings), the reference named by the
//!   targets;
//! * **HashiCorp Vault v1.1.2** on the same Consul agent with the same
//!   session TTL (its lock-delay is Consul's fixed 15 s), when it is built
//!   (`STRONGROOM_VAULT_BIN`, or the cache `scripts/setup-tools.sh` builds
//!   it into); it is skipped, with a line saying so, when absent.
//!
//! Also the forwarded KV GET through a standby against the same GET sent
//! to the active node (req/s ratio), with `kv_load` when `KV_LOAD_BIN` is
//! set.
//!
//! Run it with `benches/failover/run.sh` (release build of the server,
//! tool paths); `FAILOVER_RUNS` (default 10) sets the runs per scenario.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use testkit::consul::ConsulDev;
use testkit::ha::{HaCluster, HaOptions};
use testkit::ports::{self, Port};
use testkit::{ConsulOptions, NodeConfig, Process, ReferenceServer, Scenario, wait};

const STABLE: Duration = Duration::from_secs(120);
/// A failover that takes longer than this is recorded as failed.
const GIVE_UP: Duration = Duration::from_secs(60);
const SESSION_TTL: Duration = Duration::from_secs(2);
const LOCK_DELAY: Duration = Duration::from_secs(1);
/// A sample slower than this prints every failed attempt before it.
const SLOW_SAMPLE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Graceful,
    StepDown,
    Crash,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Graceful => "graceful (SIGTERM)",
            Self::StepDown => "sys/step-down",
            Self::Crash => "crash (SIGKILL)",
        }
    }
}

/// What keeps a system's processes alive.
enum Holder {
    Strongroom(Box<HaCluster>),
    /// OpenBao or Vault nodes.
    Reference(Vec<ReferenceServer>),
}

/// Three nodes of one system, initialised, unsealed, KV v1 at `kv/`.
struct Cluster {
    name: &'static str,
    holder: Holder,
    bases: Vec<String>,
    root: String,
    key: String,
    http: reqwest::Client,
    /// Integrated raft: also wait until every node is a voter.
    raft: bool,
}

impl Cluster {
    fn process(&self, i: usize) -> &Process {
        match &self.holder {
            Holder::Strongroom(c) => c.node(i).process(),
            Holder::Reference(servers) => servers[i].process(),
        }
    }

    async fn health(&self, i: usize) -> Option<u16> {
        let url = format!("{}/v1/sys/health", self.bases[i]);
        Some(self.http.get(url).send().await.ok()?.status().as_u16())
    }

    /// Waits until one node answers 200 and every other 429; its index.
    async fn stable(&self) -> usize {
        wait::until(
            &format!("{}: one active, two standbys", self.name),
            STABLE,
            || async {
                let mut codes = Vec::new();
                for i in 0..self.bases.len() {
                    codes.push(self.health(i).await);
                }
                let active: Vec<usize> = (0..codes.len())
                    .filter(|i| codes[*i] == Some(200))
                    .collect();
                let standbys = codes.iter().filter(|c| **c == Some(429)).count();
                let one = match active.as_slice() {
                    [one] if standbys == codes.len() - 1 => *one,
                    _ => return Err(format!("{codes:?}")),
                };
                if self.raft {
                    // Autopilot makes a (re)joined node a voter only once it is
                    // stable; until every server is a healthy voter, losing
                    // the leader can lose the quorum or the leadership transfer.
                    let state = self
                        .call(one, "GET", "sys/storage/raft/autopilot/state", None)
                        .await;
                    let body = state.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
                    let data = &body["data"];
                    let servers = data["servers"].as_object().map_or(0, |s| {
                        s.values()
                            .filter(|s| {
                                s["healthy"] == true
                                    && matches!(s["status"].as_str(), Some("voter" | "leader"))
                            })
                            .count()
                    });
                    if data["healthy"] != true || servers != self.bases.len() {
                        return Err(format!(
                            "raft autopilot: healthy {} voters {servers}: {}",
                            data["healthy"], data["servers"]
                        ));
                    }
                }
                Ok(one)
            },
        )
        .await
    }

    async fn call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}/v1/{path}", self.bases[i]),
            )
            .header("X-Vault-Token", &self.root)
            .header("X-Vault-No-Request-Forwarding", "true");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        Some((status, value))
    }

    async fn unseal(&self, i: usize) {
        wait::until(
            &format!("{} node {i} unsealed", self.name),
            STABLE,
            || async {
                match self
                    .call(i, "PUT", "sys/unseal", Some(json!({"key": self.key})))
                    .await
                {
                    Some((200, body)) if body["sealed"] == false => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    /// One failover: how long until a survivor accepted a write; `None`
    /// when none did within [`GIVE_UP`].
    async fn failover(&self, kind: Kind, run: usize) -> Option<Duration> {
        let old = self.stable().await;
        let survivors: Vec<usize> = (0..self.bases.len()).filter(|i| *i != old).collect();
        let started = Instant::now();
        let step_down = match kind {
            Kind::Graceful => {
                self.process(old).signal("TERM");
                None
            }
            Kind::Crash => {
                self.process(old).kill9();
                None
            }
            Kind::StepDown => {
                let http = self.http.clone();
                let url = format!("{}/v1/sys/step-down", self.bases[old]);
                let token = self.root.clone();
                Some(tokio::spawn(async move {
                    http.put(url).header("X-Vault-Token", token).send().await
                }))
            }
        };
        let mut attempt = 0u64;
        // Each failed attempt: when it ended, and every survivor's answer
        // (status and error text), printed for a slow sample.
        let mut trail: Vec<(Duration, Vec<String>)> = Vec::new();
        let took = loop {
            attempt += 1;
            // The first survivor to accept stops the clock: a standby that
            // knows no active node holds a request up to 2 s, and waiting
            // for its answer too would stretch the sample.
            let mut writes: FuturesUnordered<_> = survivors
                .iter()
                .map(|i| async move {
                    let path = format!("kv/failover-{run}-{attempt}-{i}");
                    self.call(*i, "PUT", &path, Some(json!({"v": "x"}))).await
                })
                .collect();
            let mut answers = Vec::new();
            let mut seen = Vec::new();
            while let Some(answer) = writes.next().await {
                if matches!(answer, Some((200 | 204, _))) {
                    break;
                }
                seen.push(format!(
                    "{} at {:?}",
                    short_answer(answer.as_ref()),
                    started.elapsed()
                ));
                answers.push(answer);
            }
            if answers.len() < survivors.len() {
                break Some(started.elapsed());
            }
            trail.push((started.elapsed(), seen));
            if started.elapsed() > GIVE_UP {
                eprintln!(
                    "{}: no survivor accepted a write within {GIVE_UP:?}: {answers:?}",
                    self.name
                );
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if took.is_some_and(|t| t > SLOW_SAMPLE) {
            eprintln!(
                "{} {kind:?} run {run}: {took:?}; attempts before: {}",
                self.name,
                trail
                    .iter()
                    .map(|(at, answers)| format!("[{at:?}: {}]", answers.join(" | ")))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if let Some(task) = step_down {
            let _ = task.await;
        }
        match kind {
            Kind::Graceful => {
                assert!(
                    self.process(old)
                        .wait_exit(Duration::from_secs(60))
                        .is_some(),
                    "{} did not exit after SIGTERM",
                    self.name
                );
                self.process(old).start_again();
                self.unseal(old).await;
            }
            Kind::Crash => {
                self.process(old).start_again();
                self.unseal(old).await;
            }
            Kind::StepDown => {}
        }
        took
    }
}

/// A write's answer in a few words: the status and the start of the
/// error text, or that there was none.
fn short_answer(answer: Option<&(u16, Value)>) -> String {
    match answer {
        None => "no answer".to_owned(),
        Some((code, body)) => {
            let text = body["errors"][0].as_str().unwrap_or_default();
            format!("{code} {}", text.chars().take(80).collect::<String>())
        }
    }
}

fn runs() -> usize {
    std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Whether `FAILOVER_SYSTEMS` (comma-separated: strongroom, openbao,
/// vault; all by default) names `system`.
fn wanted(system: &str) -> bool {
    std::env::var("FAILOVER_SYSTEMS")
        .map_or(true, |list| list.split(',').any(|s| s.trim() == system))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Initialises node 0 (one key share), unseals it, then the others
/// (`first_alone`: wait for node 0 to be active before the others, as
/// raft's joiners need a leader), and mounts KV v1 at `kv/`.
async fn init_cluster(c: &mut Cluster, first_alone: bool) {
    // OpenBao's init on raft takes seconds: no short timeout here, and
    // only a connection that could not be made is retried.
    let patient = reqwest::Client::new();
    let response = wait::until(&format!("{} answers sys/init", c.name), STABLE, || async {
        patient
            .put(format!("{}/v1/sys/init", c.bases[0]))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let status = response.status();
    let init: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{}: init: {status} {init}", c.name);
    c.root = init["root_token"].as_str().unwrap().to_owned();
    c.key = init["keys_base64"][0].as_str().unwrap().to_owned();
    c.unseal(0).await;
    if first_alone {
        wait::until(&format!("{} node 0 active", c.name), STABLE, || async {
            c.health(0).await == Some(200)
        })
        .await;
    }
    for i in 1..c.bases.len() {
        c.unseal(i).await;
    }
    let active = c.stable().await;
    let (code, body) = c
        .call(
            active,
            "POST",
            "sys/mounts/kv",
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await
        .unwrap();
    assert!(
        code == 204 || code == 200,
        "{}: mount kv: {code} {body}",
        c.name
    );
}

async fn strongroom(sc: &Scenario, consul: &ConsulDev) -> Cluster {
    let binary = testkit::tools::strongroom_bin();
    let mut options = HaOptions::default();
    options.session_ttl = SESSION_TTL;
    options.lock_delay = LOCK_DELAY;
    let base = NodeConfig::new().binary(binary).attr("log_level", "warn");
    let cluster = HaCluster::start(sc, consul, base, options).await;
    let bases = cluster.nodes().iter().map(|n| n.base.clone()).collect();
    let root = cluster.root().to_owned();
    let key = cluster.keys()[0].clone();
    let c = Cluster {
        name: "Strongroom (Consul)",
        holder: Holder::Strongroom(Box::new(cluster)),
        bases,
        root,
        key,
        http: http(),
        raft: false,
    };
    let active = c.stable().await;
    c.call(
        active,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await
    .unwrap();
    c
}

async fn openbao(sc: &Scenario) -> Cluster {
    let binary = testkit::tools::bao_bin();
    let ports: Vec<(Port, Port)> = (0..3)
        .map(|_| (ports::reserve(), ports::reserve()))
        .collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|(api, _)| format!("http://{}", api.addr()))
        .collect();
    let joins: String = bases
        .iter()
        .map(|base| format!("  retry_join {{\n    leader_api_addr = \"{base}\"\n  }}\n"))
        .collect();
    let mut servers = Vec::new();
    for (i, ports) in ports.into_iter().enumerate() {
        // bao0 bootstraps the cluster at init; the others join it.
        let joins = if i == 0 { "" } else { joins.as_str() };
        let stanzas = format!(
            "storage \"raft\" {{\n  path = \"{{dir}}\"\n  node_id = \"bao{i}\"\n{joins}}}\nlog_level = \"warn\"\n"
        );
        servers.push(
            ReferenceServer::start_on(sc, &format!("bao{i}"), &binary, ports, &stanzas).await,
        );
    }
    let mut c = Cluster {
        name: "OpenBao (integrated raft)",
        holder: Holder::Reference(servers),
        bases,
        root: String::new(),
        key: String::new(),
        http: http(),
        raft: true,
    };
    init_cluster(&mut c, true).await;
    c
}

async fn vault_112(sc: &Scenario, consul: &ConsulDev, binary: PathBuf) -> Cluster {
    let prefix = testkit::consul::unique_path();
    let stanzas = format!(
        "storage \"consul\" {{\n  address = \"{}\"\n  path = \"{prefix}\"\n  session_ttl = \"{}s\"\n  lock_wait_time = \"5s\"\n  disable_registration = \"true\"\n}}\nlog_level = \"warn\"\n",
        consul.http_address(),
        SESSION_TTL.as_secs(),
    );
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(ReferenceServer::start(sc, &format!("vault{i}"), &binary, &stanzas).await);
    }
    let bases = servers.iter().map(|s| s.client().base.clone()).collect();
    let mut c = Cluster {
        name: "Vault 1.1.2 (same Consul)",
        holder: Holder::Reference(servers),
        bases,
        root: String::new(),
        key: String::new(),
        http: http(),
        raft: false,
    };
    init_cluster(&mut c, false).await;
    c
}

struct Figures {
    system: &'static str,
    kind: Kind,
    samples: Vec<Duration>,
    /// Runs in which no survivor became active within [`GIVE_UP`].
    failed: usize,
}

impl Figures {
    fn median(&self) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s.get(s.len() / 2).copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

async fn measure(c: &Cluster, kinds: &[Kind], runs: usize, out: &mut Vec<Figures>) {
    for kind in kinds {
        let mut samples = Vec::new();
        let mut failed = 0;
        for run in 0..runs {
            let Some(took) = c.failover(*kind, run).await else {
                failed += 1;
                eprintln!(
                    "{:<28} {:<20} run {:>2}: no new active",
                    c.name,
                    kind.label(),
                    run + 1
                );
                continue;
            };
            eprintln!(
                "{:<28} {:<20} run {:>2}: {}",
                c.name,
                kind.label(),
                run + 1,
                ms(took)
            );
            if std::env::var_os("FAILOVER_LOG_TAILS").is_some() {
                for i in 0..c.bases.len() {
                    eprintln!("--- node {i}\n{}", c.process(i).tail(15));
                }
            }
            samples.push(took);
        }
        out.push(Figures {
            system: c.name,
            kind: *kind,
            samples,
            failed,
        });
    }
}

/// Forwarded GET through a standby against the same GET to the active node.
fn forwarded_get(c: &Cluster, active: usize) -> Option<String> {
    let load = std::env::var_os("KV_LOAD_BIN")?;
    let standby = (active + 1) % c.bases.len();
    let out = std::process::Command::new(load)
        .args([
            "--target".to_owned(),
            format!("active={}={}", c.bases[active], c.root),
            "--target".to_owned(),
            format!("via-standby={}={}", c.bases[standby], c.root),
            "--rounds".to_owned(),
            "3".to_owned(),
            "--seconds".to_owned(),
            "5".to_owned(),
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let runs = runs();
        let sc = Scenario::new("failover bench");
        let options = ConsulOptions::default().timeline(sc.timeline());
        let consul = tokio::task::spawn_blocking(move || ConsulDev::start_with(options))
            .await
            .unwrap();
        let all = [Kind::Graceful, Kind::StepDown, Kind::Crash];
        let mut figures = Vec::new();

        let mut forwarded = None;
        if wanted("strongroom") {
            let sr = strongroom(&sc, &consul).await;
            measure(&sr, &all, runs, &mut figures).await;
            let active = sr.stable().await;
            forwarded = forwarded_get(&sr, active);
        }
        if wanted("openbao") {
            let bao = openbao(&sc).await;
            measure(&bao, &all, runs, &mut figures).await;
        }
        match testkit::tools::vault_bin() {
            _ if !wanted("vault") => {}
            Some(bin) => {
                let vault = vault_112(&sc, &consul, bin).await;
                measure(&vault, &all, runs, &mut figures).await;
            }
            None => println!("Vault 1.1.2: not built (STRONGROOM_VAULT_BIN, or scripts/setup-tools.sh); not measured"),
        }

        println!(
            "\nFailover to a serving new active node, {runs} runs each (Consul: session TTL {}s, lock-delay {}s for Strongroom, Consul's 15 s for Vault)\n",
            SESSION_TTL.as_secs(),
            LOCK_DELAY.as_secs()
        );
            println!("| system | scenario | median | max | all runs (ms) | no new active within 60 s |");
        println!("|---|---|---|---|---|---|");
        for f in &figures {
            let all: Vec<String> = f.samples.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                f.system,
                f.kind.label(),
                ms(f.median()),
                ms(f.max()),
                all.join(" "),
                f.failed
            );
        }
        println!();
        for kind in [Kind::Graceful, Kind::StepDown] {
            let find = |system: &str| figures.iter().find(|f| f.system.starts_with(system) && f.kind == kind);
            if let (Some(sr), Some(bao)) = (find("Strongroom"), find("OpenBao")) {
                println!(
                    "{}: Strongroom median {} vs OpenBao raft {} = {:.2}x",
                    kind.label(),
                    ms(sr.median()),
                    ms(bao.median()),
                    sr.median().as_secs_f64() / bao.median().as_secs_f64().max(1e-6)
                );
            }
        }
        if let Some(table) = forwarded {
            println!("\nForwarded KV v1 GET through a standby vs the active node (kv_load):\n{table}");
        } else {
            println!("\nForwarded GET: KV_LOAD_BIN not set; not measured");
        }
    });
}
