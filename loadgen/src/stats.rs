//! Latency samples and their summary: throughput, nearest-rank percentiles, errors by kind.

use std::collections::BTreeMap;
use std::time::Duration;

/// What one sender recorded during the measured window.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Latencies of the successful sends, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Failed sends by kind (`HTTP 503 unavailable`, `gRPC Unavailable`, `transport`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Successful sends that completed inside the measured window (whenever they started):
    /// the throughput of a timed run.
    pub completed_in_window: u64,
    /// The first message seen for each kind of error, to show what went wrong.
    pub error_examples: BTreeMap<String, String>,
}

impl Recorder {
    pub fn ok(&mut self, latency: Duration) {
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn error(&mut self, kind: String, example: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.error_examples.entry(kind).or_insert(example);
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.completed_in_window += other.completed_in_window;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, example) in other.error_examples {
            self.error_examples.entry(kind).or_insert(example);
        }
    }
}

/// The figures reported for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    /// Successful sends per second of the measured window.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The nearest-rank percentile (`p` in 0..=100) of ascending `sorted` values: the smallest
/// value such that at least `p`% of the values are at or below it. None when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // ceil(p/100 * n), at least rank 1; computed in integers for p given to 0.001.
    let n = sorted.len() as u128;
    let milli = (p * 1000.0).round() as u128;
    let rank = (milli * n).div_ceil(100_000).max(1);
    Some(sorted[usize::try_from(rank - 1).expect("rank fits")])
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Summarises `recorder`: `completed` successful sends in a window of `elapsed`.
pub fn summarize(recorder: &Recorder, completed: u64, elapsed: Duration) -> Summary {
    let mut sorted = recorder.latencies_us.clone();
    sorted.sort_unstable();
    let ok = sorted.len() as u64;
    let pct = |p| percentile(&sorted, p).map_or(0.0, ms);
    let secs = elapsed.as_secs_f64();
    Summary {
        ok,
        errors: recorder.errors.values().sum(),
        per_second: if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        },
        p50_ms: pct(50.0),
        p90_ms: pct(90.0),
        p99_ms: pct(99.0),
        max_ms: sorted.last().copied().map_or(0.0, ms),
        mean_ms: if ok == 0 {
            0.0
        } else {
            ms(sorted.iter().sum::<u64>()) / ok as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 90.0), Some(90));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 99.5), Some(100));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));

        // Ten values: p50 is the 5th, p90 the 9th, p99 the 10th (ceil(9.9) = 10).
        let ten = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        assert_eq!(percentile(&ten, 50.0), Some(50));
        assert_eq!(percentile(&ten, 90.0), Some(90));
        assert_eq!(percentile(&ten, 99.0), Some(1000));
        assert_eq!(percentile(&ten, 91.0), Some(1000));

        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_of_merged_recorders() {
        let mut a = Recorder::default();
        for us in [1_000, 3_000, 2_000] {
            a.ok(Duration::from_micros(us));
        }
        a.error("HTTP 503".into(), "first".into());
        let mut b = Recorder::default();
        b.ok(Duration::from_micros(4_000));
        b.completed_in_window = 3;
        a.completed_in_window = 2;
        b.error("HTTP 503".into(), "second".into());
        b.error("transport".into(), "reset".into());
        a.merge(b);

        let s = summarize(&a, 4, Duration::from_secs(2));
        assert_eq!(s.ok, 4);
        assert_eq!(s.errors, 3);
        assert_eq!(a.errors["HTTP 503"], 2);
        assert_eq!(a.error_examples["HTTP 503"], "first");
        assert_eq!(a.completed_in_window, 5);
        assert!((s.per_second - 2.0).abs() < 1e-9);
        assert!((s.p50_ms - 2.0).abs() < 1e-9);
        assert!((s.p90_ms - 4.0).abs() < 1e-9);
        assert!((s.p99_ms - 4.0).abs() < 1e-9);
        assert!((s.max_ms - 4.0).abs() < 1e-9);
        assert!((s.mean_ms - 2.5).abs() < 1e-9);
    }

    #[test]
    fn an_empty_run_summarises_to_zeros() {
        let s = summarize(&Recorder::default(), 0, Duration::ZERO);
        assert_eq!(s.ok, 0);
        assert_eq!(s.per_second, 0.0);
        assert_eq!(s.p99_ms, 0.0);
        assert_eq!(s.max_ms, 0.0);
    }
}
