//! Core → Python: a bounded queue the control plane pulls in batches. When Python falls behind,
//! new events are dropped and counted; nothing on the request path ever waits on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub struct Events {
    capacity: usize,
    queue: Mutex<VecDeque<String>>,
    ready: Condvar,
    closed: std::sync::atomic::AtomicBool,
    pub dropped: AtomicU64,
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            capacity,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Never blocks: a full queue drops the event (and counts it).
    pub fn push(&self, event: String) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back(event);
        self.ready.notify_one();
    }

    /// Up to `max` events, waiting at most `timeout` for the first (called without the GIL).
    pub fn take(&self, max: usize, timeout: Duration) -> Vec<String> {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (mut queue, _) = self
            .ready
            .wait_timeout_while(queue, timeout, |q| {
                q.is_empty() && !self.closed.load(Ordering::Relaxed)
            })
            .unwrap_or_else(|e| e.into_inner());
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    /// Wake every waiter, now and from now on (at shutdown).
    pub fn wake(&self) {
        let _queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let events = Events::new(2);
        for i in 0..5 {
            events.push(i.to_string());
        }
        assert_eq!(events.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(events.take(10, Duration::ZERO), vec!["0", "1"]);
        assert!(events.take(10, Duration::from_millis(1)).is_empty());
    }
}
