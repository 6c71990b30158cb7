//! The part of the gateway's configuration the core reads. The schema is the control plane's
//! (pydantic, `gateway.config.GatewayConfig`): Python validates the YAML and hands over its
//! `model_dump(mode="json")`; keys the core does not use are ignored here, and a round-trip test
//! (`tests/unit/test_core_boundary.py`) checks that what it reads is what Python meant.

use gateway_router::Route;

use crate::admission::AdaptiveConfig;
pub use crate::protocol::tls::ListenerTls;
pub use crate::shadow::ShadowConfig;
pub use crate::telemetry::PayloadLogConfig;
use crate::upstream::PoolConfig;
use serde::{Deserialize, Serialize};

/// A pool as configured: its servers and their resilience (the upstream layer's), and the
/// admission control in front of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolEntry {
    #[serde(flatten)]
    pub upstream: PoolConfig,
    /// Requests under way towards the pool (0: no limit, unless adaptive), the queue beyond
    /// it, and the adaptive limit.
    #[serde(default)]
    pub max_inflight: usize,
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
}

fn default_max_queue() -> usize {
    100
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CoreConfig {
    pub listen: String,
    pub max_message_bytes: usize,
    pub metadata_ttl_s: f64,
    pub health_check_interval_s: f64,
    pub health_check_timeout_s: f64,
    /// In the configuration's order: server-wide RPCs without a merge go to the first.
    pub pools: Vec<PoolEntry>,
    pub default_pool: Option<String>,
    /// Tokio worker threads; 0: one per core.
    #[serde(default)]
    pub threads: usize,
    /// JSON lines of every RPC; "-" for standard output; none: off.
    #[serde(default)]
    pub access_log: Option<String>,
    pub shadow: ShadowConfig,
    /// Clients are sent GOAWAY after this long on one connection (and get as long again to
    /// finish their calls); none: never.
    #[serde(default)]
    pub max_connection_age_s: Option<f64>,
    /// TLS on the data port; none: plaintext.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    #[serde(default)]
    pub payload_log: Option<PayloadLogConfig>,
    /// Capacity of the observation stream (a record per RPC for the control plane); 0: off.
    #[serde(default)]
    pub observations: usize,
    /// The share of observations that carry the request and the answer (tensors included).
    #[serde(default)]
    pub observation_tensors: f64,
    /// Every OK ModelInfer's observation carries a summary of its answer (`prediction`), for
    /// joining ground truth; `prediction_output` names the output (none: the first float one).
    #[serde(default)]
    pub predictions: bool,
    #[serde(default)]
    pub prediction_output: Option<String>,
    /// The response cache's tiers and the routes' policies.
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    /// Traces: exporter, OTLP endpoint, sampling.
    #[serde(default)]
    pub tracing: crate::traces::TraceConfig,
    /// Micro-batching of the routes.
    #[serde(default)]
    pub batching: crate::batching::BatchPolicies,
    /// Priority classes and tenants of the pools' queues.
    #[serde(default)]
    pub admission: crate::admission::AdmissionConfig,
    /// Prefix affinity of the routes that have it.
    #[serde(default)]
    pub affinity: crate::route::affinity::AffinityPolicies,
}

/// What `Core.routes()` reports and `Core.set_routes()` takes: the whole table.
pub type RouteTable = Vec<Route>;
