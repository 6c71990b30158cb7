//! The queue discipline's guarantees, over random arrivals (proptest): shares follow the
//! weights, a tenant under its fair share is never shed while another is over its own, a higher
//! class never waits behind a lower one, and what is held stays bounded by what is queued and
//! under way whatever tenant names arrive.

use std::collections::HashMap;

use proptest::prelude::*;

use super::policy::{Decision, Policy, TenantLimits, Ticket};

fn ticket(id: u64, priority: usize, tenant: &str) -> Ticket {
    Ticket {
        id,
        priority,
        tenant: tenant.into(),
        deadline: None,
    }
}

/// The oldest request under way (its tenant first in `running`) ends: the tickets admitted into
/// its slot, their tenants now under way too.
fn release_oldest(policy: &mut Policy, running: &mut Vec<String>) -> Vec<Ticket> {
    let tenant = running.remove(0);
    let (admitted, _) = policy.release(&tenant, 0.0);
    running.extend(admitted.iter().map(|t| t.tenant.clone()));
    admitted
}

fn weighted(weights: &[u32]) -> HashMap<String, TenantLimits> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let limits = TenantLimits {
                weight: f64::from(*w),
                ..TenantLimits::default()
            };
            (format!("t{i}"), limits)
        })
        .collect()
}

proptest! {
    #[test]
    fn backlogged_tenants_are_served_in_proportion_to_their_weights(
        weights in prop::collection::vec(1u32..=4, 2..=4),
        order in prop::collection::vec(0usize..4, 300),
    ) {
        let tenants = weighted(&weights);
        let mut policy = Policy::new(1, 10_000, 1).with_tenants(tenants, TenantLimits::default());
        assert_eq!(policy.offer(ticket(0, 1, "seed"), 0.0).decision, Decision::Admit);
        // Every tenant backlogged (300 tickets each), arriving interleaved in a random order.
        let mut id = 1;
        for rotation in &order {
            for t in 0..weights.len() {
                let tenant = format!("t{}", (t + rotation) % weights.len());
                policy.offer(ticket(id, 1, &tenant), 0.0);
                id += 1;
            }
        }
        let total: u32 = weights.iter().sum();
        let served_count = 100 * total as usize / weights.len().max(1);
        let mut served: HashMap<String, usize> = HashMap::new();
        let mut running = "seed".to_owned();
        for _ in 0..served_count {
            let (admitted, _) = policy.release(&running, 0.0);
            running = admitted[0].tenant.clone();
            *served.entry(running.clone()).or_default() += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let expected = served_count as f64 * f64::from(*w) / f64::from(total);
            let got = served.get(&format!("t{i}")).copied().unwrap_or(0) as f64;
            prop_assert!((got - expected).abs() <= 2.0 + expected * 0.05,
                "tenant t{i} weight {w}: served {got}, expected {expected:.1} ({served:?})");
        }
    }

    #[test]
    fn a_tenant_under_its_share_is_never_shed_while_another_is_over(
        weights in prop::collection::vec(1u32..=3, 2..=4),
        steps in prop::collection::vec((0usize..4, any::<bool>()), 1..400),
    ) {
        let tenants = weighted(&weights);
        let max_queue = 8;
        let mut policy = Policy::new(1, max_queue, 1).with_tenants(tenants, TenantLimits::default());
        let mut running: Vec<String> = Vec::new();
        for (id, (pick, release)) in steps.into_iter().enumerate() {
            if release && !running.is_empty() {
                release_oldest(&mut policy, &mut running);
                continue;
            }
            let tenant = format!("t{}", pick % weights.len());
            let loads: HashMap<String, usize> = policy.queues()[0].iter().cloned().collect();
            let offered = policy.offer(ticket(id as u64, 1, &tenant), 0.0);
            let shed = match (&offered.decision, &offered.evicted) {
                (Decision::Admit, _) => { running.push(tenant.clone()); None }
                (Decision::Shed(_), _) => Some(tenant.clone()),
                (_, Some((out, _))) => Some(out.tenant.clone()),
                _ => None,
            };
            let Some(shed) = shed else { continue };
            // Fair shares of the queue among the tenants present, the arrival's included.
            let mut present: Vec<&String> = loads.keys().collect();
            if !loads.contains_key(&tenant) { present.push(&tenant); }
            let weight = |t: &str| f64::from(weights[t[1..].parse::<usize>().unwrap()]);
            let sum: f64 = present.iter().map(|t| weight(t)).sum();
            let fair = |t: &str| max_queue as f64 * weight(t) / sum;
            let load = |t: &str| loads.get(t).copied().unwrap_or(0) as f64;
            if load(&shed) < fair(&shed) {
                for other in &present {
                    prop_assert!(load(other) <= fair(other) + 1e-9,
                        "{shed} shed at {} (fair {:.2}) while {other} holds {} (fair {:.2})",
                        load(&shed), fair(&shed), load(other), fair(other));
                }
            }
        }
    }

    #[test]
    fn a_higher_class_never_waits_behind_a_lower_one(
        steps in prop::collection::vec((1usize..=3, 0usize..3, any::<bool>()), 1..400),
    ) {
        let mut policy = Policy::new(2, 6, 3);
        let mut running: Vec<String> = Vec::new();
        for (id, (priority, pick, release)) in steps.into_iter().enumerate() {
            if release && !running.is_empty() {
                for t in release_oldest(&mut policy, &mut running) {
                    let queues = policy.queues();
                    let higher_waiting: usize = queues[..t.priority - 1]
                        .iter().flatten().map(|(_, n)| n).sum();
                    prop_assert_eq!(higher_waiting, 0, "class {} admitted before a higher one", t.priority);
                }
                continue;
            }
            let tenant = format!("t{pick}");
            if policy.offer(ticket(id as u64, priority, &tenant), 0.0).decision == Decision::Admit {
                running.push(tenant);
            }
        }
    }

    #[test]
    fn what_is_held_is_bounded_by_what_is_queued_and_under_way(
        steps in prop::collection::vec((any::<u32>(), 1usize..=3, any::<bool>()), 1..600),
    ) {
        let mut policy = Policy::new(3, 20, 3);
        let mut running: Vec<String> = Vec::new();
        for (id, (name, priority, release)) in steps.into_iter().enumerate() {
            if release && !running.is_empty() {
                release_oldest(&mut policy, &mut running);
            } else {
                let tenant = format!("random-{name}");
                if policy.offer(ticket(id as u64, priority, &tenant), 0.0).decision == Decision::Admit {
                    running.push(tenant);
                }
            }
            let lanes: usize = policy.queues().iter().map(Vec::len).sum();
            prop_assert!(lanes <= policy.queued && policy.queued <= 20);
            prop_assert!(policy.running().count() <= policy.in_flight);
            prop_assert_eq!(policy.in_flight, running.len());
        }
    }
}
