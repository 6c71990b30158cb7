//! When to send a merged call, and whom it carries (pure: items are opaque, the clock given).
//!
//! No timer: a caller arriving while nothing is under way upstream goes at once (with whoever
//! arrived in the same instant); callers arriving while a call is in flight wait for it and then
//! leave together, as many rows as `max_rows` allows (first come, first served). Callers whose
//! deadline has passed, or who left, are dropped when a batch is taken, never sent upstream.

use std::collections::VecDeque;
use std::time::Instant;

pub struct Pending<T> {
    pub item: T,
    pub rows: u64,
    pub deadline: Option<Instant>,
}

pub struct BatchQueue<T> {
    pub max_rows: u64,
    pub max_inflight: usize,
    pub inflight: usize,
    waiting: VecDeque<Pending<T>>,
}

impl<T> BatchQueue<T> {
    pub fn new(max_rows: u64, max_inflight: usize) -> BatchQueue<T> {
        BatchQueue {
            max_rows: max_rows.max(1),
            max_inflight: max_inflight.max(1),
            inflight: 0,
            waiting: VecDeque::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn add(&mut self, item: T, rows: u64, deadline: Option<Instant>) {
        self.waiting.push_back(Pending {
            item,
            rows,
            deadline,
        });
    }

    pub fn ready(&self) -> bool {
        !self.waiting.is_empty() && self.inflight < self.max_inflight
    }

    /// The next batch (counted in flight when not empty) and the callers dropped on the way
    /// because their deadline passed. Callers no longer `alive` vanish silently.
    pub fn take(
        &mut self,
        now: Instant,
        alive: impl Fn(&T) -> bool,
    ) -> (Vec<Pending<T>>, Vec<Pending<T>>) {
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        let mut taken = 0;
        while let Some(head) = self.waiting.front() {
            if !alive(&head.item) {
                self.waiting.pop_front();
                continue;
            }
            if head.deadline.is_some_and(|d| d <= now) {
                expired.extend(self.waiting.pop_front());
                continue;
            }
            if !batch.is_empty() && taken + head.rows > self.max_rows {
                break;
            }
            taken += head.rows;
            batch.extend(self.waiting.pop_front());
        }
        if !batch.is_empty() {
            self.inflight += 1;
        }
        (batch, expired)
    }

    /// A merged call has finished (however it ended).
    pub fn done(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn batches_fill_to_max_rows_in_order_and_drop_the_late_and_the_gone() {
        let now = Instant::now();
        let mut queue = BatchQueue::new(4, 1);
        queue.add(1, 2, None);
        queue.add(2, 1, Some(now)); // late
        queue.add(3, 1, None); // gone
        queue.add(4, 2, Some(now + Duration::from_secs(1)));
        queue.add(5, 1, None);
        let (batch, expired) = queue.take(now, |item| *item != 3);
        let ids: Vec<_> = batch.iter().map(|p| p.item).collect();
        assert_eq!((ids, expired.len()), (vec![1, 4], 1));
        assert!(!queue.ready()); // one call in flight at most
        queue.done();
        assert_eq!(queue.take(now, |_| true).0.len(), 1);
    }
}
