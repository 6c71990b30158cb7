//! What `Core.stats()` hands the control plane: typed snapshots, serialized here in one place.
//! The pools' rows are the admin API's `PoolStats`, field for field
//! (proto/gateway_admin/admin.proto), with the queue-wait histogram for the metrics.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::health;
use crate::primitives::clock::now_s;
use crate::primitives::events::Events;
use crate::state::State;
use crate::upstream::affine::Chosen;
use crate::upstream::dns::NameStatus;
use crate::upstream::endpoint::EndpointStats;
use crate::upstream::Pool;

#[derive(Serialize)]
pub struct PoolRow {
    name: String,
    in_flight: u64,
    endpoints: Vec<EndpointStats>,
    attempts: u64,
    retries: u64,
    retries_denied: u64,
    hedges: u64,
    ejections: u64,
    /// Streamed requests of affinity routes, by how their endpoint was chosen.
    affinity: std::collections::BTreeMap<&'static str, u64>,
    names: Vec<NameStatus>,
    /// Its admission control's fields, when it has a limit.
    #[serde(flatten)]
    admission: serde_json::Map<String, serde_json::Value>,
}

impl PoolRow {
    fn of(pool: &Pool, state: &State, now: f64) -> PoolRow {
        let endpoints: Vec<EndpointStats> = pool.endpoints().iter().map(|e| e.stats(now)).collect();
        let stats = &pool.stats;
        let mut admission = match state.admissions.get(&pool.name).map(|a| a.stats()) {
            Some(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        // Under admission control, its own count of requests under way is the pool's.
        let admitted = admission.remove("in_flight").and_then(|v| v.as_u64());
        PoolRow {
            name: pool.name.clone(),
            in_flight: admitted.unwrap_or_else(|| endpoints.iter().map(|e| e.outstanding).sum()),
            endpoints,
            attempts: stats.attempts.load(Ordering::Relaxed),
            retries: stats.retries.load(Ordering::Relaxed),
            retries_denied: stats.retries_denied.load(Ordering::Relaxed),
            hedges: stats.hedges.load(Ordering::Relaxed),
            ejections: stats.ejections.load(Ordering::Relaxed),
            affinity: Chosen::NAMES
                .iter()
                .zip(&stats.affinity)
                .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
                .collect(),
            names: pool
                .discovery
                .as_ref()
                .map(|d| d.snapshot())
                .unwrap_or_default(),
            admission,
        }
    }
}

#[derive(Serialize)]
pub struct CoreStats {
    pools: Vec<PoolRow>,
    series: serde_json::Value,
    connections_accepted: u64,
    threads: usize,
    events_dropped: u64,
    observations_dropped: u64,
    serving: bool,
    cache: serde_json::Value,
    batching: serde_json::Value,
}

impl CoreStats {
    /// A snapshot of the pools and the boundary's counters (`threads`: the runtime's workers).
    pub fn of(state: &State, threads: usize) -> CoreStats {
        let now = now_s();
        let dropped = |events: &Events| events.dropped.load(Ordering::Relaxed);
        CoreStats {
            pools: state
                .pool_order
                .iter()
                .map(|p| PoolRow::of(p, state, now))
                .collect(),
            series: state.telemetry.snapshot(),
            connections_accepted: state.connections_accepted.load(Ordering::Relaxed),
            threads,
            events_dropped: dropped(&state.events),
            observations_dropped: state.observations.as_deref().map_or(0, dropped),
            serving: *state.health.status.borrow() == health::SERVING,
            cache: state.cache.stats(),
            batching: state.batchers.snapshot(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
