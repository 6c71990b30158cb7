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
pub mod fair;
pub mod policy;
#[cfg(test)]
mod properties;
mod tally;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::protocol::error::GatewayError;
use crate::protocol::messages::{ModelInferRequest, ParameterChoice};
use crate::traces::otlp::Value;
use crate::traces::ChildSpan;
use adaptive::GradientLimit;
use policy::{Decision, Policy, Shed, TenantLimits, Ticket};
use tally::Tally;

/// The `admission` section: priority classes and tenants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AdmissionConfig {
    pub priority_levels: usize,
    pub default_priority: usize,
    pub priority_header: String,
    pub tenant_header: String,
    /// Named tenants' weights and caps; any other tenant has `default_tenant`'s.
    pub tenants: HashMap<String, TenantLimits>,
    pub default_tenant: TenantLimits,
    /// Tenants counted apart in the statistics (named ones first); the rest as "other".
    pub max_tenants: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            priority_levels: 3,
            default_priority: 2,
            priority_header: "x-priority".into(),
            tenant_header: "x-tenant".into(),
            tenants: HashMap::new(),
            default_tenant: TenantLimits::default(),
            max_tenants: 100,
        }
    }
}

impl AdmissionConfig {
    /// From the priority header, else the request's `priority` parameter (Triton's: 1 is the
    /// highest, 0 the default); out of range values are clamped to the configured levels.
    pub fn priority(&self, header: Option<&str>, request: &ModelInferRequest) -> usize {
        let value: i64 = match header {
            Some(given) => given.trim().parse().unwrap_or(0),
            None => match request
                .parameters
                .get("priority")
                .and_then(|p| p.choice.as_ref())
            {
                Some(ParameterChoice::Int64(v)) => *v,
                Some(ParameterChoice::Uint64(v)) => i64::try_from(*v).unwrap_or(i64::MAX),
                Some(ParameterChoice::Double(v)) => *v as i64,
                Some(ParameterChoice::String(v)) => v.trim().parse().unwrap_or(0),
                _ => 0,
            },
        };
        if value <= 0 {
            self.default_priority
        } else {
            usize::try_from(value).map_or(self.priority_levels, |v| v.min(self.priority_levels))
        }
    }
}

/// A pool's limits (`pools.*.max_inflight`, `max_queue`, `adaptive`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdaptiveConfig {
    pub min_limit: usize,
    pub max_limit: usize,
    pub window: usize,
}

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

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

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
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_slot_sheds_when_full_and_passes_on_a_leavers_slot() {
        let admission = Arc::new(Admission::new("p", 1, 1, None, &AdmissionConfig::default()));
        let (first, _) = admission.slot(2, "", None).await.unwrap();
        let queued = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.slot(2, "", None).await.map(|(_, w)| w) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let shed = admission.slot(2, "", None).await.err().unwrap();
        assert!(
            matches!(shed, GatewayError::Overloaded { retry_after_ms, .. } if retry_after_ms >= 1)
        );
        drop(first);
        assert!(queued.await.unwrap().unwrap() >= Duration::from_millis(15));
        // A caller that leaves the queue is taken out; the next one gets the slot.
        let (held, _) = admission.slot(2, "", None).await.unwrap();
        let leaver = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.slot(2, "", None).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leaver.abort();
        let _ = leaver.await;
        assert_eq!(admission.cancelled.load(Ordering::Relaxed), 1);
        drop(held);
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        assert!(admission.slot(2, "", deadline).await.is_ok());
        let stats = admission.stats();
        assert_eq!(
            (stats["in_flight"].as_u64(), stats["queued"].as_u64()),
            (Some(0), Some(0))
        );
    }

    #[tokio::test]
    async fn a_quiet_tenant_pushes_the_floods_newest_out_of_a_full_queue() {
        let admission = Arc::new(Admission::new("p", 1, 2, None, &AdmissionConfig::default()));
        let (held, _) = admission.slot(2, "flood", None).await.unwrap();
        let wait = |tenant: &'static str| {
            let admission = admission.clone();
            tokio::spawn(async move { admission.slot(2, tenant, None).await.map(|_| ()) })
        };
        let (first, newest) = (wait("flood"), wait("flood"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quiet = wait("quiet");
        let pushed_out = newest.await.unwrap().err().unwrap();
        assert!(
            matches!(&pushed_out, GatewayError::Overloaded { message, .. } if message.contains("tenant over its share")),
            "{pushed_out:?}"
        );
        drop(held);
        first.await.unwrap().unwrap();
        quiet.await.unwrap().unwrap();
        let stats = admission.stats();
        assert_eq!(stats["shed_by_reason"]["tenant over its share"], 1);
        let flood = &stats["tenants"].as_array().unwrap()[0];
        assert_eq!(
            (flood["tenant"].as_str(), flood["shed"].as_u64()),
            (Some("flood"), Some(1))
        );
    }

    #[tokio::test]
    async fn a_queued_request_leaves_when_it_can_no_longer_be_served_in_time() {
        let admission = Arc::new(Admission::new(
            "p",
            1,
            10,
            None,
            &AdmissionConfig::default(),
        ));
        // Requests take 100 ms: one waiting behind the one served expects 200 ms, so with 300 ms
        // to its deadline it is queued, and it leaves once 100 ms (and a margin) are all that is
        // left, well before its deadline (a wide margin: tests share the machine's cores).
        locked(&admission.inner).policy.service_time_s = 0.1;
        let held = admission.slot(2, "", None).await.unwrap();
        let started = Instant::now();
        let error = admission
            .slot(2, "", Some(started + Duration::from_millis(300)))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, GatewayError::DeadlineExceeded(ref m) if m.contains("ms in the queue")),
            "{error:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(280),
            "{waited:?}"
        );
        drop(held);
    }

    #[test]
    fn priorities_come_from_the_header_then_the_parameter() {
        let config = AdmissionConfig::default();
        let mut request = ModelInferRequest::default();
        assert_eq!(config.priority(None, &request), 2);
        assert_eq!(config.priority(Some("1"), &request), 1);
        assert_eq!(config.priority(Some("9"), &request), 3);
        assert_eq!(config.priority(Some("x"), &request), 2);
        request.parameters.insert(
            "priority".into(),
            crate::protocol::messages::InferParameter {
                choice: Some(ParameterChoice::Uint64(1)),
            },
        );
        assert_eq!(config.priority(None, &request), 1);
    }
}
