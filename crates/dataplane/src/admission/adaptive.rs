//! Adaptive concurrency, sans-IO: the limit follows latency (gradient, as Envoy's filter).
//!
//! Per window of samples: gradient = min RTT / the window's mean RTT, clamped to [0.5, 1];
//! new limit = gradient × limit + √limit (room to find out whether more would do), within
//! [min_limit, max_limit]. The min RTT is measured anew every `RESET_WINDOWS` windows, so a
//! slower model version does not leave the limit pinned low forever.

const RESET_WINDOWS: u64 = 20;

pub struct GradientLimit {
    pub min_limit: usize,
    pub max_limit: usize,
    pub limit: usize,
    min_rtt_s: f64,
    window: usize,
    samples: Vec<f64>,
    windows: u64,
}

impl GradientLimit {
    pub fn new(min_limit: usize, max_limit: usize, window: usize, limit: usize) -> GradientLimit {
        GradientLimit {
            min_limit,
            max_limit,
            limit,
            min_rtt_s: f64::INFINITY,
            window: window.max(1),
            samples: Vec::with_capacity(window),
            windows: 0,
        }
    }

    /// One request's upstream time; the new limit when a window completes.
    pub fn sample(&mut self, rtt_s: f64) -> Option<usize> {
        self.samples.push(rtt_s);
        if self.samples.len() < self.window {
            return None;
        }
        let mean = self.samples.iter().sum::<f64>() / self.samples.len() as f64;
        let fastest = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        self.min_rtt_s = self.min_rtt_s.min(fastest);
        self.samples.clear();
        self.windows += 1;
        let gradient = if mean > 0.0 {
            (self.min_rtt_s / mean).clamp(0.5, 1.0)
        } else {
            1.0
        };
        let limit = self.limit as f64;
        let next = (gradient * limit + limit.sqrt()) as usize;
        self.limit = next.clamp(self.min_limit, self.max_limit);
        if self.windows.is_multiple_of(RESET_WINDOWS) {
            self.min_rtt_s = f64::INFINITY;
        }
        Some(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_latency_grows_the_limit_and_queueing_shrinks_it() {
        let mut limit = GradientLimit::new(2, 64, 5, 4);
        for _ in 0..5 {
            limit.sample(0.01);
        }
        assert_eq!(limit.limit, 6); // 1.0 × 4 + 2
        for _ in 0..5 {
            limit.sample(0.04); // four times the fastest: gradient 0.5
        }
        assert_eq!(limit.limit, 5); // 0.5 × 6 + 2.4
        let mut floor = GradientLimit::new(2, 64, 5, 2);
        floor.sample(0.001);
        for _ in 0..4 {
            floor.sample(1.0);
        }
        assert_eq!(floor.limit, 2);
    }
}
