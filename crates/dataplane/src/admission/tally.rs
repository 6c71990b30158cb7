//! Admission's counts, in all, by tenant and by priority class: what the metrics and
//! `gatewayctl pools` show. Tenants named in the configuration are counted apart from the start,
//! others as they come up to `max_tenants`, the rest together as "other" (random header values
//! cannot mint series or grow the map).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::policy::{Policy, Shed};
use crate::primitives::histogram::Histogram;

/// Where tenants past `max_tenants` are counted.
pub const OTHER_TENANTS: &str = "other";

#[derive(Default, Clone)]
struct Counts {
    admitted: u64,
    /// Of those, admitted after waiting in the queue.
    queued: u64,
    shed: [u64; Shed::ALL.len()],
    expired: u64,
    waits: Histogram,
}

impl Counts {
    fn admitted(&mut self, waited: Option<Duration>) {
        self.admitted += 1;
        if let Some(waited) = waited {
            self.queued += 1;
            self.waits.observe(waited.as_secs_f64());
        }
    }

    fn shed_total(&self) -> u64 {
        self.shed.iter().sum()
    }

    fn json(&self) -> Value {
        let by_reason: serde_json::Map<String, Value> = Shed::ALL
            .iter()
            .zip(self.shed)
            .map(|(reason, n)| (reason.reason().to_owned(), json!(n)))
            .collect();
        json!({
            "admitted": self.admitted,
            "admitted_after_queueing": self.queued,
            "shed": self.shed_total(),
            "shed_by_reason": by_reason,
            "expired": self.expired,
            "queue_wait": self.waits,
            "queue_wait_p99_ms": self.waits.quantile(0.99) * 1000.0,
        })
    }
}

pub struct Tally {
    max_tenants: usize,
    total: Counts,
    tenants: HashMap<String, Counts>,
    classes: Vec<Counts>,
}

impl Tally {
    /// `named`: the tenants counted apart from the start; up to `max_tenants` in all.
    pub fn new<'a>(
        named: impl Iterator<Item = &'a String>,
        max_tenants: usize,
        priority_levels: usize,
    ) -> Tally {
        let tenants: HashMap<String, Counts> = named
            .map(|name| (name.clone(), Counts::default()))
            .collect();
        Tally {
            max_tenants: max_tenants.max(tenants.len()),
            total: Counts::default(),
            tenants,
            classes: vec![Counts::default(); priority_levels.max(1)],
        }
    }

    /// The counts of `tenant` and of its class.
    fn of(&mut self, tenant: &str, priority: usize) -> [&mut Counts; 3] {
        if !self.tenants.contains_key(tenant) {
            let name = match self.tenants.len() < self.max_tenants {
                true => tenant,
                false => OTHER_TENANTS,
            };
            self.tenants.entry(name.to_owned()).or_default();
        }
        let class = priority.clamp(1, self.classes.len()) - 1;
        let tenant = match self.tenants.contains_key(tenant) {
            true => tenant,
            false => OTHER_TENANTS,
        };
        let own = self.tenants.get_mut(tenant).expect("made above");
        [&mut self.total, own, &mut self.classes[class]]
    }

    pub fn admitted(&mut self, tenant: &str, priority: usize, waited: Option<Duration>) {
        for counts in self.of(tenant, priority) {
            counts.admitted(waited);
        }
    }

    pub fn shed(&mut self, tenant: &str, priority: usize, reason: Shed) {
        let index = Shed::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        for counts in self.of(tenant, priority) {
            counts.shed[index] += 1;
        }
    }

    pub fn expired(&mut self, tenant: &str, priority: usize) {
        for counts in self.of(tenant, priority) {
            counts.expired += 1;
        }
    }

    /// The counts with what is queued and under way now, as JSON: the totals at the top, then
    /// `tenants` and `classes` (priority 1 first).
    pub fn json(&self, policy: &Policy) -> Value {
        let queues = policy.queues();
        let mut queued: HashMap<&str, usize> = HashMap::new();
        for (tenant, n) in queues.iter().flatten() {
            *queued.entry(self.label(tenant)).or_default() += n;
        }
        let mut running: HashMap<&str, usize> = HashMap::new();
        for (tenant, n) in policy.running() {
            *running.entry(self.label(tenant)).or_default() += n;
        }
        let mut tenants: Vec<Value> = self
            .tenants
            .iter()
            .map(|(name, counts)| {
                let mut value = counts.json();
                value["tenant"] = json!(name);
                value["queued"] = json!(queued.get(name.as_str()).copied().unwrap_or(0));
                value["in_flight"] = json!(running.get(name.as_str()).copied().unwrap_or(0));
                value
            })
            .collect();
        tenants.sort_by(|a, b| a["tenant"].as_str().cmp(&b["tenant"].as_str()));
        let classes: Vec<Value> = self
            .classes
            .iter()
            .zip(&queues)
            .enumerate()
            .map(|(index, (counts, queue))| {
                let mut value = counts.json();
                value["priority"] = json!(index + 1);
                value["queued"] = json!(queue.iter().map(|(_, n)| n).sum::<usize>());
                value
            })
            .collect();
        let mut value = self.total.json();
        value["queue_wait_p50_ms"] = json!(self.total.waits.quantile(0.5) * 1000.0);
        value["tenants"] = json!(tenants);
        value["classes"] = json!(classes);
        value
    }

    fn label<'a>(&self, tenant: &'a str) -> &'a str {
        match self.tenants.contains_key(tenant) {
            true => tenant,
            false => OTHER_TENANTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_cap_are_counted_as_other() {
        let mut tally = Tally::new(std::iter::empty(), 2, 3);
        for n in 0..1000 {
            tally.shed(&format!("random-{n}"), 2, Shed::QueueFull);
        }
        tally.admitted("random-0", 1, Some(Duration::from_millis(5)));
        assert_eq!(tally.tenants.len(), 3); // two, and "other"
        let value = tally.json(&Policy::new(1, 1, 3));
        assert_eq!(value["shed"], 1000);
        assert_eq!(value["shed_by_reason"]["queue full"], 1000);
        assert_eq!(value["admitted_after_queueing"], 1);
        let other = value["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == OTHER_TENANTS)
            .unwrap();
        assert_eq!(other["shed"], 998);
        assert_eq!(value["classes"][1]["shed"], 1000);
        assert_eq!(value["classes"][0]["admitted"], 1);
    }
}
