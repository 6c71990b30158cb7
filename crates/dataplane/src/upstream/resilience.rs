//! Sans-IO pieces of a resilient pool: outlier ejection, the retry budget, power of two choices.
//! The clock is passed in (seconds on any monotonic scale), so the tests need no sleeping.

use serde::{Deserialize, Serialize};

/// Passive outlier ejection: consecutive failures take an endpoint out for a growing while.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection_s: f64,
    pub max_ejection_s: f64,
    pub max_ejection_percent: u32,
}

/// Per-endpoint passive health. `consecutive_failures` failures in a row eject the endpoint for
/// `base * 2^(ejections-1)` (capped); a full back-off period without ejection forgets the past.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    settings: OutlierConfig,
    pub failures: u32,
    pub ejections: u32,
    pub ejected_until: f64,
    pub total_ejections: u64,
}

impl EndpointHealth {
    pub fn new(settings: OutlierConfig) -> Self {
        EndpointHealth {
            settings,
            failures: 0,
            ejections: 0,
            ejected_until: 0.0,
            total_ejections: 0,
        }
    }

    pub fn ejected(&self, now: f64) -> bool {
        now < self.ejected_until
    }

    pub fn success(&mut self, now: f64) {
        self.failures = 0;
        if self.ejections > 0 && now > self.ejected_until + self.settings.max_ejection_s {
            self.ejections = 0;
        }
    }

    /// Count a failure; true when it ejects the endpoint (`may_eject`: the pool's percentage cap).
    pub fn failure(&mut self, now: f64, may_eject: bool) -> bool {
        self.failures += 1;
        if self.failures < self.settings.consecutive_failures || self.ejected(now) || !may_eject {
            return false;
        }
        self.ejections += 1;
        self.total_ejections += 1;
        let backoff = self.settings.base_ejection_s * 2f64.powi(self.ejections as i32 - 1);
        self.ejected_until = now + backoff.min(self.settings.max_ejection_s);
        self.failures = 0;
        true
    }
}

/// Every request earns `ratio` of a retry token, every retry (or hedge) spends one: over N
/// requests at most `ratio * N + initial` retries, so a failing upstream never sees a storm.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    max_tokens: f64,
    tokens: f64,
}

impl RetryBudget {
    pub fn new(ratio: f64, initial: f64) -> Self {
        RetryBudget {
            ratio,
            max_tokens: 10.0,
            tokens: initial,
        }
    }

    pub fn on_request(&mut self) {
        self.tokens = (self.tokens + self.ratio).min(self.max_tokens);
    }

    pub fn try_retry(&mut self) -> bool {
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Power of two choices: of two distinct random candidates, the one whose next request should
/// finish first wins: (requests under way + 1) × its latency EWMA, as linkerd's and Finagle's
/// P2C-EWMA balancers weigh them (fewer under way on a tie). An endpoint without a sample yet is
/// taken to be as fast as the other. `loads` is (outstanding, ewma seconds); not empty.
pub fn choose(loads: &[(u64, f64)], mut draw: impl FnMut(usize) -> usize) -> usize {
    if loads.len() == 1 {
        return 0;
    }
    let first = draw(loads.len());
    let mut second = draw(loads.len() - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (loads[first], loads[second]);
    let latency = |own: f64, other: f64| match (own > 0.0, other > 0.0) {
        (true, _) => own,
        (false, true) => other,
        (false, false) => 0.001,
    };
    let cost_a = (a.0 + 1) as f64 * latency(a.1, b.1);
    let cost_b = (b.0 + 1) as f64 * latency(b.1, a.1);
    if cost_a < cost_b || (cost_a == cost_b && a.0 <= b.0) {
        first
    } else {
        second
    }
}

/// How fast a latency estimate fades without new samples (seconds per factor e).
pub const LATENCY_DECAY_S: f64 = 1.0;

/// A latency estimate `elapsed_s` after its last sample. It fades, as linkerd's and Finagle's
/// PeakEWMA do: an endpoint that stopped getting calls after slow ones (a cold first request, a
/// hiccup) would otherwise keep its bad estimate, and P2C would never call it again to learn
/// better. Under load, samples come every few milliseconds and the fading is negligible.
pub fn faded(estimate: f64, elapsed_s: f64) -> f64 {
    estimate * (-elapsed_s.max(0.0) / LATENCY_DECAY_S).exp()
}

/// The estimate after a new sample: an EWMA over the faded estimate, seeded afresh once the old
/// one has faded to nothing next to the sample.
pub fn update(estimate: f64, elapsed_s: f64, sample: f64) -> f64 {
    let base = faded(estimate, elapsed_s);
    ewma(if base < 0.05 * sample { 0.0 } else { base }, sample)
}

/// Latency EWMA (weight 0.3), seeded by the first sample.
pub fn ewma(previous: f64, sample: f64) -> f64 {
    if previous == 0.0 {
        sample
    } else {
        previous + 0.3 * (sample - previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_slow_estimate_fades_so_the_endpoint_is_tried_again() {
        let cold = 0.033; // one slow first call, then no more traffic
        assert!((faded(cold, 0.0) - cold).abs() < 1e-12);
        assert!(faded(cold, 4.0) < 0.001); // after 4 s it competes with a 0.8 ms endpoint again
        let (fast, fast_outstanding) = (0.0008, 1.0);
        let pick_slow = |elapsed: f64| faded(cold, elapsed) < fast * (fast_outstanding + 1.0);
        assert!(!pick_slow(0.5) && pick_slow(5.0));
        assert_eq!(update(cold, 10.0, 0.001), 0.001); // faded to nothing: seeded afresh
        let steady = update(0.010, 0.001, 0.012); // under load: an ordinary EWMA
        assert!((steady - (0.010 * (-0.001f64).exp() * 0.7 + 0.012 * 0.3)).abs() < 1e-9);
    }

    fn settings() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 2,
            base_ejection_s: 1.0,
            max_ejection_s: 4.0,
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn ejection_backs_off_and_is_forgotten() {
        let mut health = EndpointHealth::new(settings());
        assert!(!health.failure(0.0, true));
        assert!(health.failure(0.0, true));
        assert!(health.ejected(0.5) && !health.ejected(1.0));
        health.failure(1.0, true);
        assert!(health.failure(1.0, true));
        assert_eq!(health.ejected_until, 3.0); // twice as long
        health.success(10.0);
        assert_eq!(health.ejections, 0);
        assert!(!EndpointHealth::new(settings()).failure(0.0, false));
    }

    #[test]
    fn the_budget_caps_retries() {
        let mut budget = RetryBudget::new(0.2, 1.0);
        assert!(budget.try_retry());
        assert!(!budget.try_retry());
        for _ in 0..5 {
            budget.on_request();
        }
        assert!(budget.try_retry());
        assert!(!budget.try_retry());
    }

    #[test]
    fn two_choices_prefer_the_endpoint_that_answers_first() {
        let pick = |loads: &[(u64, f64)]| {
            let mut draws = [0usize, 0].into_iter();
            choose(loads, |_| draws.next().unwrap())
        };
        assert_eq!(pick(&[(5, 0.01), (0, 0.01)]), 1); // as fast: the idle one
        assert_eq!(pick(&[(2, 0.005), (0, 0.05)]), 0); // ten times slower: three under way are cheaper
        assert_eq!(pick(&[(10, 0.005), (0, 0.05)]), 1); // ... eleven are not
        assert_eq!(pick(&[(3, 0.005), (0, 0.0)]), 1); // no sample yet: as fast as the other
        assert_eq!(choose(&[(1, 0.0)], |_| unreachable!()), 0);
    }
}
