//! A circuit breaker with exponential back-off (pure: the clock is an argument, in seconds).
//!
//! Closed: calls go through. After `threshold` consecutive failures it opens: calls are skipped
//! until the back-off has passed, then one probe is let through (half-open). A success closes it;
//! a failure reopens it with a doubled back-off, up to `max_backoff_s`.

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    base_backoff_s: f64,
    max_backoff_s: f64,
    failures: u32,
    backoff_s: f64,
    open_until: Option<f64>,
    probing: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(3, 0.5, 10.0)
    }
}

impl Breaker {
    pub fn new(threshold: u32, base_backoff_s: f64, max_backoff_s: f64) -> Breaker {
        Breaker {
            threshold,
            base_backoff_s,
            max_backoff_s,
            failures: 0,
            backoff_s: base_backoff_s,
            open_until: None,
            probing: false,
        }
    }

    /// "closed", "open" or "half-open" (the admin API's `redis_breaker`).
    pub fn state(&self, now: f64) -> &'static str {
        match self.open_until {
            None => "closed",
            Some(until) if self.probing || now >= until => "half-open",
            Some(_) => "open",
        }
    }

    /// Whether a call may go now (a half-open breaker lets one probe through at a time).
    pub fn allow(&mut self, now: f64) -> bool {
        match self.open_until {
            None => true,
            Some(until) if self.probing || now < until => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.backoff_s = self.base_backoff_s;
        self.open_until = None;
        self.probing = false;
    }

    pub fn failure(&mut self, now: f64) {
        self.failures += 1;
        if self.probing {
            self.backoff_s = (self.backoff_s * 2.0).min(self.max_backoff_s);
        }
        if self.probing || self.failures >= self.threshold {
            self.open_until = Some(now + self.backoff_s);
            self.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_and_backs_off_doubling() {
        let mut breaker = Breaker::new(3, 0.5, 2.0);
        for _ in 0..2 {
            breaker.failure(0.0);
        }
        assert_eq!(breaker.state(0.0), "closed");
        breaker.failure(0.0);
        assert_eq!(breaker.state(0.1), "open");
        assert!(!breaker.allow(0.4));
        assert!(breaker.allow(0.5)); // the probe
        assert!(!breaker.allow(0.5)); // one at a time
        breaker.failure(0.5); // back-off doubles: 1 s
        assert!(!breaker.allow(1.4));
        assert!(breaker.allow(1.5));
        breaker.failure(1.5); // 2 s, the cap
        breaker.allow(3.5);
        breaker.failure(3.5);
        assert!(!breaker.allow(5.4) && breaker.allow(5.5));
        breaker.success();
        assert_eq!(breaker.state(5.5), "closed");
        assert!(breaker.allow(5.5));
    }
}
