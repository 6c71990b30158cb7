//! Everything a request handler reads: pools, the route table, signatures, health, events.
//! Built once at start; only the route table (atomically) and health change afterwards.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use gateway_router::Route;
use hashbrown::HashMap;

use crate::admission::Admission;
use crate::batching::Batchers;
use crate::cache::ResponseCache;
use crate::config::CoreConfig;
use crate::health::Health;
use crate::primitives::events::Events;
use crate::protocol::error::GatewayError;
use crate::protocol::reflection::Reflection;
use crate::route::affinity::AffinityPolicies;
use crate::route::signatures::Signatures;
use crate::route::table::Table;
use crate::shadow::Shadows;
use crate::telemetry::Telemetry;
use crate::traces::Tracer;
use crate::upstream::Pool;

pub struct State {
    /// Prefix affinity of the routes that have it (swapped whole on a reload).
    pub affinities: ArcSwap<AffinityPolicies>,
    /// Admission control of the pools that have a limit.
    pub admissions: HashMap<String, Arc<Admission>>,
    pub cache: Arc<ResponseCache>,
    pub batchers: Batchers,
    pub tracer: Tracer,
    pub config: CoreConfig,
    pub pools: HashMap<String, Arc<Pool>>,
    pub pool_order: Vec<Arc<Pool>>,
    pub table: Table,
    pub signatures: Signatures,
    pub health: Health,
    pub events: Arc<Events>,
    pub observations: Option<Arc<Events>>,
    pub telemetry: Telemetry,
    pub shadows: Shadows,
    pub connections_accepted: std::sync::atomic::AtomicU64,
    pub reflection: Reflection,
}

impl State {
    /// Err names what could not be set up (a TLS file, the access log).
    pub fn new(config: CoreConfig, reflection: Reflection) -> Result<State, String> {
        let mut pool_order: Vec<Arc<Pool>> = Vec::with_capacity(config.pools.len());
        for pool in &config.pools {
            pool_order.push(Arc::new(Pool::new(pool.upstream.clone())?));
        }
        let pools = pool_order
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        let observations =
            (config.observations > 0).then(|| Arc::new(Events::new(config.observations)));
        let telemetry = Telemetry::new(
            config.access_log.as_deref(),
            config.payload_log.as_ref(),
            observations.clone(),
            config.observation_tensors,
        )?
        .with_predictions(config.predictions, config.prediction_output.clone());
        let shadows = Shadows::new(&config.shadow)
            .map_err(|e| format!("shadow.log_path: cannot open it: {e}"))?;
        let cache = Arc::new(ResponseCache::new(&config.cache)?);
        let admissions = config
            .pools
            .iter()
            .filter(|p| p.max_inflight > 0 || p.adaptive.is_some())
            .map(|p| {
                let name = &p.upstream.name;
                let admission = Admission::new(
                    name,
                    p.max_inflight,
                    p.max_queue,
                    p.adaptive.as_ref(),
                    &config.admission,
                );
                (name.clone(), Arc::new(admission))
            })
            .collect();
        Ok(State {
            affinities: ArcSwap::from_pointee(config.affinity.clone()),
            batchers: Batchers::new(config.batching.clone()),
            tracer: Tracer::new(config.tracing.clone()),
            admissions,
            cache,
            connections_accepted: std::sync::atomic::AtomicU64::new(0),
            shadows,
            signatures: Signatures::new(config.metadata_ttl_s),
            config,
            pools,
            pool_order,
            table: Table::new(),
            health: Health::new(),
            events: Arc::new(Events::new(10_000)),
            observations,
            telemetry,
            reflection,
        })
    }

    pub fn default_pool(&self) -> Option<&Arc<Pool>> {
        self.config
            .default_pool
            .as_ref()
            .and_then(|name| self.pools.get(name))
    }

    pub async fn route(
        &self,
        model: &str,
        deadline: Option<Instant>,
    ) -> Result<Arc<Route>, GatewayError> {
        self.table
            .route(model, self.default_pool(), &self.events, deadline)
            .await
    }

    pub fn pool(&self, name: &str) -> Result<&Arc<Pool>, GatewayError> {
        self.pools.get(name).ok_or_else(|| {
            GatewayError::Internal(format!(
                "the route names pool '{name}', which does not exist"
            ))
        })
    }

    pub fn all_pools_ready(&self) -> bool {
        !self.health.draining() && self.pool_order.iter().all(|p| p.ready())
    }
}

impl crate::shadow::Gateway for State {
    fn shadows(&self) -> &Shadows {
        &self.shadows
    }

    fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    fn pool(&self, name: &str) -> Result<&Arc<Pool>, GatewayError> {
        State::pool(self, name)
    }

    fn signatures(&self) -> &Signatures {
        &self.signatures
    }
}
