//! Latency histograms with fixed bounds, as Prometheus keeps them: the core fills them on the
//! request path and the control plane reads them at scrape time.

use serde::Serialize;

/// 100 µs to 10 s (`gateway.serving.metrics.LATENCY_BUCKETS` formats them).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    pub buckets: Vec<u64>, // per bound of LATENCY_BUCKETS, not cumulative; +Inf is count - sum(buckets)
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Adds `other`'s observations.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// The `q` quantile, interpolated inside its bucket as Prometheus does; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = q * self.count as f64;
        let (mut seen, mut lower) = (0u64, 0.0);
        for (count, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if (seen + count) as f64 >= rank && *count > 0 {
                return lower + (bound - lower) * (rank - seen as f64) / *count as f64;
            }
            seen += count;
            lower = bound;
        }
        lower // beyond the last bound
    }
}
