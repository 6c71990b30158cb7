//! The response cache on the ModelInfer path: a policy per route, two tiers (in process, then
//! Redis), identical concurrent misses sharing one upstream call, `x-cache`; and, opt-in, the
//! sequences of streamed answers (`streamed`).
//!
//! Answers are stored without the caller's request id; each caller gets its own id back
//! (appended as a protobuf field, which overrides: a hit is never re-serialized).

pub mod breaker;
pub mod hits;
pub mod key;
pub mod l1;
pub mod l2;
pub mod policy;
pub mod streamed;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gateway_router::Variant;
use serde::{Deserialize, Serialize};

use crate::primitives::flights::Flights;
use crate::protocol::error::GatewayError;
use crate::protocol::messages::ModelInferRequest;
use crate::protocol::stream_answers::EMPTY_FINAL;
use crate::protocol::wire;
use crate::upstream::CallInfo;
use hits::ModelHits;
pub use l1::Key;
use l1::L1;
use l2::L2;
pub use policy::{Directives, Outcome, Policies, Policy, CACHE_CONTROL, CACHE_KEY};

const RESPONSE_ID: u32 = 3; // ModelInferResponse.id
const SEQUENCE_PARAMETERS: [&str; 3] = ["sequence_id", "sequence_start", "sequence_end"];

/// The `cache` section as the core reads it, with the policies `gateway.caching` decided.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheConfig {
    pub l1_max_bytes: u64,
    pub redis_url: Option<String>,
    pub redis_timeout_ms: f64,
    pub namespace: String,
    pub compress: bool,
    pub ignored_parameters: Vec<String>,
    pub policies: Policies,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_max_bytes: 256 << 20,
            redis_url: None,
            redis_timeout_ms: 50.0,
            namespace: "tgw:".into(),
            compress: false,
            ignored_parameters: key::DEFAULT_IGNORED_PARAMETERS.map(str::to_owned).to_vec(),
            policies: Policies::default(),
        }
    }
}

/// The admin API's CacheStats counters.
#[derive(Default)]
pub struct Counters {
    pub hits_l1: AtomicU64,
    pub hits_l2: AtomicU64,
    pub misses: AtomicU64,
    pub bypassed: AtomicU64,
    pub stores: AtomicU64,
    /// Answers over the route's max entry size, not stored.
    pub too_large: AtomicU64,
    /// Requests that shared another's upstream call.
    pub coalesced: AtomicU64,
    /// Redis calls that failed or timed out (never surfaced to callers).
    pub l2_errors: AtomicU64,
    /// Redis calls not made while the breaker was open.
    pub l2_skipped: AtomicU64,
    pub invalidated: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the upstream call of a miss gives: the answer, and how the call went.
pub type Fresh = (Bytes, CallInfo);

/// A cached or fresh answer (without the caller's id), how it was found, and (for the caller
/// whose call it was) how the call went.
#[derive(Clone)]
pub struct Answer {
    pub message: Bytes,
    pub outcome: Outcome,
    pub call: Option<CallInfo>,
}

pub struct ResponseCache {
    policies: ArcSwap<Policies>,
    ignored: HashSet<String>,
    pub l1: L1,
    pub l2: Option<Arc<L2>>,
    pub counters: Arc<Counters>,
    pub hits: ModelHits,
    flights: Flights<Key, Answer>,
}

/// The caller's answer: `message` with `id` appended (nothing when the request had none).
pub fn with_id(message: &Bytes, id: &str) -> Bytes {
    if id.is_empty() {
        return message.clone();
    }
    wire::append(message, &wire::string_field(RESPONSE_ID, id.as_bytes()))
}

impl ResponseCache {
    pub fn new(config: &CacheConfig) -> Result<ResponseCache, String> {
        let counters = Arc::new(Counters::default());
        let l2 = match &config.redis_url {
            None => None,
            Some(url) => Some(Arc::new(L2::new(
                url,
                Duration::from_secs_f64(config.redis_timeout_ms.max(1.0) / 1000.0),
                &config.namespace,
                config.compress,
                counters.clone(),
            )?)),
        };
        Ok(ResponseCache {
            policies: ArcSwap::from_pointee(config.policies.clone()),
            // Asking for a stream to be cached, or for its final answer, does not change it.
            ignored: (config.ignored_parameters.iter().cloned())
                .chain([streamed::CACHE_STREAM, EMPTY_FINAL].map(String::from))
                .collect(),
            l1: L1::new(config.l1_max_bytes),
            l2,
            counters,
            hits: ModelHits::default(),
            flights: Flights::default(),
        })
    }

    /// The routes' policies after a reload (tiers and Redis stay as started).
    pub fn set_policies(&self, policies: Policies) {
        self.policies.store(Arc::new(policies));
    }

    pub fn policies(&self) -> Arc<Policies> {
        self.policies.load_full()
    }

    /// The route's policy when this request may be answered from the cache: a route that
    /// caches, a model that answers once per request, no sequence.
    pub fn policy_for(
        &self,
        route: &str,
        decoupled: bool,
        request: &ModelInferRequest,
    ) -> Option<Policy> {
        let policy = self.policies.load().of(route).clone();
        if !policy.enabled || decoupled || in_sequence(request) {
            bump(&self.counters.bypassed);
            return None;
        }
        Some(policy)
    }

    /// The answer from a tier, a call under way, or `call` (whose answer is stored). `rows`:
    /// the inferences a hit counts for in ModelStatistics.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch<F, Fut>(
        self: &Arc<Self>,
        policy: Policy,
        route: &str,
        variant: &Variant,
        request: &ModelInferRequest,
        directives: Directives,
        rows: u64,
        call: F,
    ) -> Result<Answer, GatewayError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh, GatewayError>> + Send + 'static,
    {
        let started = Instant::now();
        let key = self.key_of(route, variant, &variant.model, request);
        if !directives.no_cache && policy.l1 {
            if let Some(message) = self.l1.get(&key, started) {
                bump(&self.counters.hits_l1);
                self.hit(variant, rows, started);
                return Ok(Answer {
                    message,
                    outcome: Outcome::HitL1,
                    call: None,
                });
            }
        }
        let resolve = {
            let (cache, key, policy) = (self.clone(), key.clone(), policy.clone());
            let id = request.id.clone();
            let upstream = call();
            async move { cache.resolve(key, policy, directives, id, upstream).await }
        };
        let answer = if directives.no_cache {
            // The caller wants a fresh answer, not one already under way.
            resolve.await?
        } else {
            let (answer, leader) = self.flights.run(key, || resolve).await;
            let mut answer = answer?;
            if !leader {
                bump(&self.counters.coalesced);
                answer.call = None;
            }
            answer
        };
        if answer.outcome == Outcome::HitL2 {
            self.hit(variant, rows, started);
        }
        Ok(answer)
    }

    /// Redis, else the upstream call (its answer stored). Shared by identical concurrent misses.
    async fn resolve(
        self: Arc<Self>,
        key: Key,
        policy: Policy,
        directives: Directives,
        id: String,
        call: impl Future<Output = Result<Fresh, GatewayError>>,
    ) -> Result<Answer, GatewayError> {
        if !directives.no_cache {
            if let Some(message) = self.l2_hit(&key, &policy).await {
                return Ok(Answer {
                    message,
                    outcome: Outcome::HitL2,
                    call: None,
                });
            }
        }
        bump(&self.counters.misses);
        let (message, info) = call.await?;
        // Triton echoes the request's id: the stored answer has none.
        let message = if id.is_empty() {
            message
        } else {
            wire::strip(&message, RESPONSE_ID)
                .map(|m| m.freeze())
                .unwrap_or(message)
        };
        if !directives.no_store {
            self.store(key, &message, &policy);
        }
        Ok(Answer {
            message,
            outcome: Outcome::Miss,
            call: Some(info),
        })
    }

    /// The key a request's answer is kept under: the route's, the variant's, and a digest of the
    /// request as sent to `model` (the upstream model, or a name that keeps streams apart).
    fn key_of(
        &self,
        route: &str,
        variant: &Variant,
        model: &str,
        request: &ModelInferRequest,
    ) -> Key {
        Key {
            model: route.to_owned(),
            variant: variant.name.to_string(),
            digest: key::cache_key(request, model, &variant.version, &self.ignored),
        }
    }

    /// The answer Redis keeps for `key` (when the policy reads it), copied into the in-process
    /// tier when the policy keeps one there.
    async fn l2_hit(&self, key: &Key, policy: &Policy) -> Option<Bytes> {
        let l2 = self.l2.as_ref().filter(|_| policy.l2)?;
        let message = Box::pin(l2.get(key)).await?;
        bump(&self.counters.hits_l2);
        if policy.l1 {
            self.l1
                .put(key.clone(), message.clone(), ttl(policy), Instant::now());
        }
        Some(message)
    }

    fn store(&self, key: Key, message: &Bytes, policy: &Policy) {
        if message.len() > policy.max_entry_bytes {
            bump(&self.counters.too_large);
            return;
        }
        bump(&self.counters.stores);
        if let (true, Some(l2)) = (policy.l2, &self.l2) {
            // In the background: a miss is never slowed by Redis.
            let (l2, key, message, ttl) = (l2.clone(), key.clone(), message.clone(), ttl(policy));
            tokio::spawn(async move { l2.put(&key, &message, ttl).await });
        }
        if policy.l1 {
            self.l1
                .put(key, message.clone(), ttl(policy), Instant::now());
        }
    }

    fn hit(&self, variant: &Variant, rows: u64, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.hits.record(&variant.model, &variant.version, rows, ns);
    }

    /// Drop a model's entries (one variant's, or everything when no model is named) from both
    /// tiers; the count dropped. Err: Redis could not be reached (the in-process ones are gone).
    pub async fn invalidate(&self, model: &str, variant: &str) -> Result<u64, String> {
        let mut count = self.l1.discard(model, variant);
        let redis = match &self.l2 {
            Some(l2) => l2.invalidate(model, variant).await,
            None => Ok(0),
        };
        count += redis.as_ref().copied().unwrap_or(0);
        self.counters
            .invalidated
            .fetch_add(count, Ordering::Relaxed);
        redis.map(|_| count)
    }

    /// The admin API's CacheStats fields, as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "enabled_by_default": self.policies.load().default.enabled,
            "redis_configured": self.l2.is_some(),
            "redis_breaker": self.l2.as_ref().map_or("closed", |l2| l2.breaker_state()),
            "hits_l1": get(&c.hits_l1),
            "hits_l2": get(&c.hits_l2),
            "misses": get(&c.misses),
            "bypassed": get(&c.bypassed),
            "stores": get(&c.stores),
            "too_large": get(&c.too_large),
            "coalesced": get(&c.coalesced),
            "l1_entries": self.l1.len(),
            "l1_bytes": self.l1.bytes(),
            "l1_max_bytes": self.l1.max_bytes,
            "evictions": self.l1.evictions(),
            "l2_errors": get(&c.l2_errors),
            "l2_skipped": get(&c.l2_skipped),
            "invalidated": get(&c.invalidated),
        })
    }
}

/// A request of a sequence: its answer depends on the requests before it, never cached.
fn in_sequence(request: &ModelInferRequest) -> bool {
    SEQUENCE_PARAMETERS
        .iter()
        .any(|p| request.parameters.contains_key(*p))
}

fn ttl(policy: &Policy) -> Duration {
    Duration::from_secs_f64(policy.ttl_s.max(0.001))
}
