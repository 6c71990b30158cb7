//! Admission control on the request path: the async side of `policy`.
//!
//! A ModelInfer takes a slot of its pool before going upstream. With the pool at its limit it
//! waits in the queue (by priority, tenants sharing each class by weight) until a slot is free,
//! its deadline passes (DEADLINE_EXCEEDED, never reaching Triton), the caller leaves (taken out
//! of the queue), or a request with a better claim pushes it out (RESOURCE_EXHAUSTED). A full
//! queue sheds at once with RESOURCE_EXHAUSTED, the reason and a retry-after hint sized from the
//! tenant's own backlog: a shed answer takes one lock and no wait. The slot is held until the
//! answer has been sent.

pub mod adaptive;
mod config;
pub mod fair;
pub mod policy;
#[cfg(test)]
mod properties;
mod tally;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::protocol::error::GatewayError;
use crate::traces::otlp::Value;
use crate::traces::ChildSpan;
use adaptive::GradientLimit;
pub use config::{AdaptiveConfig, AdmissionConfig};
use policy::{Decision, Policy, Shed, Ticket};
use tally::Tally;

/// What a queued caller is told: go (a slot is its), or it was pushed out of the queue. A
/// caller whose sender is dropped untold was dropped for its deadline.
enum Verdict {
    Granted,
    Shed(Shed, u64),
}

struct Inner {
    policy: Policy,
    waiters: HashMap<u64, oneshot::Sender<Verdict>>,
    adaptive: Option<GradientLimit>,
    /// The counts by tenant and by class.
    tally: Tally,
}

pub struct Admission {
    pub pool: String,
    inner: Mutex<Inner>,
    epoch: Instant,
    next_id: AtomicU64,
    /// Callers that left the queue.
    pub cancelled: AtomicU64,
}

use crate::primitives::locked;

/// A slot of the pool: given back (and passed to the next in the queue) when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
    started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let served = self.started.elapsed();
        self.admission.finished(&self.tenant, Some(served));
    }
}

/// A ticket in the queue; dropped before it was decided (the caller left), it is taken out,
/// or the slot it was just granted is passed on.
struct Waiting {
    admission: Arc<Admission>,
    ticket: Ticket,
    verdict: oneshot::Receiver<Verdict>,
    decided: bool,
}

impl Waiting {
    /// The ticket leaves undecided: taken out of the queue (true), or, granted in the same
    /// instant, its slot is passed on (it is not used).
    fn withdraw(&mut self) -> bool {
        self.decided = true;
        let admission = &self.admission;
        let mut inner = locked(&admission.inner);
        let ticket = &self.ticket;
        if inner
            .policy
            .remove(ticket.id, ticket.priority, &ticket.tenant)
        {
            inner.waiters.remove(&ticket.id);
            return true;
        }
        if let Ok(Verdict::Granted) = self.verdict.try_recv() {
            drop(inner);
            admission.finished(&ticket.tenant, None);
        }
        false
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.decided && self.withdraw() {
            self.admission.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Admission {
    pub fn new(
        pool: &str,
        max_inflight: usize,
        max_queue: usize,
        adaptive: Option<&AdaptiveConfig>,
        config: &AdmissionConfig,
    ) -> Admission {
        let limit = match adaptive {
            Some(a) if max_inflight == 0 => a.min_limit,
            _ => max_inflight,
        };
        let adaptive =
            adaptive.map(|a| GradientLimit::new(a.min_limit, a.max_limit, a.window, limit));
        Admission {
            pool: pool.to_owned(),
            inner: Mutex::new(Inner {
                policy: Policy::new(limit, max_queue, config.priority_levels)
                    .with_tenants(config.tenants.clone(), config.default_tenant.clone()),
                waiters: HashMap::new(),
                adaptive,
                tally: Tally::new(
                    config.tenants.keys(),
                    config.max_tenants,
                    config.priority_levels,
                ),
            }),
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            cancelled: AtomicU64::new(0),
        }
    }

    fn clock(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// A slot, once one is free; the time waited for it. Errors: shed (the queue full, or
    /// pushed out of it), or the deadline cannot be met.
    pub async fn slot(
        self: &Arc<Self>,
        priority: usize,
        tenant: &str,
        deadline: Option<Instant>,
    ) -> Result<(Permit, Duration), GatewayError> {
        let arrived = Instant::now();
        let ticket = Ticket {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            priority,
            tenant: tenant.to_owned(),
            deadline: deadline.map(|d| self.clock(d)),
        };
        let (sender, verdict) = oneshot::channel();
        let latest_start = {
            let mut inner = locked(&self.inner);
            let offered = inner.policy.offer(ticket.clone(), self.clock(arrived));
            if let Some((out, reason)) = offered.evicted {
                inner.tally.shed(&out.tenant, out.priority, reason);
                let retry_after_ms = retry_after_ms(&inner.policy, &out.tenant);
                if let Some(waiter) = inner.waiters.remove(&out.id) {
                    let _ = waiter.send(Verdict::Shed(reason, retry_after_ms));
                }
            }
            match offered.decision {
                Decision::Queued => {
                    inner.waiters.insert(ticket.id, sender);
                }
                Decision::Shed(reason) => {
                    inner.tally.shed(tenant, priority, reason);
                    let retry_after_ms = retry_after_ms(&inner.policy, tenant);
                    return Err(self.shed(&inner.policy, tenant, reason, retry_after_ms));
                }
                Decision::RejectDeadline => {
                    inner.tally.expired(tenant, priority);
                    let policy = &inner.policy;
                    let left_ms = deadline.map_or(0.0, |d| {
                        d.saturating_duration_since(arrived).as_secs_f64() * 1000.0
                    });
                    let wait_ms = policy.estimated_wait_s(policy.queued) * 1000.0;
                    return Err(GatewayError::DeadlineExceeded(format!(
                        "pool '{}' could not serve the request before its deadline ({left_ms:.0} ms left, ~{wait_ms:.0} ms expected in the queue)",
                        self.pool
                    )));
                }
                Decision::Admit => {
                    inner.tally.admitted(tenant, priority, None);
                    drop(inner);
                    return Ok((self.permit(tenant), Duration::ZERO));
                }
            }
            ticket.deadline.map(|d| inner.policy.latest_start(d))
        };
        let mut span = ChildSpan::start("queue", crate::traces::INTERNAL);
        if let Some(span) = &mut span {
            span.set("gateway.pool", Value::String(self.pool.clone()));
            span.set("gateway.priority", Value::Int(priority as i64));
            span.set("gateway.tenant", Value::String(tenant.to_owned()));
        }
        let mut waiting = Waiting {
            admission: self.clone(),
            ticket,
            verdict,
            decided: false,
        };
        let told = match latest_start {
            None => Some((&mut waiting.verdict).await.ok()),
            Some(latest) => {
                let until = self.epoch + Duration::from_secs_f64(latest.max(0.0));
                tokio::time::timeout_at(until.into(), &mut waiting.verdict)
                    .await
                    .ok()
                    .map(Result::ok)
            }
        };
        let verdict = match told {
            Some(verdict) => verdict,
            None => {
                // Out of time (a slot granted in the same instant is given back: too little
                // time is left to use it).
                waiting.withdraw();
                None
            }
        };
        waiting.decided = true;
        let waited = arrived.elapsed();
        match verdict {
            Some(Verdict::Granted) => {
                drop(span);
                let mut inner = locked(&self.inner);
                inner.tally.admitted(tenant, priority, Some(waited));
                drop(inner);
                Ok((self.permit(tenant), waited))
            }
            Some(Verdict::Shed(reason, retry_after_ms)) => {
                if let Some(span) = &mut span {
                    span.fail(reason.reason());
                }
                let inner = locked(&self.inner);
                Err(self.shed(&inner.policy, tenant, reason, retry_after_ms))
            }
            None => {
                if let Some(span) = &mut span {
                    span.fail("the deadline passed in the queue");
                }
                drop(span);
                let mut inner = locked(&self.inner);
                inner.tally.expired(tenant, priority);
                let service_ms = inner.policy.service_time_s * 1000.0;
                Err(GatewayError::DeadlineExceeded(format!(
                    "pool '{}': after {:.0} ms in the queue, too little time was left before the deadline to be served (~{service_ms:.0} ms per request)",
                    self.pool,
                    waited.as_secs_f64() * 1000.0
                )))
            }
        }
    }

    /// RESOURCE_EXHAUSTED for a request of `tenant` shed for `reason`.
    fn shed(
        &self,
        policy: &Policy,
        tenant: &str,
        reason: Shed,
        retry_after_ms: u64,
    ) -> GatewayError {
        let who = match tenant {
            "" => String::new(),
            tenant => format!(
                ", tenant '{tenant}' has {} queued",
                policy.tenant_queued(tenant)
            ),
        };
        GatewayError::Overloaded {
            message: format!(
                "pool '{}' is at capacity ({} in flight, {} queued, max_queue {}{who}): shed, {}; retry after ~{retry_after_ms} ms",
                self.pool,
                policy.in_flight,
                policy.queued,
                policy.max_queue,
                reason.reason(),
            ),
            retry_after_ms,
        }
    }

    fn permit(self: &Arc<Self>, tenant: &str) -> Permit {
        Permit {
            admission: self.clone(),
            tenant: tenant.to_owned(),
            started: Instant::now(),
        }
    }

    /// A slot of `tenant` is given back (`served`: how long it was held, for the estimates):
    /// the next tickets are granted, the expired ones told.
    fn finished(&self, tenant: &str, served: Option<Duration>) {
        let now = self.clock(Instant::now());
        let mut inner = locked(&self.inner);
        if let Some(served) = served {
            inner.policy.observe_service_time(served.as_secs_f64());
        }
        let mut batch = inner.policy.release(tenant, now);
        let limit = match (&mut inner.adaptive, served) {
            (Some(adaptive), Some(served)) => adaptive.sample(served.as_secs_f64()),
            _ => None,
        };
        if let Some(limit) = limit {
            let (more, late) = inner.policy.set_limit(limit, now);
            batch.0.extend(more);
            batch.1.extend(late);
        }
        loop {
            let (admitted, expired) = batch;
            for ticket in expired {
                inner.waiters.remove(&ticket.id); // its waiter hears the sender go
            }
            let mut freed = false;
            for ticket in admitted {
                let delivered = inner
                    .waiters
                    .remove(&ticket.id)
                    .is_some_and(|sender| sender.send(Verdict::Granted).is_ok());
                if !delivered {
                    // Its caller already left: the slot goes to the next.
                    inner.policy.give_back(&ticket.tenant);
                    freed = true;
                }
            }
            if !freed {
                return;
            }
            batch = inner.policy.fill(now);
        }
    }

    /// The admin API's PoolStats admission fields, as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let inner = locked(&self.inner);
        let p = &inner.policy;
        let mut stats = inner.tally.json(p);
        let fields = serde_json::json!({
            "limit": p.limit,
            "in_flight": p.in_flight,
            "queued": p.queued,
            "max_queue": p.max_queue,
            "cancelled": self.cancelled.load(Ordering::Relaxed),
        });
        if let (Some(stats), serde_json::Value::Object(fields)) = (stats.as_object_mut(), fields) {
            stats.extend(fields);
        }
        stats
    }
}

fn retry_after_ms(policy: &Policy, tenant: &str) -> u64 {
    (policy.retry_after_s(tenant) * 1000.0).round().max(1.0) as u64
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
