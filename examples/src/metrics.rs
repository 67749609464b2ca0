//! Request metrics and the `sys/metrics` exposition.
//!
//! Every request is counted by route template (`sys/unseal`, `secret/*`),
//! method and status, and its latency goes into a fixed-bucket histogram per
//! route. Counters are atomics behind a read-mostly map, so recording costs
//! a read lock and a few relaxed increments; the lock is only written when a
//! route is seen for the first time. The number of distinct routes is capped
//! so a client probing random paths cannot grow memory without bound.
//!
//! The core's own figures (seal state, unseal failures, barrier encryptions
//! per term) are read from [`strongroom::Core::metrics`] at scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use strongroom::CoreMetrics;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Distinct (route, method) pairs tracked before new ones fold into `other`.
const MAX_ROUTES: usize = 256;

/// Status codes 100..=599 get one counter each (index `code - 100`), so
/// recording never takes a lock.
const STATUS_SLOTS: usize = 500;

#[derive(Debug)]
struct RouteStats {
    by_status: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// The registry; one per server, shared by all listeners.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    routes: RwLock<HashMap<(String, String), Arc<RouteStats>>>,
}

impl Metrics {
    /// A fresh registry.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn stats(&self, route: &str, method: &str) -> Arc<RouteStats> {
        let key = (route.to_owned(), method.to_owned());
        if let Some(stats) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return stats.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let key = if routes.len() >= MAX_ROUTES && !routes.contains_key(&key) {
            ("other".to_owned(), method.to_owned())
        } else {
            key
        };
        routes.entry(key).or_default().clone()
    }

    /// Records one finished request.
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let stats = self.stats(route, method);
        let slot = usize::from(status.clamp(100, 599) - 100);
        if let Some(counter) = stats.by_status.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in stats.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> Vec<((String, String), Arc<RouteStats>)> {
        let mut routes: Vec<_> = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn prometheus(&self, core: &CoreMetrics) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "strongroom_core_unsealed",
            "1 when the barrier is unsealed, 0 when sealed.",
            u8::from(!core.sealed).to_string(),
        );
        gauge(
            &mut out,
            "strongroom_core_initialized",
            "1 once the storage has been initialized.",
            u8::from(core.initialized).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP strongroom_core_seal_type The configured seal type (value always 1).\n# TYPE strongroom_core_seal_type gauge\nstrongroom_core_seal_type{{type=\"{}\"}} 1",
            escape(&core.seal_type)
        );
        counter(
            &mut out,
            "strongroom_core_unseal_failures_total",
            "Manual unseal attempts whose key set did not open the stored keys.",
            core.unseal_failures,
        );
        counter(
            &mut out,
            "strongroom_core_auto_unseal_failures_total",
            "Failed auto-unseal attempts (seal unreachable, access denied, wrong key).",
            core.auto_unseal_failures,
        );
        counter(
            &mut out,
            "strongroom_core_unseals_total",
            "Successful unseals since start.",
            core.unseals,
        );
        counter(
            &mut out,
            "strongroom_barrier_auto_rotations_total",
            "Automatic barrier key rotations since start.",
            core.auto_rotations,
        );
        gauge(
            &mut out,
            "strongroom_barrier_term",
            "The active barrier key term (0 while sealed).",
            core.barrier_term.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP strongroom_barrier_estimated_encryptions Estimated encryptions under the active key term.\n# TYPE strongroom_barrier_estimated_encryptions gauge"
        );
        if !core.sealed {
            let _ = writeln!(
                out,
                "strongroom_barrier_estimated_encryptions{{term=\"{}\"}} {}",
                core.barrier_term, core.barrier_encryptions
            );
        }

        let routes = self.snapshot();
        let _ = writeln!(
            out,
            "# HELP strongroom_http_requests_total HTTP requests by route template, method and status code.\n# TYPE strongroom_http_requests_total counter"
        );
        for ((route, method), stats) in &routes {
            for (slot, counter) in stats.by_status.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = slot + 100;
                let _ = writeln!(
                    out,
                    "strongroom_http_requests_total{{route=\"{}\",method=\"{}\",code=\"{status}\"}} {count}",
                    escape(route),
                    escape(method)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP strongroom_http_request_duration_seconds HTTP request latency by route template and method.\n# TYPE strongroom_http_request_duration_seconds histogram"
        );
        for ((route, method), stats) in &routes {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            for (bucket, bound) in stats.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "strongroom_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = stats.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        out
    }

    /// Vault's JSON shape (go-metrics' in-memory sink: `Gauges`, `Counters`,
    /// `Samples`), for `sys/metrics` without `format=prometheus`.
    pub(crate) fn json(&self, core: &CoreMetrics) -> Value {
        let mut gauges = vec![
            json!({"Name": "strongroom.core.unsealed", "Value": u8::from(!core.sealed), "Labels": {}}),
            json!({"Name": "strongroom.core.initialized", "Value": u8::from(core.initialized), "Labels": {}}),
            json!({"Name": "strongroom.barrier.term", "Value": core.barrier_term, "Labels": {}}),
        ];
        if !core.sealed {
            gauges.push(json!({"Name": "strongroom.barrier.estimated_encryptions", "Value": core.barrier_encryptions,
                               "Labels": {"term": core.barrier_term.to_string()}}));
        }
        let mut counters = vec![
            json!({"Name": "strongroom.core.unseal_failures", "Count": core.unseal_failures, "Labels": {}}),
            json!({"Name": "strongroom.core.auto_unseal_failures", "Count": core.auto_unseal_failures, "Labels": {}}),
            json!({"Name": "strongroom.core.unseals", "Count": core.unseals, "Labels": {}}),
        ];
        let mut samples = Vec::new();
        for ((route, method), stats) in self.snapshot() {
            let count = stats.count.load(Ordering::Relaxed);
            let sum_ms = stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e3;
            counters.push(json!({"Name": "strongroom.http.requests", "Count": count,
                                 "Labels": {"route": route, "method": method}}));
            samples.push(
                json!({"Name": "strongroom.http.request_duration_ms", "Count": count, "Sum": sum_ms,
                                "Mean": if count > 0 { sum_ms / count as f64 } else { 0.0 },
                                "Labels": {"route": route, "method": method}}),
            );
        }
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json!({"Timestamp": now, "Gauges": gauges, "Counters": counters, "Samples": samples})
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_and_bucketed() {
        let metrics = Metrics::new();
        metrics.record("sys/unseal", "PUT", 200, Duration::from_micros(300));
        metrics.record("sys/unseal", "PUT", 400, Duration::from_millis(30));
        let text = metrics.prometheus(&CoreMetrics::default());
        assert!(
            text.contains(
                "strongroom_http_requests_total{route=\"sys/unseal\",method=\"PUT\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strongroom_http_requests_total{route=\"sys/unseal\",method=\"PUT\",code=\"400\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("strongroom_http_request_duration_seconds_bucket{route=\"sys/unseal\",method=\"PUT\",le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("strongroom_http_request_duration_seconds_bucket{route=\"sys/unseal\",method=\"PUT\",le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("strongroom_http_request_duration_seconds_count{route=\"sys/unseal\",method=\"PUT\"} 2"), "{text}");
        assert!(text.contains("strongroom_core_unsealed 1"), "{text}");
    }

    #[test]
    fn route_cardinality_is_capped() {
        let metrics = Metrics::new();
        for i in 0..(MAX_ROUTES + 50) {
            metrics.record(&format!("r{i}/*"), "GET", 404, Duration::ZERO);
        }
        assert_eq!(metrics.snapshot().len(), MAX_ROUTES + 1);
        assert!(
            metrics
                .prometheus(&CoreMetrics::default())
                .contains("route=\"other\"")
        );
    }

    #[test]
    fn core_figures_are_exposed_with_the_term_label() {
        let mut core = CoreMetrics::default();
        core.sealed = false;
        core.barrier_term = 3;
        core.barrier_encryptions = 42;
        core.unseal_failures = 2;
        let text = Metrics::new().prometheus(&core);
        assert!(
            text.contains("strongroom_barrier_estimated_encryptions{term=\"3\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("strongroom_core_unseal_failures_total 2"),
            "{text}"
        );
        let json = Metrics::new().json(&core);
        assert_eq!(json["Gauges"][3]["Labels"]["term"], "3");
    }
}
