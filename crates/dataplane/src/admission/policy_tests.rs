//! The policy's decisions, case by case (the guarantees over random arrivals: `properties`).
use super::*;

fn ticket(id: u64, priority: usize, tenant: &str, deadline: Option<f64>) -> Ticket {
    Ticket {
        id,
        priority,
        tenant: tenant.into(),
        deadline,
    }
}

fn decide(policy: &mut Policy, id: u64, priority: usize, tenant: &str) -> Decision {
    policy
        .offer(ticket(id, priority, tenant, None), 0.0)
        .decision
}

#[test]
fn retry_after_is_never_below_one_service_time() {
    let mut policy = Policy::new(1, 0, 1);
    assert_eq!(policy.retry_after_s(""), RETRY_AFTER_FLOOR_S); // cold: no service time yet
    policy.observe_service_time(0.2);
    assert!((policy.retry_after_s("") - 0.2).abs() < 1e-9);
    policy.observe_service_time(0.0001); // fast calls pull the EWMA down, not below it
    assert!(policy.retry_after_s("") >= policy.service_time_s);
}

#[test]
fn retry_after_grows_with_the_tenants_own_backlog() {
    let mut policy = Policy::new(1, 100, 1);
    policy.observe_service_time(0.01);
    decide(&mut policy, 0, 1, "a");
    for id in 1..=20 {
        decide(&mut policy, id, 1, "a");
    }
    decide(&mut policy, 100, 1, "b");
    // a: 21 ahead at half the pool; b: 2 at half.
    assert!((policy.retry_after_s("a") - 0.42).abs() < 1e-9);
    assert!((policy.retry_after_s("b") - 0.04).abs() < 1e-9);
}

#[test]
fn admits_to_the_limit_then_queues_then_sheds() {
    let mut policy = Policy::new(1, 2, 3);
    assert_eq!(decide(&mut policy, 1, 2, ""), Decision::Admit);
    assert_eq!(decide(&mut policy, 2, 2, ""), Decision::Queued);
    assert_eq!(decide(&mut policy, 3, 2, ""), Decision::Queued);
    assert_eq!(
        decide(&mut policy, 4, 2, ""),
        Decision::Shed(Shed::OverShare)
    );
    let (admitted, expired) = policy.release("", 0.1);
    assert_eq!((admitted[0].id, expired.len()), (2, 0));
    assert_eq!((policy.in_flight, policy.queued), (1, 1));
}

#[test]
fn higher_priority_first_and_tenants_take_turns() {
    let mut policy = Policy::new(1, 100, 3);
    decide(&mut policy, 0, 2, "");
    for id in 1..=3 {
        decide(&mut policy, id, 3, "flood");
    }
    decide(&mut policy, 10, 3, "quiet");
    decide(&mut policy, 20, 1, "vip");
    let order: Vec<u64> = (0..5).map(|_| policy.release("", 0.0).0[0].id).collect();
    assert_eq!(order[0], 20);
    assert!(order[1..3].contains(&10), "{order:?}");
}

#[test]
fn a_full_queue_sheds_the_tenant_that_holds_the_most_of_it() {
    let mut policy = Policy::new(1, 4, 1);
    decide(&mut policy, 0, 1, "flood");
    for id in 1..=4 {
        assert_eq!(decide(&mut policy, id, 1, "flood"), Decision::Queued);
    }
    // The flood's own arrival bounces; a quiet tenant's takes the flood's newest place.
    assert_eq!(
        decide(&mut policy, 5, 1, "flood"),
        Decision::Shed(Shed::OverShare)
    );
    let offered = policy.offer(ticket(10, 1, "quiet", None), 0.0);
    assert_eq!(offered.decision, Decision::Queued);
    let (evicted, reason) = offered.evicted.unwrap();
    assert_eq!((evicted.id, reason), (4, Shed::OverShare));
    // Two each: neither is over the other, so the next arrival bounces.
    decide(&mut policy, 11, 1, "quiet");
    assert_eq!(
        decide(&mut policy, 12, 1, "quiet"),
        Decision::Shed(Shed::OverShare)
    );
    assert_eq!(policy.queued, 4);
}

#[test]
fn weights_set_the_shares_of_the_queue() {
    let tenants = HashMap::from([(
        "gold".to_owned(),
        TenantLimits {
            weight: 3.0,
            ..TenantLimits::default()
        },
    )]);
    let mut policy = Policy::new(1, 4, 1).with_tenants(tenants, TenantLimits::default());
    decide(&mut policy, 0, 1, "gold");
    decide(&mut policy, 1, 1, "free");
    for id in 2..=4 {
        decide(&mut policy, id, 1, "gold");
    }
    // gold holds 3 of 4 at weight 3 (1.0 each), free 1 at weight 1: a free arrival bounces.
    assert_eq!(
        decide(&mut policy, 5, 1, "free"),
        Decision::Shed(Shed::OverShare)
    );
}

#[test]
fn a_higher_class_displaces_a_lower_one_and_never_the_reverse() {
    let mut policy = Policy::new(1, 2, 3);
    decide(&mut policy, 0, 3, "low");
    decide(&mut policy, 1, 3, "low");
    decide(&mut policy, 2, 3, "low");
    let offered = policy.offer(ticket(10, 1, "high", None), 0.0);
    assert_eq!(
        offered.evicted.map(|(t, r)| (t.id, r)),
        Some((2, Shed::Displaced))
    );
    decide(&mut policy, 11, 1, "high");
    assert_eq!(
        decide(&mut policy, 3, 3, "low"),
        Decision::Shed(Shed::QueueFull)
    );
    let (admitted, _) = policy.release("low", 0.0);
    assert_eq!(admitted[0].id, 10);
}

#[test]
fn lower_classes_leave_a_slot_free_while_a_higher_one_is_active() {
    let mut policy = Policy::new(2, 10, 3);
    let at = |policy: &mut Policy, id, priority, now| {
        policy.offer(ticket(id, priority, "", None), now).decision
    };
    assert_eq!(at(&mut policy, 1, 3, 0.0), Decision::Admit);
    assert_eq!(at(&mut policy, 2, 3, 0.0), Decision::Admit); // no higher class seen: both
    assert_eq!(at(&mut policy, 3, 1, 0.1), Decision::Queued);
    assert_eq!(policy.release("", 0.2).0[0].id, 3);
    // The highest class is active: the lowest may fill one slot of two, not both.
    assert_eq!(at(&mut policy, 4, 3, 0.3), Decision::Queued);
    policy.release("", 0.4); // the highest's request ends; ticket 2 still under way
    assert_eq!(policy.in_flight, 1);
    assert_eq!(policy.release("", 0.5).0[0].id, 4);
    // A second after the highest class was last seen, the lowest has both slots again.
    assert_eq!(at(&mut policy, 5, 3, 1.2), Decision::Admit);
}

#[test]
fn a_tenants_own_caps_hold() {
    let capped = TenantLimits {
        weight: 1.0,
        max_queue: Some(1),
        max_inflight: Some(1),
    };
    let mut policy = Policy::new(4, 10, 1).with_tenants(HashMap::new(), capped);
    assert_eq!(decide(&mut policy, 1, 1, "a"), Decision::Admit);
    assert_eq!(decide(&mut policy, 2, 1, "a"), Decision::Queued); // at its max_inflight
    assert_eq!(
        decide(&mut policy, 3, 1, "a"),
        Decision::Shed(Shed::TenantQueueFull)
    );
    assert_eq!(decide(&mut policy, 4, 1, "b"), Decision::Admit); // slots are free for b
    let (admitted, _) = policy.release("a", 0.0);
    assert_eq!(admitted[0].id, 2);
}

#[test]
fn deadlines_refuse_what_cannot_be_served_in_time() {
    let mut policy = Policy::new(1, 10, 1);
    policy.observe_service_time(0.1);
    let offer = |policy: &mut Policy, id, deadline| {
        policy
            .offer(ticket(id, 1, "", Some(deadline)), 0.0)
            .decision
    };
    assert_eq!(offer(&mut policy, 1, 1.0), Decision::Admit);
    // One ahead of it at most: ~0.1 s of wait; a deadline 50 ms away cannot make it.
    assert_eq!(offer(&mut policy, 2, 0.05), Decision::RejectDeadline);
    assert_eq!(offer(&mut policy, 3, 0.5), Decision::Queued);
    assert_eq!(offer(&mut policy, 4, 0.0), Decision::RejectDeadline);
    // By 0.45 s, ticket 3 can no longer finish (0.1 s of service) by 0.5 s: dropped.
    let (admitted, expired) = policy.release("", 0.45);
    assert_eq!((admitted.len(), expired[0].id), (0, 3));
    assert!(!policy.remove(9, 1, "") && policy.queued == 0);
}

#[test]
fn a_caller_that_leaves_is_taken_out() {
    let mut policy = Policy::new(1, 10, 1);
    decide(&mut policy, 1, 1, "a");
    decide(&mut policy, 2, 1, "a");
    decide(&mut policy, 3, 1, "b");
    assert!(policy.remove(2, 1, "a"));
    assert!(!policy.remove(2, 1, "a"));
    assert_eq!(policy.release("a", 0.0).0[0].id, 3);
    let (admitted, _) = policy.set_limit(4, 0.0);
    assert!(admitted.is_empty() && policy.queued == 0);
}
