//! One priority class's queue, sans-IO: start-time fair queuing across tenants, by weight.
//!
//! Each ticket gets a start tag when it is queued: its tenant's previous finish, or the class's
//! virtual time if the tenant had nothing queued (an idle tenant banks no credit), and the
//! tenant's finish moves on by 1/weight. The next served is the eligible lane head with the
//! smallest tag, and the virtual time becomes that tag: over any busy period each tenant is
//! served in proportion to its weight, whatever the arrival pattern. Only tenants with tickets
//! queued are held (memory is bounded by the queue, whatever names callers send).

use std::collections::{HashMap, VecDeque};

/// A request waiting for a slot of its pool.
#[derive(Clone, Debug)]
pub struct Ticket {
    pub id: u64,
    pub priority: usize,
    pub tenant: String,
    /// On the policy's clock; None: no deadline.
    pub deadline: Option<f64>,
}

struct Lane {
    /// (start tag, ticket), in tag order.
    tickets: VecDeque<(f64, Ticket)>,
    weight: f64,
    /// Where the next ticket's tag starts.
    finish: f64,
}

#[derive(Default)]
pub struct FairQueue {
    lanes: HashMap<String, Lane>,
    virtual_time: f64,
    len: usize,
}

impl FairQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tickets of `tenant` queued here.
    pub fn load(&self, tenant: &str) -> usize {
        self.lanes.get(tenant).map_or(0, |lane| lane.tickets.len())
    }

    /// The tag a new ticket of `tenant` would get.
    fn next_tag(&self, tenant: &str) -> f64 {
        self.lanes
            .get(tenant)
            .map_or(self.virtual_time, |lane| lane.finish.max(self.virtual_time))
    }

    pub fn push(&mut self, ticket: Ticket, weight: f64) {
        let tag = self.next_tag(&ticket.tenant);
        let lane = self
            .lanes
            .entry(ticket.tenant.clone())
            .or_insert_with(|| Lane {
                tickets: VecDeque::new(),
                weight,
                finish: tag,
            });
        lane.weight = weight;
        lane.finish = tag + 1.0 / weight;
        lane.tickets.push_back((tag, ticket));
        self.len += 1;
    }

    /// Tickets that would be served before a new one of `tenant` (in this class).
    pub fn ahead(&self, tenant: &str) -> usize {
        let tag = self.next_tag(tenant);
        self.lanes
            .values()
            .map(|lane| lane.tickets.partition_point(|(t, _)| *t <= tag))
            .sum()
    }

    /// The next ticket to serve among the tenants `eligible` says may start one now.
    pub fn pop(&mut self, eligible: impl Fn(&str) -> bool) -> Option<Ticket> {
        let tenant = self
            .lanes
            .iter()
            .filter(|(tenant, _)| eligible(tenant))
            .filter_map(|(tenant, lane)| lane.tickets.front().map(|(tag, _)| (*tag, tenant)))
            .min_by(|a, b| a.0.total_cmp(&b.0))?
            .1
            .clone();
        let (tag, ticket) = self.take(&tenant, |lane| lane.tickets.pop_front())?;
        self.virtual_time = self.virtual_time.max(tag);
        Some(ticket)
    }

    /// The tenant holding the most of this queue for its weight (tickets / weight), with that
    /// figure.
    pub fn heaviest(&self) -> Option<(&str, f64)> {
        self.lanes
            .iter()
            .map(|(tenant, lane)| (tenant.as_str(), lane.tickets.len() as f64 / lane.weight))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// A ticket of `tenant` shed to make room: its oldest if `late` says that one can no
    /// longer be served in time, else its newest (which gives back its place in the tags).
    pub fn evict(&mut self, tenant: &str, late: impl Fn(&Ticket) -> bool) -> Option<Ticket> {
        let oldest_late = self
            .lanes
            .get(tenant)?
            .tickets
            .front()
            .is_some_and(|(_, t)| late(t));
        let taken = if oldest_late {
            self.take(tenant, |lane| lane.tickets.pop_front())
        } else {
            self.take(tenant, |lane| {
                let newest = lane.tickets.pop_back()?;
                lane.finish = newest.0;
                Some(newest)
            })
        };
        taken.map(|(_, ticket)| ticket)
    }

    /// A ticket taken out (its caller left).
    pub fn remove(&mut self, id: u64, tenant: &str) -> Option<Ticket> {
        self.take(tenant, |lane| {
            let position = lane.tickets.iter().position(|(_, t)| t.id == id)?;
            lane.tickets.remove(position)
        })
        .map(|(_, ticket)| ticket)
    }

    fn take(
        &mut self,
        tenant: &str,
        how: impl FnOnce(&mut Lane) -> Option<(f64, Ticket)>,
    ) -> Option<(f64, Ticket)> {
        let lane = self.lanes.get_mut(tenant)?;
        let taken = how(lane)?;
        if lane.tickets.is_empty() {
            self.lanes.remove(tenant);
        }
        self.len -= 1;
        Some(taken)
    }

    /// Queued tickets per tenant.
    pub fn loads(&self) -> impl Iterator<Item = (&str, usize)> {
        self.lanes
            .iter()
            .map(|(tenant, lane)| (tenant.as_str(), lane.tickets.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: u64, tenant: &str) -> Ticket {
        Ticket {
            id,
            priority: 1,
            tenant: tenant.into(),
            deadline: None,
        }
    }

    #[test]
    fn tenants_are_served_in_proportion_to_their_weights() {
        let mut queue = FairQueue::default();
        for id in 0..300 {
            queue.push(ticket(id, "heavy"), 2.0);
            queue.push(ticket(1000 + id, "light"), 1.0);
        }
        let served: Vec<Ticket> = (0..300).map(|_| queue.pop(|_| true).unwrap()).collect();
        let heavy = served.iter().filter(|t| t.tenant == "heavy").count();
        assert_eq!(heavy, 200, "2:1 by weight");
    }

    #[test]
    fn a_newcomer_banks_no_credit_and_waits_behind_no_backlog() {
        let mut queue = FairQueue::default();
        for id in 0..100 {
            queue.push(ticket(id, "flood"), 1.0);
        }
        for _ in 0..50 {
            queue.pop(|_| true);
        }
        queue.push(ticket(500, "quiet"), 1.0);
        assert_eq!(queue.ahead("quiet"), 2); // the flood's next, then its own
        let next_two: Vec<u64> = (0..2).map(|_| queue.pop(|_| true).unwrap().id).collect();
        assert!(next_two.contains(&500), "{next_two:?}");
    }

    #[test]
    fn the_heaviest_gives_its_newest_unless_its_oldest_is_late() {
        let mut queue = FairQueue::default();
        for id in 0..4 {
            queue.push(ticket(id, "a"), 1.0);
        }
        queue.push(ticket(10, "b"), 1.0);
        assert_eq!(queue.heaviest().unwrap().0, "a");
        assert_eq!(queue.evict("a", |_| false).unwrap().id, 3);
        assert_eq!(queue.evict("a", |t| t.id == 0).unwrap().id, 0);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.remove(10, "b").unwrap().id, 10);
        assert_eq!(queue.load("b"), 0);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn tenants_that_may_not_start_one_are_passed_over() {
        let mut queue = FairQueue::default();
        queue.push(ticket(1, "capped"), 1.0);
        queue.push(ticket(2, "free"), 1.0);
        assert_eq!(queue.pop(|t| t != "capped").unwrap().id, 2);
        assert!(queue.pop(|t| t != "capped").is_none());
        assert_eq!(queue.len(), 1);
    }
}
