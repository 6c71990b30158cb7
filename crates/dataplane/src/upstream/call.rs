//! A call to a pool: an attempt on one endpoint, retried on another after a connection failure
//! while the budget and the deadline allow, or hedged after a delay; the answer's head goes back
//! with its attempt, which is finished once the body has ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::wire::Message;

use crate::primitives::clock::now_s;
use crate::protocol::channel::{collect, Answer};
use crate::protocol::error::GatewayError;
use crate::traces::{self, otlp::Value, ChildSpan};
use crate::upstream::endpoint::{Endpoint, ModelKey};
use crate::upstream::pool::Pool;

/// How a call went: its time upstream, its retries, and the callers that shared it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallInfo {
    pub upstream: Duration,
    pub retries: u32,
    pub shared: Option<usize>,
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
    /// Whether its time counts in the endpoint's latency (a streamed request's does not: it
    /// lasts as long as its generation).
    timed: bool,
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
                    self.pool.name,
                    self.endpoint.address()
                );
            }
        } else {
            self.endpoint
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .success(now);
            if self.timed {
                self.endpoint
                    .observe(self.started.elapsed().as_secs_f64(), now);
            }
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
    pub fn unreachable(&self, endpoint: &Endpoint, reason: &str) -> GatewayError {
        GatewayError::Unavailable(format!(
            "upstream pool '{}' is unavailable: {} unreachable ({reason})",
            self.name,
            endpoint.address()
        ))
    }

    /// Send `payload` (one message) to an endpoint of the pool: the answer's head and its
    /// attempt, to finish once its body has ended. Connection failures are retried elsewhere.
    pub async fn send(
        self: &Arc<Self>,
        method: &str,
        payload: Message,
        deadline: Option<Instant>,
        model: Option<&ModelKey>,
    ) -> Result<(Answer, Attempt), GatewayError> {
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

    /// A streamed request's share of `endpoint`'s load, from now until it is finished (its last
    /// answer) or dropped.
    pub fn hold(self: &Arc<Self>, endpoint: &Arc<Endpoint>) -> Attempt {
        endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        Attempt {
            endpoint: endpoint.clone(),
            pool: self.clone(),
            started: Instant::now(),
            number: 1,
            done: false,
            timed: false,
            span: None,
        }
    }

    /// One request to one endpoint; a connection failure is counted against it (and mapped).
    async fn attempt(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        method: &str,
        payload: &Message,
        deadline: Option<Instant>,
        number: u32,
    ) -> Result<(Answer, Attempt), GatewayError> {
        endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let name = match method {
            "ModelInfer" => std::borrow::Cow::Borrowed("upstream ModelInfer"), // no format per call
            other => std::borrow::Cow::Owned(format!("upstream {other}")),
        };
        let mut span = ChildSpan::start(&name, traces::CLIENT);
        if let Some(span) = &mut span {
            span.set(
                "server.address",
                Value::String(endpoint.address().to_owned()),
            );
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
            timed: true,
            span,
        };
        match endpoint
            .channel
            .unary(method, payload, deadline, traceparent.as_deref())
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
        payload: Message,
        deadline: Option<Instant>,
        model: Option<&ModelKey>,
        delay: Duration,
    ) -> Result<(Answer, Attempt), GatewayError> {
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
        if !self.spend_budget() {
            // Counted with the refused retries: a request stuck on a dead endpoint now waits
            // for it, and its failure is one the budget allowed (reported, not silent).
            return first.await;
        }
        let second_endpoint = match self.pick(model, std::slice::from_ref(&first_endpoint)) {
            Ok(endpoint) => endpoint,
            Err(_) => return first.await,
        };
        self.stats.hedges.fetch_add(1, Ordering::Relaxed);
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
        payload: Message,
        deadline: Option<Instant>,
    ) -> Result<Bytes, GatewayError> {
        Ok(self.call_for(method, payload, deadline, None).await?.0)
    }

    /// A unary call for `model` (its endpoints' readiness counts): the answer, and the attempts
    /// it took.
    pub async fn call_for(
        self: &Arc<Self>,
        method: &str,
        payload: Message,
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
