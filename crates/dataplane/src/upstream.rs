//! Upstream pools: v2 servers behind one name, called over HTTP/2 with raw bytes.
//!
//! Each endpoint keeps one HTTP/2 connection (reopened on demand after it breaks). A call picks
//! an endpoint by power of two choices among the eligible ones (ready by the active probe, not
//! ejected, ready for the model); a connection failure counts towards outlier ejection and is
//! retried on another endpoint while the retry budget and the deadline allow. Answers come back
//! as bodies to forward; `call` collects one for the core's own use (metadata, probes).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::BoxBody;
use crate::config::{LbPolicy, PoolConfig};
use crate::error::GatewayError;
use crate::grpc::{self, Code};
use crate::resilience::{choose, faded, update, EndpointHealth, RetryBudget};
use crate::tls;
use crate::traces::{self, otlp::Value, ChildSpan};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub type ModelKey = (String, String); // upstream model name, version

pub fn method_path(method: &str) -> String {
    format!("/{INFERENCE_SERVICE}/{method}")
}

/// Seconds on the process's monotonic clock, for the sans-IO health bookkeeping.
pub fn now_s() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// An HTTP/2 client connection over `io`, driven by a task of its own until it closes.
async fn handshake<I>(io: I) -> Result<SendRequest<BoxBody>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        // Callers whose deadline passes reset their streams; frames the server still sends on
        // one it no longer remembers would be a protocol error that closes the connection
        // with every call on it (h2 remembers 10 by default).
        .max_concurrent_reset_streams(4096)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await; // ends when the server or the network closes it
    });
    Ok(sender)
}

/// The timeout propagated upstream: the caller's remaining time and a little more, so the
/// gateway's own timer ends a late call (resetting the stream, which Triton takes as a
/// cancellation) before the upstream's deadline fires. Triton 2.51's gRPC frontend answers an
/// expired deadline with its trailers more than once on the same stream, a protocol error that
/// would close the connection with every call on it.
pub fn upstream_timeout(remaining: Duration) -> Duration {
    let grace = (remaining / 50).clamp(Duration::from_millis(2), Duration::from_millis(20));
    remaining.max(Duration::from_millis(1)) + grace
}

/// An error with what caused it ("http2 error: stream error received: refused stream").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = inner.source();
    }
    text
}

pub struct Endpoint {
    pub address: String,
    /// The `dns:NAME:PORT` it was found by, when it was.
    pub source: Option<String>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sender: Mutex<Option<SendRequest<BoxBody>>>,
    connecting: tokio::sync::Mutex<()>,
    pub outstanding: AtomicU64,
    latency_ewma_bits: AtomicU64,
    /// When the estimate last had a sample (`now_s`, as f64 bits): it fades from then on.
    sampled_at_bits: AtomicU64,
    pub health: Mutex<EndpointHealth>,
    pub ready: AtomicBool, // from the active probe
    pub unready_models: ArcSwap<HashSet<ModelKey>>,
}

impl Endpoint {
    fn new(
        address: String,
        health: EndpointHealth,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Endpoint {
        Endpoint {
            address,
            source: None,
            tls,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            outstanding: AtomicU64::new(0),
            latency_ewma_bits: AtomicU64::new(0f64.to_bits()),
            sampled_at_bits: AtomicU64::new(0f64.to_bits()),
            health: Mutex::new(health),
            ready: AtomicBool::new(false),
            unready_models: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    /// A plaintext endpoint outside any pool (the OTLP collector).
    pub fn plain(address: String) -> Endpoint {
        let outlier = crate::config::OutlierConfig {
            consecutive_failures: u32::MAX,
            base_ejection_s: 0.0,
            max_ejection_s: 0.0,
            max_ejection_percent: 0,
        };
        Endpoint::new(address, EndpointHealth::new(outlier), None)
    }

    fn since_sample(&self) -> f64 {
        now_s() - f64::from_bits(self.sampled_at_bits.load(Ordering::Relaxed))
    }

    /// The latency estimate now: the EWMA of its calls, faded since the last one.
    pub fn latency_ewma(&self) -> f64 {
        let estimate = f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed));
        faded(estimate, self.since_sample())
    }

    fn observe(&self, seconds: f64) {
        let estimate = f64::from_bits(self.latency_ewma_bits.load(Ordering::Relaxed));
        let next = update(estimate, self.since_sample(), seconds);
        self.latency_ewma_bits
            .store(next.to_bits(), Ordering::Relaxed);
        self.sampled_at_bits
            .store(now_s().to_bits(), Ordering::Relaxed);
    }

    fn live_sender(&self) -> Option<SendRequest<BoxBody>> {
        let guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    pub fn ejected(&self, now: f64) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ejected(now)
    }

    pub fn eligible(&self, now: f64) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.ejected(now)
    }

    pub fn serves(&self, model: Option<&ModelKey>) -> bool {
        model.is_none_or(|m| !self.unready_models.load().contains(m))
    }

    async fn connect(&self) -> Result<SendRequest<BoxBody>, String> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(sender) = self.live_sender() {
            return Ok(sender);
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(stream)).await?,
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                handshake(TokioIo::new(stream)).await?
            }
        };
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// One HTTP/2 request to this endpoint; Err(reason) when no answer could be had from it.
    pub async fn send(
        &self,
        method: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        self.post(&method_path(method), body, deadline, traceparent)
            .await
    }

    /// A gRPC request to `path`.
    pub async fn post(
        &self,
        path: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = match self.live_sender() {
            Some(sender) => sender,
            // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is rare, and its future large;
            // inline it would be copied with every request's future.
            None => Box::pin(self.connect()).await?,
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut request = Request::post(format!("{scheme}://{}{path}", self.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            request = request.header(
                "grpc-timeout",
                grpc::format_timeout(upstream_timeout(remaining)),
            );
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| with_causes(&e))
    }
}

#[derive(Default)]
pub struct PoolStats {
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub retries_denied: AtomicU64,
    pub hedges: AtomicU64,
    pub ejections: AtomicU64,
}

pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    /// Swapped whole when DNS answers change; a call works on the set it loaded.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    connector: Option<TlsConnector>,
    /// The pool's `dns:` endpoints, when it has any.
    pub discovery: Option<crate::dns::Discovery>,
    budget: Mutex<RetryBudget>,
    /// The next turn, for `lb_policy: round_robin`.
    turn: AtomicUsize,
    pub stats: PoolStats,
}

/// A call's share of an endpoint's load: taken when the attempt starts, given back (with the
/// latency and the outcome) when the answer's body has ended.
pub struct Attempt {
    pub endpoint: Arc<Endpoint>,
    pool: Arc<Pool>,
    pub started: Instant,
    /// 1 for the first try; more after retries on other endpoints.
    pub number: u32,
    done: bool,
    /// Its span, when the RPC is traced: ends with the attempt.
    span: Option<ChildSpan>,
}

impl Attempt {
    /// `failed`: the endpoint itself failed (no connection, a broken stream, or a gateway
    /// failure status such as UNAVAILABLE), which counts towards its ejection.
    pub fn finish(mut self, failed: bool) {
        self.done = true;
        if let (true, Some(span)) = (failed, &mut self.span) {
            span.fail("the endpoint failed");
        }
        self.endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
        let now = now_s();
        if failed {
            let may_eject = self.pool.may_eject(now);
            let ejected = self
                .endpoint
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failure(now, may_eject);
            if ejected {
                self.pool.stats.ejections.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "gateway core: pool {}: ejected {} after repeated connection failures",
                    self.pool.name, self.endpoint.address
                );
            }
        } else {
            self.endpoint
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .success(now);
            self.endpoint.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
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
            match crate::dns::parse(spec) {
                Some(parsed) => names.push(parsed.map_err(|e| format!("pool '{name}': {e}"))?),
                None => addresses.push(spec.clone()),
            }
        }
        let discovery = (!names.is_empty())
            .then(|| {
                crate::dns::Discovery::new(
                    names,
                    config.dns_refresh_s,
                    config.dns_resolver.as_deref(),
                )
            })
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
        let mut endpoint = Endpoint::new(address.to_owned(), health, tls);
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
    pub fn set_addresses(&self, name: &crate::dns::DnsName, addresses: &[String]) {
        let (source, host) = (name.spec.as_str(), format!("{}:{}", name.host, name.port));
        let current = self.endpoints();
        let mut next: Vec<Arc<Endpoint>> = current
            .iter()
            .filter(|e| e.source.as_deref() != Some(source) || addresses.contains(&e.address))
            .cloned()
            .collect();
        let mut changed = next.len() != current.len();
        for address in addresses {
            let known = current
                .iter()
                .any(|e| e.source.as_deref() == Some(source) && &e.address == address);
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
            let shown: Vec<&str> = next.iter().map(|e| e.address.as_str()).collect();
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

    fn may_eject(&self, now: f64) -> bool {
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
        let endpoints = self.endpoints.load();
        if endpoints.is_empty() {
            let why = self
                .discovery
                .as_ref()
                .map(crate::dns::Discovery::unresolved)
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
        Ok(candidates[chosen].clone())
    }

    fn retry_allowed(&self, tried: usize, deadline: Option<Instant>) -> bool {
        if tried >= self.config.max_attempts as usize || tried >= self.endpoints.load().len() {
            return false;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        if !self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_retry()
        {
            self.stats.retries_denied.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn unreachable(&self, endpoint: &Endpoint, reason: &str) -> GatewayError {
        GatewayError::Unavailable(format!(
            "upstream pool '{}' is unavailable: {} unreachable ({reason})",
            self.name, endpoint.address
        ))
    }

    /// Send `payload` (one message) to an endpoint of the pool: the answer's head and its
    /// attempt, to finish once its body has ended. Connection failures are retried elsewhere.
    pub async fn send(
        self: &Arc<Self>,
        method: &str,
        payload: Bytes,
        deadline: Option<Instant>,
        model: Option<&ModelKey>,
    ) -> Result<(Response<Incoming>, Attempt), GatewayError> {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_request();
        if let Some(delay_ms) = self.config.hedge_delay_ms {
            if method == "ModelInfer" && self.endpoints.load().len() > 1 {
                let delay = Duration::from_secs_f64(delay_ms / 1000.0);
                return Box::pin(self.hedged(payload, deadline, model, delay)).await;
            }
        }
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        loop {
            let endpoint = self.pick(model, &tried)?;
            tried.push(endpoint.clone());
            match self
                .attempt(&endpoint, method, &payload, deadline, tried.len() as u32)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    if !self.retry_allowed(tried.len(), deadline) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// One request to one endpoint; a connection failure is counted against it (and mapped).
    async fn attempt(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        method: &str,
        payload: &Bytes,
        deadline: Option<Instant>,
        number: u32,
    ) -> Result<(Response<Incoming>, Attempt), GatewayError> {
        endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let mut span = ChildSpan::start(&format!("upstream {method}"), traces::CLIENT);
        if let Some(span) = &mut span {
            span.set("server.address", Value::String(endpoint.address.clone()));
            span.set("gateway.pool", Value::String(self.name.clone()));
            span.set("gateway.attempt", Value::Int(i64::from(number)));
        }
        let traceparent = span.as_ref().map(ChildSpan::traceparent);
        let attempt = Attempt {
            endpoint: endpoint.clone(),
            pool: self.clone(),
            started: Instant::now(),
            number,
            done: false,
            span,
        };
        let body = crate::body::message(payload);
        match endpoint
            .send(method, body, deadline, traceparent.as_deref())
            .await
        {
            Ok(response) => Ok((response, attempt)),
            Err(reason) => {
                if let (Some(discovery), Some(_)) = (&self.discovery, &endpoint.source) {
                    discovery.refresh.notify_one(); // the address may be gone: ask DNS again
                }
                let error = self.unreachable(endpoint, &reason);
                let mut attempt = attempt;
                if let Some(span) = &mut attempt.span {
                    span.fail(error.message());
                }
                attempt.finish(true);
                Err(error)
            }
        }
    }

    /// Hedging: when the first attempt has no answer after `delay`, a second goes to another
    /// endpoint and the first answer wins (the other is cancelled by being dropped). A hedge
    /// spends the retry budget, so a slow pool sees at most about (1 + ratio) times the traffic.
    async fn hedged(
        self: &Arc<Self>,
        payload: Bytes,
        deadline: Option<Instant>,
        model: Option<&ModelKey>,
        delay: Duration,
    ) -> Result<(Response<Incoming>, Attempt), GatewayError> {
        let first_endpoint = self.pick(model, &[])?;
        let mut first =
            std::pin::pin!(self.attempt(&first_endpoint, "ModelInfer", &payload, deadline, 1));
        tokio::select! {
            answer = &mut first => {
                return match answer {
                    Err(_) if self.retry_allowed(1, deadline) => {
                        let other = self.pick(model, std::slice::from_ref(&first_endpoint))?;
                        self.attempt(&other, "ModelInfer", &payload, deadline, 2).await
                    }
                    answer => answer,
                };
            }
            () = tokio::time::sleep(delay) => {}
        }
        if !self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_retry()
        {
            return first.await;
        }
        self.stats.hedges.fetch_add(1, Ordering::Relaxed);
        let second_endpoint = match self.pick(model, std::slice::from_ref(&first_endpoint)) {
            Ok(endpoint) => endpoint,
            Err(_) => return first.await,
        };
        let mut second =
            std::pin::pin!(self.attempt(&second_endpoint, "ModelInfer", &payload, deadline, 2));
        tokio::select! {
            answer = &mut first => match answer {
                Ok(answer) => Ok(answer),
                Err(_) => second.await,
            },
            answer = &mut second => match answer {
                Ok(answer) => Ok(answer),
                Err(_) => first.await,
            },
        }
    }

    /// A unary call whose answer the core reads itself: the answer's message, or its status.
    pub async fn call(
        self: &Arc<Self>,
        method: &str,
        payload: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Bytes, GatewayError> {
        Ok(self.call_for(method, payload, deadline, None).await?.0)
    }

    /// A unary call for `model` (its endpoints' readiness counts): the answer, and the attempts
    /// it took.
    pub async fn call_for(
        self: &Arc<Self>,
        method: &str,
        payload: Bytes,
        deadline: Option<Instant>,
        model: Option<&ModelKey>,
    ) -> Result<(Bytes, u32), GatewayError> {
        let (response, attempt) = self.send(method, payload, deadline, model).await?;
        let (endpoint, attempts) = (attempt.endpoint.clone(), attempt.number);
        let collected = collect(response).await;
        let failed = match &collected {
            Err(GatewayError::Unavailable(_)) => true,
            Err(GatewayError::Upstream { code, .. }) => code.is_gateway_failure(),
            _ => false,
        };
        attempt.finish(failed);
        let answer = collected.map_err(|e| match e {
            GatewayError::Unavailable(reason) => self.unreachable(&endpoint, &reason),
            other => other,
        })?;
        Ok((answer, attempts))
    }
}

/// A collected answer: its one message, or the status it carried (headers or trailers).
/// Err(Unavailable(reason)) when the stream broke off.
pub async fn collect(response: Response<Incoming>) -> Result<Bytes, GatewayError> {
    let (head, body) = response.into_parts();
    if let Some(status) = grpc::status_in(&head.headers) {
        status?;
        return grpc::unary_message(Bytes::new()).map_err(not_one_message);
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let Some(status) = grpc::status_in(&trailers) else {
        return Err(GatewayError::Unavailable(
            "the answer ended without a grpc-status".into(),
        ));
    };
    status?;
    grpc::unary_message(collected.to_bytes()).map_err(not_one_message)
}

fn not_one_message(e: grpc::FrameError) -> GatewayError {
    GatewayError::Upstream {
        code: Code::Internal,
        message: format!("upstream answer is not one gRPC message ({e:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(lb_policy: &str) -> Pool {
        let config = serde_json::json!({
            "name": "p", "endpoints": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
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
            .map(|_| pool.pick(None, &[]).unwrap().address.clone())
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
