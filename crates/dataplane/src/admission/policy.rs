//! Admission control, sans-IO: a concurrency limit, then a bounded queue of priority classes with
//! round-robin fair share across tenants inside each class (deficit round robin, unit cost).
//!
//! Fed tickets and clock readings (seconds), it answers with decisions; `super::Admission` turns
//! them into waits and statuses. Strict priority between classes (1 is the highest); inside a
//! class, tenants take turns, so one tenant's burst cannot starve the others.

use std::collections::{HashMap, VecDeque};

/// The shortest `retry-after` before the pool has a service time to go by.
pub const RETRY_AFTER_FLOOR_S: f64 = 0.010;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Queued,
    /// RESOURCE_EXHAUSTED, with a retry-after hint.
    RejectFull,
    /// DEADLINE_EXCEEDED: it could not be served in time.
    RejectDeadline,
}

#[derive(Clone, Debug)]
pub struct Ticket {
    pub id: u64,
    pub priority: usize,
    pub tenant: String,
    /// On the policy's clock; None: no deadline.
    pub deadline: Option<f64>,
}

#[derive(Default)]
struct Class {
    turns: VecDeque<String>,
    queues: HashMap<String, VecDeque<Ticket>>,
}

pub struct Policy {
    pub limit: usize,
    pub max_queue: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// EWMA of the upstream service time, for deadline estimates.
    pub service_time_s: f64,
    classes: Vec<Class>,
}

impl Policy {
    pub fn new(limit: usize, max_queue: usize, priority_levels: usize) -> Policy {
        Policy {
            limit,
            max_queue,
            in_flight: 0,
            queued: 0,
            service_time_s: 0.0,
            classes: (0..priority_levels.max(1))
                .map(|_| Class::default())
                .collect(),
        }
    }

    pub fn observe_service_time(&mut self, seconds: f64) {
        const WEIGHT: f64 = 0.2;
        self.service_time_s = if self.service_time_s == 0.0 {
            seconds
        } else {
            (1.0 - WEIGHT) * self.service_time_s + WEIGHT * seconds
        };
    }

    /// Time until a request with `ahead` requests queued before it would finish.
    pub fn estimated_wait_s(&self, ahead: usize) -> f64 {
        if self.service_time_s == 0.0 {
            return 0.0;
        }
        ((ahead / self.limit.max(1)) as f64 + 1.0) * self.service_time_s
    }

    /// How long a shed caller should wait: the queue's expected drain time, never below one
    /// expected service time (before any call has finished: `RETRY_AFTER_FLOOR_S`), so a cold
    /// pool does not invite an immediate retry storm.
    pub fn retry_after_s(&self) -> f64 {
        let floor = if self.service_time_s > 0.0 {
            self.service_time_s
        } else {
            RETRY_AFTER_FLOOR_S
        };
        self.estimated_wait_s(self.queued).max(floor)
    }

    /// When a queued ticket must have started to finish by its deadline (a little margin
    /// included, so the caller hears this answer before its own timer fires).
    pub fn latest_start(&self, deadline: f64) -> f64 {
        deadline - self.service_time_s - 0.005
    }

    /// Tickets that would be served before a new one of `priority`: its own class and higher.
    fn ahead_of(&self, priority: usize) -> usize {
        self.classes[..=self.class(priority)]
            .iter()
            .flat_map(|c| c.queues.values())
            .map(VecDeque::len)
            .sum()
    }

    fn class(&self, priority: usize) -> usize {
        priority.clamp(1, self.classes.len()) - 1
    }

    pub fn offer(&mut self, ticket: Ticket, now: f64) -> Decision {
        if ticket.deadline.is_some_and(|d| d <= now) {
            return Decision::RejectDeadline;
        }
        if self.in_flight < self.limit && self.queued == 0 {
            self.in_flight += 1;
            return Decision::Admit;
        }
        if self.queued >= self.max_queue {
            return Decision::RejectFull;
        }
        let wait = self.estimated_wait_s(self.ahead_of(ticket.priority));
        if ticket.deadline.is_some_and(|d| now + wait > d) {
            return Decision::RejectDeadline;
        }
        let index = self.class(ticket.priority);
        let class = &mut self.classes[index];
        let queue = class.queues.entry(ticket.tenant.clone()).or_default();
        if queue.is_empty() {
            class.turns.push_back(ticket.tenant.clone());
        }
        queue.push_back(ticket);
        self.queued += 1;
        Decision::Queued
    }

    /// Take a queued ticket out (its caller left or its deadline passed); false if it was not
    /// queued (admitted or dropped meanwhile).
    pub fn remove(&mut self, id: u64, priority: usize, tenant: &str) -> bool {
        let index = self.class(priority);
        let class = &mut self.classes[index];
        let Some(queue) = class.queues.get_mut(tenant) else {
            return false;
        };
        let Some(position) = queue.iter().position(|t| t.id == id) else {
            return false;
        };
        queue.remove(position);
        if queue.is_empty() {
            class.queues.remove(tenant);
            class.turns.retain(|t| t != tenant);
        }
        self.queued -= 1;
        true
    }

    /// A slot came free: the tickets admitted into free slots, and the expired ones dropped.
    pub fn release(&mut self, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.fill(now)
    }

    /// A new limit (adaptive concurrency); the tickets admitted because of it, and the expired.
    pub fn set_limit(&mut self, limit: usize, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        self.limit = limit;
        self.fill(now)
    }

    /// Admit queued tickets into the free slots (the expired ones are dropped on the way).
    pub fn fill(&mut self, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        let (mut admitted, mut expired) = (Vec::new(), Vec::new());
        while self.in_flight < self.limit && self.queued > 0 {
            let Some(ticket) = self.pop() else { break };
            if ticket.deadline.is_some_and(|d| self.latest_start(d) <= now) {
                expired.push(ticket);
                continue;
            }
            self.in_flight += 1;
            admitted.push(ticket);
        }
        (admitted, expired)
    }

    fn pop(&mut self) -> Option<Ticket> {
        let class = self.classes.iter_mut().find(|c| !c.turns.is_empty())?;
        let tenant = class.turns.pop_front()?;
        let queue = class.queues.get_mut(&tenant)?;
        let ticket = queue.pop_front();
        if queue.is_empty() {
            class.queues.remove(&tenant);
        } else {
            class.turns.push_back(tenant); // back of the line: the next tenant goes first
        }
        self.queued -= 1;
        ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: u64, priority: usize, tenant: &str, deadline: Option<f64>) -> Ticket {
        Ticket {
            id,
            priority,
            tenant: tenant.into(),
            deadline,
        }
    }

    #[test]
    fn retry_after_is_never_below_one_service_time() {
        let mut policy = Policy::new(1, 0, 1);
        assert_eq!(policy.retry_after_s(), RETRY_AFTER_FLOOR_S); // cold: no service time yet
        policy.observe_service_time(0.2);
        assert!((policy.retry_after_s() - 0.2).abs() < 1e-9);
        policy.observe_service_time(0.0001); // fast calls pull the EWMA down, not below it
        assert!(policy.retry_after_s() >= policy.service_time_s);
    }

    #[test]
    fn admits_to_the_limit_then_queues_then_sheds() {
        let mut policy = Policy::new(1, 2, 3);
        assert_eq!(policy.offer(ticket(1, 2, "", None), 0.0), Decision::Admit);
        assert_eq!(policy.offer(ticket(2, 2, "", None), 0.0), Decision::Queued);
        assert_eq!(policy.offer(ticket(3, 2, "", None), 0.0), Decision::Queued);
        assert_eq!(
            policy.offer(ticket(4, 2, "", None), 0.0),
            Decision::RejectFull
        );
        let (admitted, expired) = policy.release(0.1);
        assert_eq!((admitted[0].id, expired.len()), (2, 0));
        assert_eq!((policy.in_flight, policy.queued), (1, 1));
    }

    #[test]
    fn higher_priority_first_and_tenants_take_turns() {
        let mut policy = Policy::new(1, 100, 3);
        policy.offer(ticket(0, 2, "", None), 0.0);
        for id in 1..=3 {
            policy.offer(ticket(id, 3, "flood", None), 0.0);
        }
        policy.offer(ticket(10, 3, "quiet", None), 0.0);
        policy.offer(ticket(20, 1, "vip", None), 0.0);
        let order: Vec<u64> = (0..5).map(|_| policy.release(0.0).0[0].id).collect();
        assert_eq!(order, vec![20, 1, 10, 2, 3]);
    }

    #[test]
    fn deadlines_refuse_what_cannot_be_served_in_time() {
        let mut policy = Policy::new(1, 10, 1);
        policy.observe_service_time(0.1);
        assert_eq!(
            policy.offer(ticket(1, 1, "", Some(1.0)), 0.0),
            Decision::Admit
        );
        // One ahead of it at most: ~0.1 s of wait; a deadline 50 ms away cannot make it.
        assert_eq!(
            policy.offer(ticket(2, 1, "", Some(0.05)), 0.0),
            Decision::RejectDeadline
        );
        assert_eq!(
            policy.offer(ticket(3, 1, "", Some(0.5)), 0.0),
            Decision::Queued
        );
        assert_eq!(
            policy.offer(ticket(4, 1, "", Some(0.0)), 0.0),
            Decision::RejectDeadline
        );
        // By 0.45 s, ticket 3 can no longer finish (0.1 s of service) by 0.5 s: dropped.
        let (admitted, expired) = policy.release(0.45);
        assert_eq!((admitted.len(), expired[0].id), (0, 3));
        assert!(!policy.remove(9, 1, "") && policy.queued == 0);
    }

    #[test]
    fn a_caller_that_leaves_is_taken_out() {
        let mut policy = Policy::new(1, 10, 1);
        policy.offer(ticket(1, 1, "a", None), 0.0);
        policy.offer(ticket(2, 1, "a", None), 0.0);
        policy.offer(ticket(3, 1, "b", None), 0.0);
        assert!(policy.remove(2, 1, "a"));
        assert!(!policy.remove(2, 1, "a"));
        assert_eq!(policy.release(0.0).0[0].id, 3);
        let (admitted, _) = policy.set_limit(4, 0.0);
        assert!(admitted.is_empty() && policy.queued == 0);
    }
}
