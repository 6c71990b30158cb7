//! A pool: its endpoints (fixed, or followed through DNS), how one is picked for a call, the
//! retry budget, and its counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::primitives::clock::now_s;
use crate::protocol::error::GatewayError;
use crate::protocol::tls::{self, UpstreamTls};
use crate::upstream::dns::{self, Discovery, DnsName};
use crate::upstream::endpoint::{Endpoint, ModelKey};
use crate::upstream::prefix_index::PrefixIndex;
use crate::upstream::resilience::{choose, EndpointHealth, OutlierConfig, RetryBudget};

/// How a pool picks among its eligible endpoints (Envoy's `lb_policy` names).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Power of two choices weighed by requests under way x latency (P2C-EWMA): the faster
    /// endpoint gets more.
    #[default]
    LeastRequest,
    /// Each eligible endpoint in turn: equal shares, whatever their latency.
    RoundRobin,
}

/// A pool of interchangeable servers, as the control plane configured it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub endpoints: Vec<String>,
    pub outlier: OutlierConfig,
    pub max_attempts: u32,
    pub retry_budget_ratio: f64,
    pub retry_budget_initial: f64,
    pub hedge_delay_ms: Option<f64>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// How often `dns:` endpoints are resolved again.
    #[serde(default = "default_dns_refresh_s")]
    pub dns_refresh_s: f64,
    /// The DNS server (IP:PORT) for `dns:` endpoints; none: the system's.
    #[serde(default)]
    pub dns_resolver: Option<String>,
    /// HTTP/2 connections the unary calls to each endpoint may spread over (opened as the load
    /// needs them: `protocol::connections`).
    #[serde(default = "default_connections_per_endpoint")]
    pub connections_per_endpoint: usize,
}

/// Prefix and session keys a pool remembers (about; the oldest are forgotten first).
const PREFIX_KEYS: usize = 131_072;

fn default_dns_refresh_s() -> f64 {
    5.0
}

fn default_connections_per_endpoint() -> usize {
    8
}

#[derive(Default)]
pub struct PoolStats {
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub retries_denied: AtomicU64,
    pub hedges: AtomicU64,
    pub ejections: AtomicU64,
    /// Streamed requests of routes with prefix affinity, by how their endpoint was chosen:
    /// their session's, their longest known prefix's, spilled to P2C past the load bound, or
    /// new (nothing known).
    pub affinity: [AtomicU64; 4],
}

pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    /// Swapped whole when DNS answers change; a call works on the set it loaded.
    pub(super) endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    connector: Option<TlsConnector>,
    /// The pool's `dns:` endpoints, when it has any.
    pub discovery: Option<Discovery>,
    pub(super) budget: Mutex<RetryBudget>,
    /// The next turn, for `lb_policy: round_robin`.
    turn: AtomicUsize,
    pub stats: PoolStats,
    /// Where prompts' prefixes and sessions were last sent (prefix affinity).
    pub(super) prefixes: Mutex<PrefixIndex>,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Result<Pool, String> {
        let name = config.name.clone();
        let connector = config
            .tls
            .as_ref()
            .map(|tls| tls::connector(tls, &name))
            .transpose()?;
        let mut names = Vec::new();
        let mut addresses = Vec::new();
        for spec in &config.endpoints {
            match dns::parse(spec) {
                Some(parsed) => names.push(parsed.map_err(|e| format!("pool '{name}': {e}"))?),
                None => addresses.push(spec.clone()),
            }
        }
        let discovery = (!names.is_empty())
            .then(|| Discovery::new(names, config.dns_refresh_s, config.dns_resolver.as_deref()))
            .transpose()
            .map_err(|e| format!("pool '{name}': {e}"))?;
        let budget = RetryBudget::new(config.retry_budget_ratio, config.retry_budget_initial);
        let pool = Pool {
            name,
            config,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            connector,
            discovery,
            budget: Mutex::new(budget),
            turn: AtomicUsize::new(0),
            stats: PoolStats::default(),
            prefixes: Mutex::new(PrefixIndex::new(PREFIX_KEYS)),
        };
        let endpoints = addresses
            .iter()
            .map(|address| pool.endpoint(address, address, None))
            .collect::<Result<Vec<_>, String>>()?;
        pool.endpoints.store(Arc::new(endpoints));
        Ok(pool)
    }

    /// A new endpoint at `address`; TLS verifies `host` (the DNS name, for a resolved address).
    fn endpoint(
        &self,
        address: &str,
        host: &str,
        source: Option<&str>,
    ) -> Result<Arc<Endpoint>, String> {
        let tls = match (&self.connector, &self.config.tls) {
            (Some(connector), Some(tls)) => Some((connector.clone(), tls::server_name(tls, host)?)),
            _ => None,
        };
        let health = EndpointHealth::new(self.config.outlier.clone());
        let connections = self.config.connections_per_endpoint;
        let mut endpoint = Endpoint::new(address.to_owned(), health, tls, connections);
        endpoint.source = source.map(str::to_owned);
        Ok(Arc::new(endpoint))
    }

    /// The endpoints now (a snapshot: DNS may change the set at any time).
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Install the addresses `name` resolves to now: kept ones stay as they are (connection,
    /// health, load), new ones join, not ready until their health check passes; vanished ones
    /// leave the set, so no new call picks them, while calls under way on them finish (their
    /// connection closes when the last reference goes). TLS verifies the name, not the address.
    /// Resolve the pool's `dns:` names once and install what came back.
    pub async fn resolve(&self, resolver: &TokioResolver) {
        if let Some(discovery) = &self.discovery {
            let install =
                |name: &DnsName, addresses: &[String]| self.set_addresses(name, addresses);
            discovery.resolve(resolver, &self.name, install).await;
        }
    }

    fn set_addresses(&self, name: &DnsName, addresses: &[String]) {
        let (source, host) = (name.spec.as_str(), format!("{}:{}", name.host, name.port));
        let current = self.endpoints();
        let mut next: Vec<Arc<Endpoint>> = current
            .iter()
            .filter(|e| {
                e.source.as_deref() != Some(source) || addresses.iter().any(|a| a == e.address())
            })
            .cloned()
            .collect();
        let mut changed = next.len() != current.len();
        for address in addresses {
            let known = current
                .iter()
                .any(|e| e.source.as_deref() == Some(source) && e.address() == address);
            if known {
                continue;
            }
            match self.endpoint(address, &host, Some(source)) {
                Ok(endpoint) => {
                    next.push(endpoint);
                    changed = true;
                }
                Err(error) => eprintln!("gateway core: pool {}: {address}: {error}", self.name),
            }
        }
        if changed {
            let shown: Vec<&str> = next.iter().map(|e| e.address()).collect();
            eprintln!(
                "gateway core: pool {}: {source} now resolves to {addresses:?}; endpoints {shown:?}",
                self.name
            );
            self.endpoints.store(Arc::new(next));
        }
    }

    pub fn ready(&self) -> bool {
        let now = now_s();
        self.endpoints.load().iter().any(|e| e.eligible(now))
    }

    pub(super) fn may_eject(&self, now: f64) -> bool {
        let endpoints = self.endpoints.load();
        let ejected = endpoints.iter().filter(|e| e.ejected(now)).count();
        (ejected + 1) * 100 <= self.config.outlier.max_ejection_percent as usize * endpoints.len()
    }

    /// The eligible endpoint to try; with none eligible, any not yet tried (the call itself then
    /// says precisely what is wrong, and nothing is refused on stale health). UNAVAILABLE when
    /// the pool has no endpoint at all (its names resolved to nothing yet).
    pub fn pick(
        &self,
        model: Option<&ModelKey>,
        exclude: &[Arc<Endpoint>],
    ) -> Result<Arc<Endpoint>, GatewayError> {
        // One endpoint is every pick's answer, eligible or not (see `candidates`).
        if let [only] = &self.endpoints.load()[..] {
            return Ok(only.clone());
        }
        let candidates = self.candidates(model, exclude)?;
        Ok(self.choose_among(&candidates).clone())
    }

    /// The endpoints a call may go to (see `pick`).
    pub(super) fn candidates(
        &self,
        model: Option<&ModelKey>,
        exclude: &[Arc<Endpoint>],
    ) -> Result<Vec<Arc<Endpoint>>, GatewayError> {
        let endpoints = self.endpoints.load();
        if endpoints.is_empty() {
            let why = self
                .discovery
                .as_ref()
                .map(Discovery::unresolved)
                .unwrap_or_default();
            return Err(GatewayError::Unavailable(format!(
                "upstream pool '{}' has no endpoints: {why}",
                self.name
            )));
        }
        let now = now_s();
        let untried = |e: &&Arc<Endpoint>| !exclude.iter().any(|x| Arc::ptr_eq(x, e));
        let mut candidates: Vec<&Arc<Endpoint>> = endpoints
            .iter()
            .filter(untried)
            .filter(|e| e.eligible(now) && e.serves(model))
            .collect();
        if candidates.is_empty() {
            let mut rest: Vec<&Arc<Endpoint>> = endpoints.iter().filter(untried).collect();
            if rest.is_empty() {
                rest = endpoints.iter().collect();
            }
            let healthy: Vec<&Arc<Endpoint>> =
                rest.iter().copied().filter(|e| !e.ejected(now)).collect();
            candidates = if healthy.is_empty() { rest } else { healthy };
        }
        Ok(candidates.into_iter().cloned().collect())
    }

    /// One of `candidates` (not empty), by the pool's `lb_policy`.
    pub(super) fn choose_among<'a>(&self, candidates: &'a [Arc<Endpoint>]) -> &'a Arc<Endpoint> {
        let chosen = match self.config.lb_policy {
            LbPolicy::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len(),
            LbPolicy::LeastRequest => {
                let loads: Vec<(u64, f64)> = candidates
                    .iter()
                    .map(|e| (e.outstanding.load(Ordering::Relaxed), e.latency_ewma()))
                    .collect();
                choose(&loads, |n| fastrand::usize(..n))
            }
        };
        &candidates[chosen]
    }

    /// One retry (or hedge) of the budget: false, and counted as refused, when it has none.
    pub(super) fn spend_budget(&self) -> bool {
        let spent = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_retry();
        if !spent {
            self.stats.retries_denied.fetch_add(1, Ordering::Relaxed);
        }
        spent
    }

    pub(super) fn retry_allowed(&self, tried: usize, deadline: Option<Instant>) -> bool {
        if tried >= self.config.max_attempts as usize || tried >= self.endpoints.load().len() {
            return false;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        if !self.spend_budget() {
            return false;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Resolve the pool's names again every interval, and soon after a connection failure, until
/// `stop`.
pub async fn discover(
    pool: Arc<Pool>,
    resolver: TokioResolver,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let Some(discovery) = &pool.discovery else {
        return;
    };
    let mut last = Instant::now();
    while discovery.next_round(last, &mut stop).await {
        pool.resolve(&resolver).await;
        last = Instant::now();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Three endpoints that are never called.
    pub(crate) fn pool(lb_policy: &str) -> Pool {
        pool_of(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], lb_policy)
    }

    fn pool_of(endpoints: &[&str], lb_policy: &str) -> Pool {
        let config = serde_json::json!({
            "name": "p", "endpoints": endpoints,
            "outlier": {"consecutive_failures": 5, "base_ejection_s": 1.0, "max_ejection_s": 30.0,
                        "max_ejection_percent": 50},
            "max_attempts": 2, "retry_budget_ratio": 0.2, "retry_budget_initial": 3.0,
            "hedge_delay_ms": null, "lb_policy": lb_policy,
        });
        Pool::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn round_robin_gives_each_endpoint_its_turn_and_skips_the_ones_tried() {
        let pool = pool("round_robin");
        let picked: Vec<String> = (0..6)
            .map(|_| pool.pick(None, &[]).unwrap().address().to_owned())
            .collect();
        let order = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        assert_eq!(picked, [order, order].concat());
        let tried = pool.pick(None, &[]).unwrap();
        for _ in 0..4 {
            assert!(!Arc::ptr_eq(
                &pool.pick(None, std::slice::from_ref(&tried)).unwrap(),
                &tried
            ));
        }
    }

    #[test]
    fn a_pool_of_one_always_picks_it_even_when_tried_or_ejected() {
        let pool = pool_of(&["127.0.0.1:1"], "least_request");
        let only = pool.pick(None, &[]).unwrap();
        assert!(Arc::ptr_eq(
            &pool.pick(None, std::slice::from_ref(&only)).unwrap(),
            &only
        ));
        for _ in 0..5 {
            only.health.lock().unwrap().failure(now_s(), true);
        }
        assert!(only.ejected(now_s()));
        assert!(Arc::ptr_eq(&pool.pick(None, &[]).unwrap(), &only));
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_fewer_under_way() {
        let pool = pool("least_request");
        let endpoints = pool.endpoints();
        endpoints[0].outstanding.store(10, Ordering::Relaxed);
        endpoints[1].outstanding.store(10, Ordering::Relaxed);
        // Of the two drawn, the idle one wins whenever it is one of them: 2 draws in 3.
        let idle = (0..200)
            .filter(|_| Arc::ptr_eq(&pool.pick(None, &[]).unwrap(), &endpoints[2]))
            .count();
        assert!(
            idle > 100,
            "the idle endpoint is in 2 of every 3 draws: {idle} of 200"
        );
    }
}
