//! Admission control, sans-IO: a concurrency limit, then a bounded queue of priority classes,
//! tenants sharing each class by weight (`fair`: start-time fair queuing).
//!
//! Fed tickets and clock readings (seconds), it answers with decisions; `super::Admission` turns
//! them into waits and statuses. Strict priority between classes (1 is the highest). When the
//! queue is full an arrival does not simply bounce: it displaces the newest request of a lower
//! class, else of the tenant in its own class holding the most of the queue for its weight, as
//! long as that tenant holds more of it than the arrival's does; only then is the arrival shed.
//! So a tenant under its share is never shed while another is over its own, and a flood of a low
//! class cannot keep a higher one out.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::fair::FairQueue;
pub use super::fair::Ticket;

/// The shortest `retry-after` before the pool has a service time to go by.
pub const RETRY_AFTER_FLOOR_S: f64 = 0.010;

/// A tenant's share and caps (`admission.tenants.NAME`, or `admission.default_tenant`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TenantLimits {
    /// Its share of a busy pool against the others' weights.
    pub weight: f64,
    /// At most this many of its requests queued in a pool (None: only the pool's max_queue).
    pub max_queue: Option<usize>,
    /// At most this many of its requests under way in a pool at once.
    pub max_inflight: Option<usize>,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            weight: 1.0,
            max_queue: None,
            max_inflight: None,
        }
    }
}

/// Why a request was shed (RESOURCE_EXHAUSTED): the status message says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shed {
    /// The queue is full of requests of higher classes, or of tenants under their share.
    QueueFull,
    /// Its tenant holds the most of the queue for its weight.
    OverShare,
    /// Its tenant has its own `max_queue` queued.
    TenantQueueFull,
    /// Queued, then pushed out by a request of a higher class.
    Displaced,
}

impl Shed {
    pub const ALL: [Shed; 4] = [
        Shed::QueueFull,
        Shed::OverShare,
        Shed::TenantQueueFull,
        Shed::Displaced,
    ];

    /// The reason in words, as the status message and the `reason` label give it.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue full",
            Shed::OverShare => "tenant over its share",
            Shed::TenantQueueFull => "tenant queue full",
            Shed::Displaced => "displaced by a higher priority",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Queued,
    /// RESOURCE_EXHAUSTED, with a retry-after hint.
    Shed(Shed),
    /// DEADLINE_EXCEEDED: it could not be served in time.
    RejectDeadline,
}

/// What an offer decided, and the queued ticket it pushed out to make room (told `Shed`).
#[derive(Debug)]
pub struct Offered {
    pub decision: Decision,
    pub evicted: Option<(Ticket, Shed)>,
}

impl Offered {
    fn just(decision: Decision) -> Offered {
        Offered {
            decision,
            evicted: None,
        }
    }
}

pub struct Policy {
    pub limit: usize,
    pub max_queue: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// EWMA of the upstream service time, for deadline estimates.
    pub service_time_s: f64,
    classes: Vec<FairQueue>,
    tenants: HashMap<String, TenantLimits>,
    default_tenant: TenantLimits,
    /// Requests under way per tenant (tenants with none are not held).
    running: HashMap<String, usize>,
    /// When a request of each class last arrived (None: never).
    last_arrival: Vec<Option<f64>>,
}

/// How long after a request of a higher class arrived the lower classes leave a slot free for
/// the next one.
pub const HIGHER_CLASS_RECENT_S: f64 = 1.0;

/// When a request due by `deadline` must start, at `service_s` a request and a 5 ms margin.
fn latest_start(deadline: f64, service_s: f64) -> f64 {
    deadline - service_s - 0.005
}

/// Whether `tenant` may start another request now.
fn may_start(
    running: &HashMap<String, usize>,
    limits: &HashMap<String, TenantLimits>,
    default: &TenantLimits,
    tenant: &str,
) -> bool {
    let cap = limits.get(tenant).unwrap_or(default).max_inflight;
    cap.is_none_or(|cap| running.get(tenant).copied().unwrap_or(0) < cap)
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
                .map(|_| FairQueue::default())
                .collect(),
            tenants: HashMap::new(),
            default_tenant: TenantLimits::default(),
            running: HashMap::new(),
            last_arrival: vec![None; priority_levels.max(1)],
        }
    }

    /// The tenants' shares and caps: the named ones, and the default for any other.
    pub fn with_tenants(
        mut self,
        tenants: HashMap<String, TenantLimits>,
        default: TenantLimits,
    ) -> Policy {
        self.tenants = tenants;
        self.default_tenant = default;
        self
    }

    fn limits(&self, tenant: &str) -> &TenantLimits {
        self.tenants.get(tenant).unwrap_or(&self.default_tenant)
    }

    fn weight(&self, tenant: &str) -> f64 {
        self.limits(tenant).weight.max(1e-6)
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

    /// Requests of `tenant` queued, over every class.
    pub fn tenant_queued(&self, tenant: &str) -> usize {
        self.classes.iter().map(|c| c.load(tenant)).sum()
    }

    /// How long a shed caller of `tenant` should wait: the time its own backlog takes to drain
    /// at its share of the pool, never below one expected service time (before any call has
    /// finished: `RETRY_AFTER_FLOOR_S`), so a cold pool does not invite a retry storm.
    pub fn retry_after_s(&self, tenant: &str) -> f64 {
        if self.service_time_s == 0.0 {
            return RETRY_AFTER_FLOOR_S;
        }
        let mut weights: HashMap<&str, f64> = HashMap::new();
        for class in &self.classes {
            for (name, _) in class.loads() {
                weights.insert(name, self.weight(name));
            }
        }
        weights.insert(tenant, self.weight(tenant));
        let share = self.weight(tenant) / weights.values().sum::<f64>();
        let backlog = self.tenant_queued(tenant) as f64 + 1.0;
        let drain = backlog / (self.limit.max(1) as f64 * share) * self.service_time_s;
        drain.max(self.service_time_s)
    }

    /// When a queued ticket must have started to finish by its deadline (a little margin
    /// included, so the caller hears this answer before its own timer fires).
    pub fn latest_start(&self, deadline: f64) -> f64 {
        latest_start(deadline, self.service_time_s)
    }

    fn class(&self, priority: usize) -> usize {
        priority.clamp(1, self.classes.len()) - 1
    }

    /// Tickets that would be served before a new one of `tenant` at `class`: every queued one
    /// of a higher class, and those of its own class whose turn comes first.
    fn ahead(&self, class: usize, tenant: &str) -> usize {
        let higher: usize = self.classes[..class].iter().map(FairQueue::len).sum();
        higher + self.classes[class].ahead(tenant)
    }

    /// The slots a request of `class` may fill: all of them, but one while a higher class has
    /// had a request lately (so that class's next finds a slot free, not two requests under way
    /// ahead of it at the upstream; a single slot is never held back).
    fn slots_for(&self, class: usize, now: f64) -> usize {
        let higher_lately = self.last_arrival[..class]
            .iter()
            .flatten()
            .any(|at| now - at < HIGHER_CLASS_RECENT_S);
        match higher_lately && self.limit > 1 {
            true => self.limit - 1,
            false => self.limit,
        }
    }

    pub fn offer(&mut self, ticket: Ticket, now: f64) -> Offered {
        if ticket.deadline.is_some_and(|d| d <= now) {
            return Offered::just(Decision::RejectDeadline);
        }
        let class = self.class(ticket.priority);
        self.last_arrival[class] = Some(now);
        let tenant = ticket.tenant.as_str();
        let free = may_start(&self.running, &self.tenants, &self.default_tenant, tenant);
        // Queued tickets wait only while no slot is free for them or their tenant is at its own
        // cap: with a slot free, this one goes unless its tenant is capped too.
        if self.in_flight < self.slots_for(class, now) && free {
            self.start(tenant);
            return Offered::just(Decision::Admit);
        }
        if self
            .limits(tenant)
            .max_queue
            .is_some_and(|max| self.tenant_queued(tenant) >= max)
        {
            return Offered::just(Decision::Shed(Shed::TenantQueueFull));
        }
        let wait = self.estimated_wait_s(self.ahead(class, tenant));
        if ticket.deadline.is_some_and(|d| now + wait > d) {
            return Offered::just(Decision::RejectDeadline);
        }
        let mut evicted = None;
        if self.queued >= self.max_queue {
            let Some((victim_class, victim, reason)) = self.victim(class, tenant) else {
                return Offered::just(Decision::Shed(self.why_not(class, tenant)));
            };
            let service = self.service_time_s;
            let late = |t: &Ticket| t.deadline.is_some_and(|d| latest_start(d, service) <= now);
            if let Some(out) = self.classes[victim_class].evict(&victim, late) {
                self.queued -= 1;
                evicted = Some((out, reason));
            }
        }
        let weight = self.weight(tenant);
        self.classes[class].push(ticket, weight);
        self.queued += 1;
        Offered {
            decision: Decision::Queued,
            evicted,
        }
    }

    /// Whose queued ticket makes room for an arrival of `tenant` at `class`: the heaviest
    /// tenant of the lowest class below it, else the heaviest of its own class if that one holds
    /// more of the queue for its weight than the arrival's tenant does (so a tenant under its
    /// fair share is never the one shed while another is over its own).
    fn victim(&self, class: usize, tenant: &str) -> Option<(usize, String, Shed)> {
        for lower in (class + 1..self.classes.len()).rev() {
            if self.classes[lower].is_empty() {
                continue;
            }
            if let Some((heaviest, _)) = self.classes[lower].heaviest() {
                return Some((lower, heaviest.to_owned(), Shed::Displaced));
            }
        }
        let (heaviest, load) = self.classes[class].heaviest()?;
        let own = self.classes[class].load(tenant) as f64 / self.weight(tenant);
        (heaviest != tenant && load > own).then(|| (class, heaviest.to_owned(), Shed::OverShare))
    }

    /// Why an arrival that could displace nobody is shed.
    fn why_not(&self, class: usize, tenant: &str) -> Shed {
        match self.classes[class].load(tenant) {
            0 => Shed::QueueFull,
            _ => Shed::OverShare,
        }
    }

    fn start(&mut self, tenant: &str) {
        self.in_flight += 1;
        match self.running.get_mut(tenant) {
            Some(count) => *count += 1,
            None => {
                self.running.insert(tenant.to_owned(), 1);
            }
        }
    }

    /// A slot of `tenant` given back without a fill (the caller that was granted it had left).
    pub fn give_back(&mut self, tenant: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(count) = self.running.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(tenant);
            }
        }
    }

    /// Take a queued ticket out (its caller left or its deadline passed); false if it was not
    /// queued (admitted or dropped meanwhile).
    pub fn remove(&mut self, id: u64, priority: usize, tenant: &str) -> bool {
        let index = self.class(priority);
        let removed = self.classes[index].remove(id, tenant).is_some();
        if removed {
            self.queued -= 1;
        }
        removed
    }

    /// A slot of `tenant` came free: the tickets admitted into free slots, and the expired ones
    /// dropped.
    pub fn release(&mut self, tenant: &str, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        self.give_back(tenant);
        self.fill(now)
    }

    /// A new limit (adaptive concurrency); the tickets admitted because of it, and the expired.
    pub fn set_limit(&mut self, limit: usize, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        self.limit = limit;
        self.fill(now)
    }

    /// Admit queued tickets into the free slots, highest class first, each class's tenants by
    /// their turns, passing over tenants at their own cap (the expired are dropped on the way).
    pub fn fill(&mut self, now: f64) -> (Vec<Ticket>, Vec<Ticket>) {
        let (mut admitted, mut expired) = (Vec::new(), Vec::new());
        while self.in_flight < self.limit && self.queued > 0 {
            // A class held back leaves the lower ones held back too: the first classes may go.
            let open = (0..self.classes.len())
                .take_while(|class| self.in_flight < self.slots_for(*class, now))
                .count();
            let (running, tenants, default) = (&self.running, &self.tenants, &self.default_tenant);
            let eligible = |tenant: &str| may_start(running, tenants, default, tenant);
            let popped = self.classes[..open]
                .iter_mut()
                .find_map(|class| class.pop(eligible));
            let Some(ticket) = popped else {
                break; // every queued tenant is at its own cap, or its class at its slots
            };
            self.queued -= 1;
            if ticket.deadline.is_some_and(|d| self.latest_start(d) <= now) {
                expired.push(ticket);
                continue;
            }
            self.start(&ticket.tenant);
            admitted.push(ticket);
        }
        (admitted, expired)
    }

    /// Per class (1 first), each tenant's queued tickets.
    pub fn queues(&self) -> Vec<Vec<(String, usize)>> {
        self.classes
            .iter()
            .map(|class| class.loads().map(|(t, n)| (t.to_owned(), n)).collect())
            .collect()
    }

    /// Requests under way per tenant.
    pub fn running(&self) -> impl Iterator<Item = (&str, usize)> {
        self.running.iter().map(|(t, n)| (t.as_str(), *n))
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
