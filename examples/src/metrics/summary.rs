//! Timings as go-metrics' Prometheus sink reports them: a *summary* in
//! milliseconds with the 0.5, 0.9 and 0.99 quantiles over a sliding window,
//! plus a cumulative sum and count.
//!
//! Vault's dashboards and alerts read `vault_core_handle_request{quantile="0.99"}`
//! and `vault_core_leadership_lost_count`, so the shape must be Vault's. The
//! `prometheus-client` crate has no summary type, so this module keeps the
//! data and writes the three kinds of sample lines itself.
//!
//! The window is client_golang's default (the one Vault runs with): the last
//! 10 s, kept as five 2 s slices. Each slice counts observations in
//! log-linear buckets (eight per power of two of microseconds, so a quantile
//! is within about 6 % of the true value). Recording is lock-free: one
//! relaxed increment per bucket, count and sum; the first observation in a
//! new slice claims it with a compare-and-swap and clears it (an observation
//! racing with that clear may be lost from the quantiles, never from the sum
//! and count).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The quantiles Vault's sink reports.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

const SLICES: u64 = 5;
const SLICE_MILLIS: u64 = 2_000;
/// Buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Largest power of two tracked: 2^40 µs is about 12.7 days.
const MAX_POWER: u64 = 40;
const BUCKETS: usize = (1 + (MAX_POWER + 1) * SUB) as usize;

#[derive(Debug)]
struct Slice {
    /// Which 2 s period (counted from `origin`, plus one) the counts are for.
    epoch: AtomicU64,
    counts: Box<[AtomicU32]>,
}

impl Slice {
    fn new() -> Self {
        Slice {
            epoch: AtomicU64::new(0),
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// One summary's data (see the module docs).
#[derive(Debug)]
pub(crate) struct Summary {
    origin: Instant,
    slices: [Slice; SLICES as usize],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// What a scrape reports for one summary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SummarySnapshot {
    /// `(quantile, milliseconds)`; NaN when nothing was observed in the
    /// window (as client_golang reports it).
    pub(crate) quantiles: Vec<(f64, f64)>,
    /// Sum of every observation since start, in milliseconds.
    pub(crate) sum_ms: f64,
    /// Number of observations since start.
    pub(crate) count: u64,
}

fn bucket_of(micros: u64) -> usize {
    if micros == 0 {
        return 0;
    }
    let power = u64::from(63 - micros.leading_zeros());
    if power > MAX_POWER {
        return BUCKETS - 1;
    }
    let sub = if power >= u64::from(SUB_BITS) {
        (micros >> (power - u64::from(SUB_BITS))) & (SUB - 1)
    } else {
        (micros << (u64::from(SUB_BITS) - power)) & (SUB - 1)
    };
    usize::try_from(1 + power * SUB + sub).unwrap_or(BUCKETS - 1)
}

/// The middle of a bucket, in microseconds.
fn bucket_value(index: usize) -> f64 {
    if index == 0 {
        return 0.0;
    }
    let index = (index - 1) as u64;
    let (power, sub) = (index / SUB, index % SUB);
    let exp = i32::try_from(power).unwrap_or(i32::MAX);
    (SUB as f64 + sub as f64 + 0.5) / SUB as f64 * 2f64.powi(exp)
}

impl Summary {
    pub(crate) fn new() -> Self {
        Summary {
            origin: Instant::now(),
            slices: std::array::from_fn(|_| Slice::new()),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn epoch(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX) / SLICE_MILLIS + 1
    }

    /// Records one observation.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let epoch = self.epoch();
        let slice = &self.slices[usize::try_from(epoch % SLICES).unwrap_or(0)];
        let seen = slice.epoch.load(Ordering::Acquire);
        if seen < epoch
            && slice
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &slice.counts {
                count.store(0, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = slice.counts.get(bucket_of(micros)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Whether anything was ever observed.
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// The quantiles over the window, the sum and the count.
    pub(crate) fn snapshot(&self) -> SummarySnapshot {
        let epoch = self.epoch();
        let mut merged = vec![0u64; BUCKETS];
        for slice in &self.slices {
            let at = slice.epoch.load(Ordering::Acquire);
            if at == 0 || at + SLICES <= epoch {
                continue;
            }
            for (total, count) in merged.iter_mut().zip(slice.counts.iter()) {
                *total += u64::from(count.load(Ordering::Relaxed));
            }
        }
        let total: u64 = merged.iter().sum();
        let quantiles = QUANTILES
            .iter()
            .map(|&q| {
                if total == 0 {
                    return (q, f64::NAN);
                }
                let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
                let mut seen = 0;
                let index = merged
                    .iter()
                    .position(|&c| {
                        seen += c;
                        seen >= rank
                    })
                    .unwrap_or(BUCKETS - 1);
                (q, bucket_value(index) / 1_000.0)
            })
            .collect();
        SummarySnapshot {
            quantiles,
            sum_ms: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Escapes a `# HELP` text for both text formats.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// Writes one summary family (`# HELP`, `# TYPE`, quantile lines, `_sum`,
/// `_count`); the lines are the same in the Prometheus 0.0.4 and the
/// OpenMetrics text formats.
pub(crate) fn encode(out: &mut String, name: &str, help: &str, snapshot: &SummarySnapshot) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} summary");
    for (q, v) in &snapshot.quantiles {
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", number(*v));
    }
    let _ = writeln!(out, "{name}_sum {}", number(snapshot.sum_ms));
    let _ = writeln!(out, "{name}_count {}", snapshot.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_close_to_their_values() {
        let mut last = 0;
        for micros in [1u64, 2, 3, 7, 8, 9, 100, 1_000, 123_456, 10_000_000] {
            let index = bucket_of(micros);
            assert!(index >= last, "{micros}");
            last = index;
            let value = bucket_value(index);
            let error = (value - micros as f64).abs() / micros as f64;
            assert!(error <= 0.07, "{micros} µs -> {value} ({error})");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_window_and_totals_from_all_time() {
        let summary = Summary::new();
        assert!(summary.is_empty());
        assert!(summary.snapshot().quantiles.iter().all(|(_, v)| v.is_nan()));
        for ms in 1..=100u64 {
            summary.observe(Duration::from_millis(ms));
        }
        let snap = summary.snapshot();
        assert_eq!(snap.count, 100);
        assert!((snap.sum_ms - 5050.0).abs() < 1e-6, "{}", snap.sum_ms);
        let near = |q: f64, want: f64| {
            let got = snap.quantiles.iter().find(|(x, _)| *x == q).unwrap().1;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        };
        near(0.5, 50.0);
        near(0.9, 90.0);
        near(0.99, 99.0);
    }

    #[test]
    fn the_text_has_vaults_shape() {
        let summary = Summary::new();
        summary.observe(Duration::from_millis(4));
        let mut out = String::new();
        encode(
            &mut out,
            "vault_core_handle_request",
            "a\nb",
            &summary.snapshot(),
        );
        assert!(
            out.starts_with(
                "# HELP vault_core_handle_request a\\nb\n# TYPE vault_core_handle_request summary\n"
            ),
            "{out}"
        );
        let q99: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("vault_core_handle_request{quantile=\"0.99\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((q99 - 4.0).abs() < 0.25, "{out}");
        assert!(out.contains("vault_core_handle_request_sum 4\n"), "{out}");
        assert!(
            out.ends_with("vault_core_handle_request_count 1\n"),
            "{out}"
        );
    }
}
