//! Each scenario's figures, kept as JSON beside the build and rendered into
//! `benches/results/chaos.md` when `STRONGROOM_CHAOS_REPORT` names that
//! file (what `scripts/chaos-report.sh` does).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What one scenario measured and checked.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScenarioReport {
    pub(crate) id: String,
    pub(crate) title: String,
    /// (what, seconds).
    pub(crate) figures: Vec<(String, f64)>,
    pub(crate) notes: Vec<String>,
    /// Why operations were not acknowledged: "12× write unknown: …".
    pub(crate) refusals: Vec<String>,
    pub(crate) attempted: usize,
    pub(crate) writes_acknowledged: usize,
    pub(crate) reads_acknowledged: usize,
    pub(crate) failed: usize,
    pub(crate) unknown: usize,
    pub(crate) lost: usize,
    pub(crate) anomalies: usize,
    pub(crate) one_active_rounds: usize,
    pub(crate) seconds: f64,
    pub(crate) timeline: String,
    pub(crate) per_second: String,
}

fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-results")
}

impl ScenarioReport {
    /// The scenario's figures and timeline, as printed after it.
    pub(crate) fn text(&self) -> String {
        let mut out = format!(
            "===== {}: {} ({:.0} s)\n",
            self.id, self.title, self.seconds
        );
        for (label, s) in &self.figures {
            out.push_str(&format!("  {label}: {s:.2} s\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("  {note}\n"));
        }
        for refusal in &self.refusals {
            out.push_str(&format!("  not acknowledged: {refusal}\n"));
        }
        out.push_str(&format!(
            "  operations: {} attempted, {} writes and {} reads acknowledged, {} failed, {} unknown; lost {}, anomalies {}\n----- timeline -----\n{}",
            self.attempted,
            self.writes_acknowledged,
            self.reads_acknowledged,
            self.failed,
            self.unknown,
            self.lost,
            self.anomalies,
            self.timeline
        ));
        out
    }

    /// Keeps the figures, and renders the Markdown report when asked to.
    pub(crate) fn save(&self) {
        let dir = results_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}.json", self.id));
        if let Ok(json) = serde_json::to_string_pretty(self) {
            let _ = std::fs::write(&path, json);
        }
        if let Some(out) = std::env::var_os("STRONGROOM_CHAOS_REPORT") {
            let markdown = render(&load_all());
            std::fs::write(&out, markdown)
                .unwrap_or_else(|e| panic!("write {}: {e}", PathBuf::from(&out).display()));
        }
    }
}

fn load_all() -> Vec<ScenarioReport> {
    let mut all: Vec<ScenarioReport> = std::fs::read_dir(results_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

fn render(all: &[ScenarioReport]) -> String {
    let o = super::support::options();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let total: f64 = all.iter().map(|r| r.seconds).sum();
    let mut md = format!(
        "# Fault-injection suite: results\n\n\
         Written by `scripts/chaos-report.sh` (which runs `cargo test -p examples --test chaos`); \
         do not edit by hand. Measured on a {cores}-core machine; the scenarios took {total:.0} s \
         together (cluster starts excluded).\n\n\
         Setup: three `strongroom server` nodes with `storage \"consul\"` (node *i* talks to its own Consul \
         client agent, joined to a 3-server Consul 1.14.11 cluster), `seal \"awskms\"` on `moto_server` with IAM enforced \
         (an IAM user whose attached policy allows exactly `kms:Encrypt`, `kms:Decrypt`, \
         `kms:DescribeKey`; \"KMS revoked\" detaches it, \"KMS unreachable\" freezes moto behind its \
         relay) and HA on: `session_ttl` {:?}, `lock_delay` {:?}, `lock_wait_time` {:?}, \
         `auto_unseal_max_backoff` (the auto-unseal retry interval) {:?}, Consul `request_timeout` \
         {:?} with {} retry. A load of 4 workers writes and reads 4 KV v2 keys per scenario through a \
         readiness-probed service (the chart's `/v1/sys/health?standbyok=true`), recording every \
         operation. After each scenario every acknowledged write is read back by version, each key's \
         history is checked for linearizability (register model), versions are checked against \
         real-time order, and exactly one node must be active at every sampled moment (every 100 ms) \
         after convergence.\n\n\
         \"Acknowledged\" counts writes and reads answered with success; \"not acknowledged\" splits \
         into definitely failed (nothing sent, or a read refused) and unknown (a write that may or \
         may not have taken effect: the checker allows both); \"lost\" is acknowledged writes that \
         did not read back; \"anomalies\" is non-linearizable keys plus version-order violations.\n\n\
         | scenario | recovery (longest) | ops attempted | acknowledged (writes / reads) | not acknowledged (failed / unknown) | lost | anomalies |\n\
         |---|---|---|---|---|---|---|\n",
        o.session_ttl,
        o.lock_delay,
        o.lock_wait_time,
        o.unseal_retry,
        o.consul_request_timeout,
        o.consul_max_retries
    );
    for r in all {
        let longest = r
            .figures
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("—".to_owned(), |(label, s)| format!("{s:.1} s ({label})"));
        md.push_str(&format!(
            "| {} {} | {longest} | {} | {} ({} / {}) | {} / {} | {} | {} |\n",
            r.id,
            r.title,
            r.attempted,
            r.writes_acknowledged + r.reads_acknowledged,
            r.writes_acknowledged,
            r.reads_acknowledged,
            r.failed,
            r.unknown,
            r.lost,
            r.anomalies
        ));
    }
    for r in all {
        md.push_str(&format!("\n## {}: {}\n\n", r.id, r.title));
        for (label, s) in &r.figures {
            md.push_str(&format!("* {label}: **{s:.2} s**\n"));
        }
        for note in &r.notes {
            md.push_str(&format!("* {note}\n"));
        }
        if !r.refusals.is_empty() {
            md.push_str("* not acknowledged, by reason:\n");
            for refusal in r.refusals.iter().take(8) {
                md.push_str(&format!("  * {}\n", refusal.replace('|', "\\|")));
            }
        }
        md.push_str(&format!(
            "* exactly one active node in all {} samples after convergence; {} operations, lost {}, anomalies {}\n\n\
             <details><summary>timeline (seconds since the cluster started)</summary>\n\n```text\n{}```\n\n\
             operations per second (by invocation time):\n\n```text\n{}```\n\n</details>\n",
            r.one_active_rounds, r.attempted, r.lost, r.anomalies, r.timeline, r.per_second
        ));
    }
    md
}
