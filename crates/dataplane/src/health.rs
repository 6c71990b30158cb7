//! Active health checks of every endpoint (ServerReady, then ModelReady for the models routed to
//! its pool), feeding `grpc.health.v1.Health` and ServerReady. The gateway serves once any pool
//! can answer; draining makes it NOT_SERVING whatever the probes say.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use crate::protocol::channel::collect;
use crate::protocol::messages::{Flag, NameVersion};
use crate::route::table::Table;
use crate::upstream::{Endpoint, ModelKey, Pool};

pub const SERVING: i32 = 1;
pub const NOT_SERVING: i32 = 2;
pub const SERVICE_UNKNOWN: i32 = 3;

pub struct Health {
    pub status: watch::Sender<i32>,
    draining: AtomicBool,
}

impl Health {
    pub fn new() -> Health {
        Health {
            status: watch::channel(NOT_SERVING).0,
            draining: AtomicBool::new(false),
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// NOT_SERVING from now on: load balancers stop sending.
    pub fn drain(&self) {
        self.status.send_modify(|current| {
            self.draining.store(true, Ordering::Relaxed);
            *current = NOT_SERVING;
        });
    }

    fn publish(&self, serving: bool) {
        // `draining` is read under the channel's lock, which `drain` takes too: a probe round
        // that ends as the drain starts cannot put SERVING back.
        self.status.send_if_modified(|current| {
            if self.draining() {
                return false;
            }
            let next = if serving { SERVING } else { NOT_SERVING };
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

/// The server's answer (None: no answer within `timeout`, or the call failed).
async fn answer(
    endpoint: &Endpoint,
    method: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    let request = crate::protocol::wire::Message::from(request);
    let probe = async {
        let response = endpoint
            .channel
            .unary(method, &request, Some(deadline), None)
            .await
            .ok()?;
        let answer: Bytes = collect(response).await.ok()?;
        Flag::decode(answer).ok().map(|f| f.value)
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

async fn probe(endpoint: Arc<Endpoint>, models: Vec<ModelKey>, timeout: Duration) {
    let was = endpoint.ready.load(Ordering::Relaxed);
    let answered = answer(&endpoint, "ServerReady", Vec::new(), timeout).await;
    if answered.is_none() {
        // No answer at all: the connection may be dead (the host cut off), with calls waiting
        // on it. A ping tells; without a pong it is closed and its calls go elsewhere.
        endpoint.channel.check();
    }
    let now = answered == Some(true);
    if now != was {
        eprintln!(
            "gateway core: endpoint {} is {}",
            endpoint.address(),
            if now { "ready" } else { "NOT ready" }
        );
    }
    endpoint.ready.store(now, Ordering::Relaxed);
    let mut unready = HashSet::new();
    if now {
        for (name, version) in models {
            let request = NameVersion {
                name: name.to_string(),
                version: version.to_string(),
            }
            .encode_to_vec();
            if answer(&endpoint, "ModelReady", request, timeout).await != Some(true) {
                unready.insert((name, version));
            }
        }
    }
    endpoint.unready_models.store(Arc::new(unready));
}

/// Upstream (model, version) pairs the routes send to each pool.
fn routed_models(table: &Table) -> HashMap<String, Vec<ModelKey>> {
    let mut out: HashMap<String, HashSet<ModelKey>> = HashMap::new();
    for route in table.snapshot().values() {
        for variant in &route.variants {
            out.entry(variant.pool.to_string())
                .or_default()
                .insert((variant.model.clone(), variant.version.clone()));
        }
    }
    out.into_iter()
        .map(|(pool, models)| (pool, models.into_iter().collect()))
        .collect()
}

pub async fn check_once(
    health: &Health,
    pools: &hashbrown::HashMap<String, Arc<Pool>>,
    table: &Table,
    timeout: Duration,
) {
    let models = routed_models(table);
    let mut probes = tokio::task::JoinSet::new();
    for pool in pools.values() {
        let routed = models.get(&pool.name).cloned().unwrap_or_default();
        for endpoint in pool.endpoints().iter() {
            probes.spawn(probe(endpoint.clone(), routed.clone(), timeout));
        }
    }
    while probes.join_next().await.is_some() {}
    health.publish(pools.values().any(|p| p.ready()));
}
