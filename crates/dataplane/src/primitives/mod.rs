//! Small parts every layer above uses: latency histograms, single flights (one call shared by
//! the callers that ask for the same thing at once), the monotonic clock, bounded event queues
//! to the control plane, JSON-lines logs written by a thread of their own, keys of owned strings
//! found by borrowed ones, and `locked` (a mutex's guard, whether or not a thread panicked while
//! holding it: what it guards stays usable).

pub mod borrowed;
pub mod clock;
pub mod events;
pub mod flights;
pub mod histogram;
pub mod jsonlog;

/// The guard of `mutex`, poisoned or not.
pub fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
