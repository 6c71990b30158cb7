//! Micro-batching on the ModelInfer path: the async shell around `merge` and `queue`.
//!
//! One `ModelBatcher` per (pool, upstream model, version, merge key). A merged call is a task of
//! its own, so a caller that leaves (cancelled, deadline) does not cancel the call the others
//! wait on. Every caller was validated on its own before it got here, so one bad input never
//! fails a batch. A caller alone goes upstream with its own bytes.

pub mod merge;
pub mod queue;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::protocol::error::GatewayError;
use crate::protocol::messages::ModelInferRequest;
use crate::traces::{self, Trace};
use crate::upstream::{CallInfo, ModelKey, Pool};
use merge::{merge, merge_key, rows, split};
use queue::{BatchQueue, Pending};

/// Trailing metadata: how many callers shared the upstream call.
pub const BATCH_KEY: &str = "x-batch-size";

/// A route's batching: rows per merged call (the model's own cap applies too) and merged calls
/// under way at once per model.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_batch_size: u64,
    pub max_inflight: usize,
}

/// The default settings and each configured route's own (None: not batched), as
/// `gateway.batch_policies` decides them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchPolicies {
    pub default: Option<BatchSettings>,
    #[serde(default)]
    pub routes: HashMap<String, Option<BatchSettings>>,
}

#[derive(Default)]
pub struct BatchStats {
    /// Upstream calls made by micro-batching.
    pub calls: AtomicU64,
    /// Of those, calls that carried several callers.
    pub merged_calls: AtomicU64,
    pub requests: AtomicU64,
    /// Callers whose deadline passed while they waited for a batch.
    pub expired: AtomicU64,
    /// Callers per call → calls.
    pub sizes: Mutex<BTreeMap<usize, u64>>,
}

pub type Answer = Result<(Bytes, CallInfo), GatewayError>;

struct Caller {
    /// Its trace: the merged call is traced under the first caller's.
    trace: Option<Arc<Trace>>,
    request: ModelInferRequest,
    payload: Bytes,
    answer: oneshot::Sender<Answer>,
}

use crate::primitives::locked;

pub struct ModelBatcher {
    pool: Arc<Pool>,
    model: ModelKey,
    queue: Mutex<BatchQueue<Caller>>,
    stats: Arc<BatchStats>,
}

/// Ends a merged call's turn however it ends (a panic included): the next batch may go.
struct Turn(Arc<ModelBatcher>);

impl Drop for Turn {
    fn drop(&mut self) {
        locked(&self.0.queue).done();
        self.0.pump();
    }
}

impl ModelBatcher {
    async fn submit(
        self: &Arc<Self>,
        request: ModelInferRequest,
        payload: Bytes,
        size: u64,
        deadline: Option<Instant>,
    ) -> Answer {
        let (sender, answer) = oneshot::channel();
        let idle = {
            let mut queue = locked(&self.queue);
            queue.add(
                Caller {
                    trace: traces::current(),
                    request,
                    payload,
                    answer: sender,
                },
                size,
                deadline,
            );
            queue.inflight == 0
        };
        if idle {
            // Callers whose requests arrived in the same instant leave together: no timer.
            tokio::task::yield_now().await;
        }
        self.pump();
        answer.await.unwrap_or_else(|_| {
            Err(GatewayError::Internal(
                "a batched call ended without an answer".into(),
            ))
        })
    }

    fn pump(self: &Arc<Self>) {
        loop {
            let (batch, expired) = {
                let mut queue = locked(&self.queue);
                if !queue.ready() {
                    return;
                }
                queue.take(Instant::now(), |caller| !caller.answer.is_closed())
            };
            for late in expired {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                let _ = late.item.answer.send(Err(GatewayError::DeadlineExceeded(
                    "the deadline passed while waiting for a batch".into(),
                )));
            }
            if batch.is_empty() {
                return;
            }
            let turn = Turn(self.clone());
            let trace = batch[0].item.trace.clone();
            tokio::spawn(traces::within(trace, async move {
                turn.0.clone().send(batch, turn).await
            }));
        }
    }

    async fn send(self: Arc<Self>, batch: Vec<Pending<Caller>>, _turn: Turn) {
        // The call lasts as long as the most patient caller allows; each caller's own RPC still
        // ends at its own deadline, so a hurried caller never shortens the call for the rest.
        let deadline = batch
            .iter()
            .map(|p| p.deadline)
            .collect::<Option<Vec<_>>>()
            .and_then(|d| d.into_iter().max());
        let callers = batch.len();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(callers as u64, Ordering::Relaxed);
        *locked(&self.stats.sizes).entry(callers).or_default() += 1;
        let started = Instant::now();
        let answers = if callers == 1 {
            let payload = batch[0].item.payload.clone();
            self.pool
                .call_for("ModelInfer", payload.into(), deadline, Some(&self.model))
                .await
                .map(|(answer, attempts)| (vec![answer], attempts))
        } else {
            self.stats.merged_calls.fetch_add(1, Ordering::Relaxed);
            self.merged(&batch, deadline).await
        };
        match answers {
            Ok((answers, attempts)) => {
                let info = CallInfo {
                    upstream: started.elapsed(),
                    retries: attempts.saturating_sub(1),
                    shared: Some(callers),
                };
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.item.answer.send(Ok((answer, info)));
                }
            }
            Err(error) => {
                // Every caller of the batch gets the failure; none is left waiting.
                for pending in batch {
                    let _ = pending.item.answer.send(Err(error.clone()));
                }
            }
        }
    }

    async fn merged(
        &self,
        batch: &[Pending<Caller>],
        deadline: Option<Instant>,
    ) -> Result<(Vec<Bytes>, u32), GatewayError> {
        let requests: Vec<&ModelInferRequest> = batch.iter().map(|p| &p.item.request).collect();
        let payload = merge(&requests, &self.model.0, &self.model.1);
        let (answer, attempts) = self
            .pool
            .call_for("ModelInfer", payload.into(), deadline, Some(&self.model))
            .await?;
        let sizes: Vec<u64> = batch.iter().map(|p| p.rows).collect();
        let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        let parts = split(&answer, &sizes, &ids).map_err(|e| {
            GatewayError::Internal(format!(
                "cannot split the batched answer of model '{}': {}",
                self.model.0, e.0
            ))
        })?;
        Ok((parts, attempts))
    }

    fn idle(&self) -> bool {
        let queue = locked(&self.queue);
        queue.is_empty() && queue.inflight == 0
    }
}

type Where = (String, ModelKey, Vec<u8>);

/// The batchers of a gateway, made on first use; requests that cannot merge pass through.
pub struct Batchers {
    policies: ArcSwap<BatchPolicies>,
    batchers: Mutex<HashMap<Where, Arc<ModelBatcher>>>,
    pub stats: Arc<BatchStats>,
}

impl Batchers {
    pub fn new(policies: BatchPolicies) -> Batchers {
        Batchers {
            policies: ArcSwap::from_pointee(policies),
            batchers: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        }
    }

    /// The routes' settings after a reload.
    pub fn set_policies(&self, policies: BatchPolicies) {
        self.policies.store(Arc::new(policies));
    }

    /// How to batch a route's requests to a model; None: not at all (off, or the model does
    /// not batch).
    pub fn settings(
        &self,
        route: &str,
        max_batch_size: i64,
        decoupled: bool,
    ) -> Option<BatchSettings> {
        let policies = self.policies.load();
        let settings = (*policies.routes.get(route).unwrap_or(&policies.default))?;
        if max_batch_size <= 0 || decoupled {
            return None;
        }
        Some(BatchSettings {
            max_batch_size: settings.max_batch_size.min(max_batch_size as u64),
            ..settings
        })
    }

    /// The caller's answer, from a merged call when it can share one, else from its own.
    pub async fn call(
        &self,
        pool: &Arc<Pool>,
        model: ModelKey,
        request: ModelInferRequest,
        payload: Bytes,
        settings: BatchSettings,
        deadline: Option<Instant>,
    ) -> Answer {
        let size = rows(&request);
        let key = merge_key(&request);
        let (Some(size), Some(key)) = (size, key) else {
            return alone(pool, payload.into(), deadline, &model).await;
        };
        if size >= settings.max_batch_size {
            return alone(pool, payload.into(), deadline, &model).await;
        }
        let batcher = {
            let mut batchers = locked(&self.batchers);
            if batchers.len() > 4096 {
                batchers.retain(|_, b| !b.idle()); // merge keys can be many
            }
            batchers
                .entry((pool.name.clone(), model.clone(), key))
                .or_insert_with(|| {
                    Arc::new(ModelBatcher {
                        pool: pool.clone(),
                        model,
                        queue: Mutex::new(BatchQueue::new(
                            settings.max_batch_size,
                            settings.max_inflight,
                        )),
                        stats: self.stats.clone(),
                    })
                })
                .clone()
        };
        batcher.submit(request, payload, size, deadline).await
    }

    /// The counters, as JSON (`gateway_batch_*` series).
    pub fn snapshot(&self) -> serde_json::Value {
        let s = &self.stats;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let sizes: Vec<(usize, u64)> = locked(&s.sizes).iter().map(|(k, v)| (*k, *v)).collect();
        serde_json::json!({
            "calls": get(&s.calls),
            "merged_calls": get(&s.merged_calls),
            "requests": get(&s.requests),
            "expired": get(&s.expired),
            "sizes": sizes,
        })
    }
}

/// A caller's own upstream call (nothing to merge it with), as a merged call reports it.
pub async fn alone(
    pool: &Arc<Pool>,
    payload: crate::protocol::wire::Message,
    deadline: Option<Instant>,
    model: &ModelKey,
) -> Answer {
    let started = Instant::now();
    let (answer, attempts) = pool
        .call_for("ModelInfer", payload, deadline, Some(model))
        .await?;
    let info = CallInfo {
        upstream: started.elapsed(),
        retries: attempts.saturating_sub(1),
        shared: None,
    };
    Ok((answer, info))
}
