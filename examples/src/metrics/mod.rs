//! Metrics under Vault's names and in Vault's shapes, for `sys/metrics`.
//!
//! Operators port Vault dashboards and alerts, so a metric Vault has keeps
//! Vault's name and type: `vault_core_unsealed` and `vault_core_active` are
//! gauges, `vault_core_handle_request` and `vault_consul_get` are summaries
//! in milliseconds with the 0.5/0.9/0.99 quantiles. Figures Vault does not
//! have are named `strongroom_*`.
//!
//! * **Recorded** metrics ([`Counter`], [`Timer`]) are fields of [`Metrics`]
//!   created once at start; recording is a few relaxed atomic operations,
//!   no lock and no lookup. To add one: a field, one line in
//!   [`Metrics::new`], and a call where the event happens.
//! * **Sampled** metrics (seal state, HA role, barrier figures) are read
//!   from the core at scrape time ([`NodeSample`]), as Vault's one-second
//!   metrics loop would have just set them.
//!
//! Exposition is the Prometheus project's `prometheus-client` crate:
//! OpenMetrics text (`Accept: application/openmetrics-text`) and the
//! Prometheus 0.0.4 text Vault serves for `?format=prometheus` (what the
//! chart's ServiceMonitor asks for). In that format counters keep Vault's
//! names, without the `_total` suffix the crate appends (go-metrics' sink
//! never adds it, so `vault_audit_log_request_failure` in a ported alert
//! still matches); OpenMetrics requires the suffix, so there it stays.
//! Summaries, which the crate does not model, are written by [`summary`].
//! Without either format, `sys/metrics` answers Vault's JSON (go-metrics'
//! in-memory sink shape).
//!
//! The `telemetry` stanza applies as in Vault: `prometheus_retention_time`
//! drops recorded timings not updated for that long (`0` turns the
//! Prometheus formats off; counters are defined up front and stay, see
//! [`Counter`]), and unless `disable_hostname = true` gauge
//! names carry the host name (`vault_<host>_core_unsealed`).

mod storage;
mod summary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use strongroom::CoreMetrics;

pub(crate) use storage::MeteredStorage;

/// Content type of the Prometheus text format Vault serves.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `telemetry` stanza's settings that shape the exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TelemetrySettings {
    /// How long a recorded series stays without updates; zero disables the
    /// Prometheus formats. Vault's default is 24 h.
    pub(crate) prometheus_retention: Duration,
    /// Leave the host name out of gauge names.
    pub(crate) disable_hostname: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            prometheus_retention: Duration::from_secs(24 * 3600),
            disable_hostname: false,
        }
    }
}

/// The exposition a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// go-metrics' in-memory sink JSON (Vault's default).
    Json,
    /// Prometheus text 0.0.4 (`?format=prometheus`).
    Prometheus,
    /// OpenMetrics text (`Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// Picks the format from the `format` query parameter, else the
    /// `Accept` header (what Prometheus sends), else JSON.
    ///
    /// # Errors
    ///
    /// The message for a 400 when `format` names no known format.
    pub(crate) fn negotiate(format: Option<&str>, accept: Option<&str>) -> Result<Format, String> {
        match format {
            Some("prometheus") => Ok(Format::Prometheus),
            Some("json") => Ok(Format::Json),
            Some(other) if !other.is_empty() => Err(format!(
                "unknown metrics format {other:?}; use \"prometheus\" or leave format out for JSON"
            )),
            _ => {
                let accept = accept.unwrap_or_default().to_ascii_lowercase();
                Ok(if accept.contains("application/openmetrics-text") {
                    Format::OpenMetrics
                } else if accept.contains("prometheus/telemetry") {
                    Format::Prometheus
                } else {
                    Format::Json
                })
            }
        }
    }
}

/// When a recorded metric was last updated, for the retention time.
#[derive(Debug)]
struct Freshness {
    origin: Instant,
    /// Seconds since `origin` plus one at the last update; 0 = never.
    last: AtomicU64,
}

impl Freshness {
    fn new() -> Self {
        Freshness {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.origin.elapsed().as_secs() + 1, Ordering::Relaxed);
    }

    fn recorded(&self) -> bool {
        self.last.load(Ordering::Relaxed) != 0
    }

    fn fresh(&self, retention: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0
            && !retention.is_zero()
            && self.origin.elapsed().as_secs() + 1 - last <= retention.as_secs()
    }
}

#[derive(Debug)]
struct CounterCell {
    value: AtomicU64,
    fresh: Freshness,
}

/// A counter the server increments (a go-metrics `IncrCounter`), defined
/// up front as go-metrics' `CounterDefinitions` are: written from zero and
/// never expired, so an alert on `increase(…[5m]) > 0` sees the first
/// event too (a series that appears at 1 has no increase).
#[derive(Debug, Clone)]
pub(crate) struct Counter(Arc<CounterCell>);

impl Counter {
    fn new() -> Self {
        Counter(Arc::new(CounterCell {
            value: AtomicU64::new(0),
            fresh: Freshness::new(),
        }))
    }

    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0.value.fetch_add(1, Ordering::Relaxed);
        self.0.fresh.touch();
    }

    fn get(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[derive(Debug)]
struct TimerCell {
    summary: summary::Summary,
    fresh: Freshness,
}

/// A timing (a go-metrics `MeasureSince`), reported as a summary in ms.
#[derive(Debug, Clone)]
pub(crate) struct Timer(Arc<TimerCell>);

impl Timer {
    fn new() -> Self {
        Timer(Arc::new(TimerCell {
            summary: summary::Summary::new(),
            fresh: Freshness::new(),
        }))
    }

    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.0.summary.observe(elapsed);
        self.0.fresh.touch();
    }

    /// Records the time since `start`.
    pub(crate) fn since(&self, start: Instant) {
        self.observe(start.elapsed());
    }
}

/// A scrape-time value with its labels (a gauge or a cumulative counter
/// the core keeps).
#[derive(Debug)]
struct Sampled {
    /// One value per label set (several for per-seal gauges).
    series: Vec<(Vec<(String, String)>, f64)>,
    kind: MetricType,
}

impl EncodeMetric for Sampled {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.series {
            let mut family = encoder.encode_family(labels)?;
            // Whole numbers print as integers (`1`, not `1.0`), as Vault's do.
            let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
            match (self.kind, whole) {
                (MetricType::Counter, true) => {
                    family.encode_counter::<NoLabelSet, _, u64>(&(*value as u64), None)?;
                }
                (MetricType::Counter, false) => {
                    family.encode_counter::<NoLabelSet, _, f64>(value, None)?;
                }
                (_, true) => family.encode_gauge(&(*value as i64))?,
                (_, false) => family.encode_gauge(value)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// HTTP methods counted by [`Requests`]; anything else is `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "LIST", "OPTIONS", "OTHER",
];
/// Status codes 100..=599 get one slot each.
const STATUSES: usize = 500;

/// `strongroom.http.requests{method,code}`: every answered request, one
/// preallocated atomic per (method, status) pair, so counting needs no
/// lock and no map.
#[derive(Debug, Clone)]
pub(crate) struct Requests(Arc<RequestCounts>);

#[derive(Debug)]
struct RequestCounts {
    counts: Box<[AtomicU64]>,
    fresh: Freshness,
    retention: Duration,
}

impl Requests {
    fn new(retention: Duration) -> Self {
        Requests(Arc::new(RequestCounts {
            counts: (0..METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            fresh: Freshness::new(),
            retention,
        }))
    }

    /// Counts one answered request.
    pub(crate) fn record(&self, method: &str, status: u16) {
        let method = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        let status = usize::from(status.clamp(100, 599) - 100);
        if let Some(count) = self.0.counts.get(method * STATUSES + status) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.0.fresh.touch();
    }

    /// Every non-zero count as `(method, code, count)`.
    fn nonzero(&self) -> impl Iterator<Item = (&'static str, usize, u64)> + '_ {
        self.0.counts.iter().enumerate().filter_map(|(i, c)| {
            let count = c.load(Ordering::Relaxed);
            (count > 0).then(|| (METHODS[i / STATUSES], i % STATUSES + 100, count))
        })
    }
}

impl EncodeMetric for Requests {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (method, code, count) in self.nonzero() {
            let labels = [("method", method.to_owned()), ("code", code.to_string())];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }

    fn is_empty(&self) -> bool {
        !self.0.fresh.fresh(self.0.retention)
    }
}

/// The node's state at scrape time.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSample {
    /// The core's figures.
    pub(crate) core: CoreMetrics,
    /// Whether this node serves requests as the active node (HA disabled
    /// and unsealed counts as active, as in Vault).
    pub(crate) active: bool,
    /// The cluster name, once known (Vault's `cluster` label).
    pub(crate) cluster: Option<String>,
}

/// A Vault-style metric key (`vault.core.unsealed`) as a Prometheus name.
fn prometheus_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The crate's Prometheus text for counter families, with the `_total`
/// it appends taken off every metric name (in `# HELP`, `# TYPE` and
/// sample lines; label values are left alone): go-metrics' names.
fn without_total_suffix(counters: &str) -> String {
    let mut out = String::with_capacity(counters.len());
    for line in counters.lines() {
        let (prefix, rest) = match line.get(..7) {
            Some(p @ ("# HELP " | "# TYPE ")) => (p, &line[7..]),
            _ => ("", line),
        };
        let end = rest.find(['{', ' ']).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        out.push_str(prefix);
        out.push_str(name.strip_suffix("_total").unwrap_or(name));
        out.push_str(tail);
        out.push('\n');
    }
    out
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The server's metrics; one per process, shared by every listener.
#[derive(Debug)]
pub(crate) struct Metrics {
    settings: TelemetrySettings,
    /// Gauge names are `vault.<host>.…` unless `disable_hostname`.
    gauge_prefix: String,
    /// Recorded counters, for the Prometheus formats.
    registry: Registry,
    counters: Vec<(String, Counter)>,
    timers: Vec<(String, &'static str, Timer)>,
    /// `vault.core.handle_request`: every API request except health
    /// probes and metric scrapes.
    pub(crate) handle_request: Timer,
    /// `strongroom.http.requests`: every answered request by method and
    /// status code (probes and scrapes included).
    pub(crate) requests: Requests,
    /// `vault.core.leadership_lost`: how long each active period lasted,
    /// recorded when it ends (frequent short ones mean the lock flaps).
    pub(crate) leadership_lost: Timer,
    /// `vault.ha.rpc.client.forward`: a standby forwarding a request to
    /// the active node, until the answer's headers arrive.
    pub(crate) forward: Timer,
    /// `vault.ha.rpc.client.forward.errors`: requests a standby could not
    /// deliver to the active node (answered with a 307 instead).
    pub(crate) forward_errors: Counter,
    /// `vault.ha.rpc.client.echo`: a standby's heartbeat to the active
    /// node, until the answer arrives.
    pub(crate) echo: Timer,
    /// `vault.ha.rpc.client.echo.errors`: heartbeats the active node did
    /// not accept or never received.
    pub(crate) echo_errors: Counter,
    /// `vault.<storage>.get|put|list|delete|transaction`: physical storage
    /// operations (Vault's `vault_consul_get` …).
    pub(crate) storage: storage::StorageTimers,
    /// `vault.barrier.get|put|list|delete|transaction`: the same through
    /// the barrier (encryption included); the barrier's observer.
    pub(crate) barrier: storage::StorageTimers,
}

/// Collects recorded metrics while [`Metrics::new`] defines them.
struct Definitions {
    registry: Registry,
    counters: Vec<(String, Counter)>,
    timers: Vec<(String, &'static str, Timer)>,
}

impl Definitions {
    fn counter(&mut self, key: &str, help: &'static str) -> Counter {
        let counter = Counter::new();
        self.registry
            .register(prometheus_name(key), help, counter.clone());
        self.counters.push((key.to_owned(), counter.clone()));
        counter
    }

    fn timer(&mut self, key: &str, help: &'static str) -> Timer {
        let timer = Timer::new();
        self.timers.push((key.to_owned(), help, timer.clone()));
        timer
    }
}

impl Metrics {
    /// Defines every recorded metric. `storage_kind` names the storage
    /// metrics (`consul` → `vault_consul_get`).
    pub(crate) fn new(settings: TelemetrySettings, storage_kind: &str) -> Self {
        let mut defs = Definitions {
            registry: Registry::default(),
            counters: Vec::new(),
            timers: Vec::new(),
        };
        let handle_request = defs.timer(
            "vault.core.handle_request",
            "Time to handle an API request, in milliseconds",
        );
        let storage = storage::StorageTimers::define(&mut defs, storage_kind);
        let barrier = storage::StorageTimers::define(&mut defs, "barrier");
        let forward = defs.timer(
            "vault.ha.rpc.client.forward",
            "Time for a standby to forward a request to the active node, in milliseconds",
        );
        let forward_errors = defs.counter(
            "vault.ha.rpc.client.forward.errors",
            "Requests a standby could not forward to the active node (redirected instead)",
        );
        let echo = defs.timer(
            "vault.ha.rpc.client.echo",
            "Time for a standby's heartbeat to the active node, in milliseconds",
        );
        let echo_errors = defs.counter(
            "vault.ha.rpc.client.echo.errors",
            "Standby heartbeats to the active node that failed",
        );
        let leadership_lost = defs.timer(
            "vault.core.leadership_lost",
            "How long the node was active before it lost or gave up the HA lock, in milliseconds",
        );
        let requests = Requests::new(settings.prometheus_retention);
        defs.registry.register(
            "strongroom_http_requests",
            "HTTP requests answered, by method and status code",
            requests.clone(),
        );
        let gauge_prefix = if settings.disable_hostname {
            "vault".to_owned()
        } else {
            format!("vault.{}", hostname())
        };
        Metrics {
            settings,
            gauge_prefix,
            registry: defs.registry,
            counters: defs.counters,
            timers: defs.timers,
            handle_request,
            requests,
            leadership_lost,
            forward,
            forward_errors,
            echo,
            echo_errors,
            storage,
            barrier,
        }
    }

    /// Whether the Prometheus formats are on (`prometheus_retention_time`
    /// is not zero).
    pub(crate) fn prometheus_enabled(&self) -> bool {
        !self.settings.prometheus_retention.is_zero()
    }

    /// The scrape-time values: `(key, help, type, labels, value)`.
    fn sampled(&self, node: &NodeSample) -> Vec<(String, &'static str, Sampled)> {
        let core = &node.core;
        let cluster: Vec<(String, String)> = node
            .cluster
            .iter()
            .map(|c| ("cluster".to_owned(), c.clone()))
            .collect();
        let gauge = |key: &str, help: &'static str, value: f64, labels: &[(String, String)]| {
            let key = match key.strip_prefix("vault.") {
                Some(rest) => format!("{}.{rest}", self.gauge_prefix),
                None => key.to_owned(),
            };
            let sampled = Sampled {
                series: vec![(labels.to_vec(), value)],
                kind: MetricType::Gauge,
            };
            (key, help, sampled)
        };
        let counter = |key: &str, help: &'static str, value: u64| {
            let sampled = Sampled {
                series: vec![(Vec::new(), value as f64)],
                kind: MetricType::Counter,
            };
            (key.to_owned(), help, sampled)
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut out = vec![
            gauge(
                "vault.core.unsealed",
                "1 when the node is unsealed, 0 when sealed",
                flag(!core.sealed),
                &cluster,
            ),
            gauge(
                "vault.core.active",
                "1 when the node is the active node, 0 when standby or sealed",
                flag(node.active),
                &cluster,
            ),
            gauge(
                "strongroom.core.initialized",
                "1 once the storage has been initialized",
                flag(core.initialized),
                &cluster,
            ),
        ];
        if core.seal_type != "shamir" {
            let since = core.seal_unreachable_since.map_or(0.0, |t| {
                SystemTime::now()
                    .duration_since(t)
                    .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
            });
            out.push(gauge(
                "vault.core.seal.unreachable.time",
                "Milliseconds since the seal (KMS) last failed to answer when used; 0 when it works",
                since,
                &cluster,
            ));
        }
        if !core.seals.is_empty() {
            // One series per seal (Vault's seal backend status, as a gauge).
            let series = core
                .seals
                .iter()
                .map(|seal| {
                    let mut labels = cluster.clone();
                    labels.extend([
                        ("name".to_owned(), seal.name.clone()),
                        ("type".to_owned(), seal.seal_type.clone()),
                        ("priority".to_owned(), seal.priority.to_string()),
                        ("disabled".to_owned(), seal.disabled.to_string()),
                    ]);
                    (labels, flag(seal.healthy))
                })
                .collect();
            out.push((
                "strongroom.seal.healthy".to_owned(),
                "1 while the seal answers (encrypt, decrypt, health checks), 0 while it fails",
                Sampled {
                    series,
                    kind: MetricType::Gauge,
                },
            ));
            out.push(gauge(
                "strongroom.seal.fully_wrapped",
                "1 when every enabled seal holds a checked wrap of the stored keys",
                flag(core.seals_fully_wrapped),
                &cluster,
            ));
            out.push(gauge(
                "strongroom.seal.migration_pending",
                "1 while a seal migration waits for its keys (operator unseal -migrate)",
                flag(core.seal_migration_pending),
                &cluster,
            ));
        }
        if !core.sealed {
            out.push(gauge(
                "vault.barrier.estimated_encryptions",
                "Estimated encryptions under the active barrier key term",
                core.barrier_encryptions as f64,
                &[("term".to_owned(), core.barrier_term.to_string())],
            ));
        }
        out.extend([
            gauge(
                "strongroom.barrier.term",
                "The active barrier key term (0 while sealed)",
                f64::from(core.barrier_term),
                &[],
            ),
            counter(
                "strongroom.core.unseals",
                "Successful unseals since start",
                core.unseals,
            ),
            counter(
                "strongroom.core.unseal_failures",
                "Manual unseal attempts whose key set did not open the stored keys",
                core.unseal_failures,
            ),
            counter(
                "strongroom.core.auto_unseal_failures",
                "Failed auto-unseal attempts (seal unreachable, access denied, wrong key)",
                core.auto_unseal_failures,
            ),
            counter(
                "strongroom.barrier.auto_rotations",
                "Automatic barrier key rotations since start",
                core.auto_rotations,
            ),
            counter(
                "vault.audit.log_request_failure",
                "Requests refused because no audit device could record them",
                core.audit_log_request_failures,
            ),
            counter(
                "vault.audit.log_response_failure",
                "Responses withheld because no audit device could record them",
                core.audit_log_response_failures,
            ),
        ]);
        out
    }

    /// The Prometheus (0.0.4) or OpenMetrics text for one scrape.
    ///
    /// # Errors
    ///
    /// Only if writing to a `String` failed (it does not).
    pub(crate) fn text(
        &self,
        format: Format,
        node: &NodeSample,
    ) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let (mut gauges, mut counters) = (Registry::default(), Registry::default());
        for (key, help, sampled) in self.sampled(node) {
            let registry = if sampled.kind == MetricType::Counter {
                &mut counters
            } else {
                &mut gauges
            };
            registry.register(prometheus_name(&key), help, sampled);
        }
        let mut out = String::new();
        let open_metrics = format == Format::OpenMetrics;
        if open_metrics {
            text::encode_registry(&mut out, &gauges)?;
            text::encode_registry(&mut out, &counters)?;
            text::encode_registry(&mut out, &self.registry)?;
        } else {
            prometheus_text::encode(&mut out, &gauges)?;
            let mut counted = String::new();
            prometheus_text::encode(&mut counted, &counters)?;
            prometheus_text::encode(&mut counted, &self.registry)?;
            out.push_str(&without_total_suffix(&counted));
        }
        for (key, help, timer) in &self.timers {
            if timer.0.fresh.fresh(self.settings.prometheus_retention) {
                let help = format!("{help}.");
                summary::encode(
                    &mut out,
                    &prometheus_name(key),
                    &help,
                    &timer.0.summary.snapshot(),
                );
            }
        }
        let (help, failed) = leadership_setup_failed(&node.core);
        summary::encode(
            &mut out,
            &prometheus_name(LEADERSHIP_SETUP_FAILED),
            help,
            &failed,
        );
        if open_metrics {
            text::encode_eof(&mut out)?;
        }
        Ok(out)
    }

    /// Vault's JSON shape (go-metrics' in-memory sink: `Gauges`,
    /// `Counters`, `Samples`), for `sys/metrics` without a format.
    pub(crate) fn json(&self, node: &NodeSample) -> Value {
        let labels = |l: &[(String, String)]| -> serde_json::Map<String, Value> {
            l.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        };
        let mut gauges = Vec::new();
        let mut counters = Vec::new();
        for (key, _, sampled) in self.sampled(node) {
            for (series_labels, value) in &sampled.series {
                if sampled.kind == MetricType::Counter {
                    counters.push(json!({"Name": key, "Count": value, "Sum": value, "Labels": labels(series_labels)}));
                } else {
                    gauges.push(
                        json!({"Name": key, "Value": value, "Labels": labels(series_labels)}),
                    );
                }
            }
        }
        for (key, counter) in &self.counters {
            if counter.0.fresh.recorded() {
                counters.push(json!({"Name": key, "Count": counter.get(), "Sum": counter.get(), "Labels": {}}));
            }
        }
        for (method, code, count) in self.requests.nonzero() {
            counters.push(
                json!({"Name": "strongroom.http.requests", "Count": count, "Sum": count,
                                 "Labels": {"method": method, "code": code.to_string()}}),
            );
        }
        let mut samples = Vec::new();
        for (key, _, timer) in &self.timers {
            if timer.0.summary.is_empty() {
                continue;
            }
            let snap = timer.0.summary.snapshot();
            let mean = snap.sum_ms / snap.count as f64;
            samples.push(json!({"Name": key, "Count": snap.count, "Sum": snap.sum_ms, "Mean": mean, "Labels": {}}));
        }
        let (_, failed) = leadership_setup_failed(&node.core);
        if failed.count > 0 {
            samples.push(
                json!({"Name": LEADERSHIP_SETUP_FAILED, "Count": failed.count,
                "Sum": failed.sum_ms, "Mean": failed.sum_ms / failed.count as f64, "Labels": {}}),
            );
        }
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json!({"Timestamp": now, "Gauges": gauges, "Counters": counters, "Samples": samples})
    }
}

const LEADERSHIP_SETUP_FAILED: &str = "vault.core.leadership_setup_failed";

/// `vault.core.leadership_setup_failed`, from the core's count and total
/// time of promotions that failed after the lock was taken. Always
/// written, from zero, so `increase(…_count[10m]) > 0` catches the first
/// failure too; its quantiles are NaN, as an idle Vault summary's are.
fn leadership_setup_failed(core: &CoreMetrics) -> (&'static str, summary::SummarySnapshot) {
    let help = "Time the node held the HA lock before giving it up because becoming \
                active failed, in milliseconds.";
    let snapshot = summary::SummarySnapshot {
        quantiles: summary::QUANTILES.iter().map(|q| (*q, f64::NAN)).collect(),
        sum_ms: core.leadership_setup_failed_time.as_secs_f64() * 1_000.0,
        count: core.leadership_setup_failures,
    };
    (help, snapshot)
}

/// When the current active period began; yields its length when it ends.
#[derive(Debug, Default)]
struct ActivePeriods(Option<Instant>);

impl ActivePeriods {
    /// The node is (or is not) active at `now`; the length of an active
    /// period that just ended.
    fn observe(&mut self, active: bool, now: Instant) -> Option<Duration> {
        match (active, self.0) {
            (true, None) => {
                self.0 = Some(now);
                None
            }
            (false, Some(since)) => {
                self.0 = None;
                Some(now.saturating_duration_since(since))
            }
            _ => None,
        }
    }
}

/// Records [`Metrics::leadership_lost`] from the core's node-state changes
/// until `stop` fires or the core goes away.
pub(crate) async fn follow_leadership(
    metrics: Arc<Metrics>,
    mut states: tokio::sync::watch::Receiver<strongroom::NodeState>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut periods = ActivePeriods::default();
    loop {
        let active = states.borrow_and_update().mode == strongroom::HaMode::Active;
        if let Some(held) = periods.observe(active, Instant::now()) {
            metrics.leadership_lost.observe(held);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = states.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> TelemetrySettings {
        TelemetrySettings {
            prometheus_retention: Duration::from_secs(30),
            disable_hostname: true,
        }
    }

    fn unsealed_active() -> NodeSample {
        let mut core = CoreMetrics::default();
        core.initialized = true;
        core.sealed = false;
        core.seal_type = "awskms".into();
        core.barrier_term = 3;
        core.barrier_encryptions = 42;
        core.unseal_failures = 2;
        NodeSample {
            core,
            active: true,
            cluster: Some("prod".into()),
        }
    }

    #[test]
    fn formats_are_negotiated_like_vault() {
        use Format::*;
        assert_eq!(Format::negotiate(Some("prometheus"), None), Ok(Prometheus));
        assert_eq!(
            Format::negotiate(Some("prometheus"), Some("application/openmetrics-text")),
            Ok(Prometheus)
        );
        assert_eq!(
            Format::negotiate(
                None,
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
                )
            ),
            Ok(OpenMetrics)
        );
        assert_eq!(
            Format::negotiate(None, Some("prometheus/telemetry")),
            Ok(Prometheus)
        );
        assert_eq!(Format::negotiate(Some(""), None), Ok(Json));
        assert_eq!(Format::negotiate(None, Some("*/*")), Ok(Json));
        assert!(Format::negotiate(Some("xml"), None).is_err());
    }

    #[test]
    fn gauges_have_vaults_names_and_cluster_label() {
        let metrics = Metrics::new(quiet(), "consul");
        let text = metrics
            .text(Format::Prometheus, &unsealed_active())
            .unwrap();
        assert!(
            text.contains("# TYPE vault_core_unsealed gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_core_unsealed{cluster=\"prod\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_core_active{cluster=\"prod\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_core_seal_unreachable_time{cluster=\"prod\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_barrier_estimated_encryptions{term=\"3\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE strongroom_core_unseal_failures counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nstrongroom_core_unseal_failures 2\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn timers_are_vault_summaries_and_appear_once_recorded() {
        let metrics = Metrics::new(quiet(), "consul");
        let before = metrics
            .text(Format::OpenMetrics, &NodeSample::default())
            .unwrap();
        assert!(!before.contains("vault_core_handle_request"), "{before}");
        metrics.handle_request.observe(Duration::from_millis(3));
        metrics.storage.get.observe(Duration::from_millis(1));
        let text = metrics
            .text(Format::OpenMetrics, &NodeSample::default())
            .unwrap();
        assert!(
            text.contains("# TYPE vault_core_handle_request summary\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_core_handle_request{quantile=\"0.5\"} "),
            "{text}"
        );
        assert!(
            text.contains("vault_core_handle_request_count 1\n"),
            "{text}"
        );
        assert!(text.contains("vault_consul_get_count 1\n"), "{text}");
        assert!(
            text.contains("\nvault_ha_rpc_client_forward_errors_total 0\n"),
            "counters are written from zero: {text}"
        );
        metrics.forward_errors.inc();
        let counted = metrics
            .text(Format::Prometheus, &NodeSample::default())
            .unwrap();
        assert!(
            counted.contains("# TYPE vault_ha_rpc_client_forward_errors counter\n"),
            "{counted}"
        );
        assert!(
            counted.contains("\nvault_ha_rpc_client_forward_errors 1\n"),
            "{counted}"
        );
        // OpenMetrics requires the suffix on counter samples.
        let open = metrics
            .text(Format::OpenMetrics, &NodeSample::default())
            .unwrap();
        assert!(
            open.contains("\nvault_ha_rpc_client_forward_errors_total 1\n"),
            "{open}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let json = metrics.json(&NodeSample::default());
        let names: Vec<_> = json["Samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["vault.core.handle_request", "vault.consul.get"]);
    }

    #[test]
    fn requests_are_counted_by_method_and_code() {
        let metrics = Metrics::new(quiet(), "inmem");
        metrics.requests.record("PUT", 400);
        metrics.requests.record("PUT", 400);
        metrics.requests.record("BREW", 200);
        metrics.requests.record("GET", 1000);
        let text = metrics
            .text(Format::OpenMetrics, &NodeSample::default())
            .unwrap();
        assert!(
            text.contains("# TYPE strongroom_http_requests counter\n"),
            "{text}"
        );
        assert!(
            text.contains("strongroom_http_requests_total{method=\"PUT\",code=\"400\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("{method=\"OTHER\",code=\"200\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("{method=\"GET\",code=\"599\"} 1\n"), "{text}");
        // Vault's format: go-metrics' counter names, no `_total`.
        let vault = metrics
            .text(Format::Prometheus, &NodeSample::default())
            .unwrap();
        assert!(
            vault.contains("# TYPE strongroom_http_requests counter\n"),
            "{vault}"
        );
        assert!(
            vault.contains("\nstrongroom_http_requests{method=\"PUT\",code=\"400\"} 2\n"),
            "{vault}"
        );
        assert!(!vault.contains("_total"), "{vault}");
    }

    #[test]
    fn failed_promotions_are_vaults_leadership_setup_failed_summary() {
        let metrics = Metrics::new(quiet(), "consul");
        let mut node = unsealed_active();
        let text = metrics.text(Format::Prometheus, &node).unwrap();
        assert!(
            text.contains("# TYPE vault_core_leadership_setup_failed summary\n"),
            "{text}"
        );
        assert!(
            text.contains("\nvault_core_leadership_setup_failed_count 0\n"),
            "written from zero: {text}"
        );
        node.core.leadership_setup_failures = 2;
        node.core.leadership_setup_failed_time = Duration::from_millis(30);
        let text = metrics.text(Format::OpenMetrics, &node).unwrap();
        for line in [
            "vault_core_leadership_setup_failed{quantile=\"0.99\"} NaN\n",
            "vault_core_leadership_setup_failed_sum 30\n",
            "vault_core_leadership_setup_failed_count 2\n",
        ] {
            assert!(text.contains(line), "{line} missing: {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let json = metrics.json(&node);
        let sample = json["Samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Name"] == "vault.core.leadership_setup_failed")
            .unwrap();
        assert_eq!(sample["Count"], 2);
        assert_eq!(sample["Mean"], 15.0);
    }

    #[test]
    fn only_metric_names_lose_the_total_suffix() {
        let crate_text = "# HELP a_total A total.\n# TYPE a_total counter\n\
                          a_total{seal=\"b_total\"} 1\na_total 2\n";
        assert_eq!(
            without_total_suffix(crate_text),
            "# HELP a A total.\n# TYPE a counter\na{seal=\"b_total\"} 1\na 2\n"
        );
    }

    #[test]
    fn leaving_the_active_role_records_how_long_it_lasted() {
        let mut periods = ActivePeriods::default();
        let t0 = Instant::now();
        assert_eq!(periods.observe(false, t0), None);
        assert_eq!(periods.observe(true, t0), None);
        assert_eq!(periods.observe(true, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            periods.observe(false, t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(periods.observe(false, t0 + Duration::from_secs(4)), None);
        let metrics = Metrics::new(quiet(), "consul");
        metrics.leadership_lost.observe(Duration::from_secs(3));
        let text = metrics
            .text(Format::Prometheus, &NodeSample::default())
            .unwrap();
        assert!(
            text.contains("vault_core_leadership_lost_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_core_leadership_lost_sum 3000\n"),
            "{text}"
        );
    }

    #[test]
    fn series_expire_after_the_retention_time() {
        let metrics = Metrics::new(
            TelemetrySettings {
                prometheus_retention: Duration::ZERO,
                disable_hostname: true,
            },
            "inmem",
        );
        assert!(!metrics.prometheus_enabled());
        metrics.handle_request.observe(Duration::from_millis(1));
        // Zero retention: recorded series are never fresh.
        let text = metrics
            .text(Format::Prometheus, &NodeSample::default())
            .unwrap();
        assert!(!text.contains("handle_request"), "{text}");
        // JSON is not the Prometheus sink and keeps them.
        assert_eq!(
            metrics.json(&NodeSample::default())["Samples"][0]["Count"],
            1
        );
    }

    #[test]
    fn gauges_carry_the_host_name_unless_disabled() {
        let metrics = Metrics::new(TelemetrySettings::default(), "inmem");
        let text = metrics
            .text(Format::Prometheus, &NodeSample::default())
            .unwrap();
        let host = prometheus_name(&hostname());
        assert!(
            text.contains(&format!("\nvault_{host}_core_unsealed 1\n")),
            "{text}"
        );
        assert!(!text.contains("\nvault_core_unsealed"), "{text}");
    }
}
