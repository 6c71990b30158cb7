//! The process's monotonic clock in seconds, for the sans-IO bookkeeping that takes the time as
//! an argument (health, ejection, latency estimates, breakers).

use std::sync::OnceLock;
use std::time::Instant;

/// Seconds since the first call, on the monotonic clock.
pub fn now_s() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
