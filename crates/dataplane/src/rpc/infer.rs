//! ModelInfer: parse → route (a decision per request) → signature → validate → forward the caller's
//! bytes (re-addressed only when the variant renames the model or pins a version). The answer is
//! streamed back as it comes, with `x-gateway-variant` added to its trailers.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gateway_router::{decide, Name, Variant};
use http::{HeaderMap, Response};
use prost::Message;

use crate::admission::{Admission, Permit};
use crate::batching::merge::rows;
use crate::batching::{alone, BatchSettings};
use crate::cache::{with_id, Directives, Outcome, CACHE_CONTROL};
use crate::protocol::body::{boxed, BoxBody, Holding};
use crate::protocol::error::GatewayError;
use crate::protocol::messages::ModelInferRequest;
use crate::protocol::respond::answer;
use crate::route::retarget::retarget;
use crate::shadow::Job;
use crate::state::State;
use crate::telemetry::Record;
use crate::traces::{self, ChildSpan, INTERNAL};
use crate::upstream::CallInfo;
use crate::upstream::{Attempt, ModelKey, Pool};
use crate::validate::validate;

pub const VARIANT_KEY: &str = "x-gateway-variant";

/// A request routed and validated: what to send upstream and where.
pub struct Prepared {
    pub request: ModelInferRequest,
    pub variant: Variant,
    pub pool: Arc<Pool>,
    /// What is sent upstream: the caller's bytes re-addressed to the variant.
    pub payload: crate::protocol::wire::Message,
    /// The caller's bytes as they came (shadow copies are re-addressed from them).
    pub original: Bytes,
    pub route_model: Name,
    pub shadows: Vec<(Variant, u32)>,
    /// From the model's signature: what the cache needs to know.
    pub decoupled: bool,
    pub rows: u64,
    pub max_batch_size: i64,
}

pub fn parse(payload: &Bytes) -> Result<ModelInferRequest, GatewayError> {
    ModelInferRequest::decode(payload.clone())
        .map_err(|e| GatewayError::InvalidRequest(format!("malformed ModelInferRequest: {e}")))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn prepare(
    state: &State,
    payload: Bytes,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<Prepared, GatewayError> {
    let request = parse(&payload)?;
    let routing = ChildSpan::start("route", INTERNAL);
    let route = state.route(&request.model_name, deadline).await?;
    let decision = decide(
        &route,
        |name| header(headers, name),
        &request.model_version,
        fastrand::f64,
    );
    let shadows = decision
        .shadows
        .iter()
        .map(|(variant, policy)| ((*variant).clone(), policy.max_inflight))
        .collect();
    // A version the caller asked for that no variant names is labelled only once the upstream
    // knew it (below): callers must not be able to mint metric series with made-up versions.
    let named = matches!(decision.primary, std::borrow::Cow::Borrowed(_));
    let variant = decision.primary.into_owned();
    record.model = route.model.clone();
    record.pool = variant.pool.clone();
    record.infer_id.clone_from(&request.id);
    record.predict = state.telemetry.predicts();
    if named {
        record.variant = variant.name.clone();
        record.version = variant.version.clone();
    }
    drop(routing);
    let pool = state.pool(&variant.pool)?.clone();
    let mut validating = ChildSpan::start("validate", INTERNAL);
    let signature = state
        .signatures
        .get(&pool, &variant.model, &variant.version, deadline)
        .await?;
    if !named {
        record.variant = variant.name.clone();
        record.version = variant.version.clone();
    }
    if let Err(error) = validate(&request, &signature) {
        if let Some(span) = &mut validating {
            span.fail(error.message());
        }
        return Err(error);
    }
    drop(validating);
    let original = payload.clone();
    let payload = retarget(&payload, &request, &variant)?;
    // Triton counts each row of a batched request as an inference.
    let rows = match signature.max_batch_size > 0 {
        true => rows(&request).unwrap_or(1),
        false => 1,
    };
    Ok(Prepared {
        decoupled: signature.decoupled,
        max_batch_size: signature.max_batch_size,
        rows,
        original,
        route_model: route.model.clone(),
        shadows,
        request,
        variant,
        pool,
        payload,
    })
}

/// What a request asks of its pool's admission control: a slot, at its priority, for its tenant.
pub struct Slot {
    admission: Arc<Admission>,
    priority: usize,
    tenant: String,
}

impl Slot {
    /// None when the pool has no limit.
    pub fn of(state: &State, prepared: &Prepared, headers: &HeaderMap) -> Option<Slot> {
        let admission = state.admissions.get(&prepared.pool.name)?.clone();
        let settings = &state.config.admission;
        let priority = settings.priority(
            header(headers, &settings.priority_header),
            &prepared.request,
        );
        let tenant = header(headers, &settings.tenant_header)
            .unwrap_or("")
            .to_owned();
        Some(Slot {
            admission,
            priority,
            tenant,
        })
    }

    pub async fn take(
        self,
        deadline: Option<Instant>,
    ) -> Result<(Permit, std::time::Duration), GatewayError> {
        self.admission
            .slot(self.priority, &self.tenant, deadline)
            .await
    }
}

/// The upstream call of one request: through its pool's admission control, and merged with
/// others' when its route batches.
struct Unary {
    state: Arc<State>,
    pool: Arc<Pool>,
    model: ModelKey,
    slot: Option<Slot>,
    batch: Option<BatchSettings>,
    deadline: Option<Instant>,
}

impl Unary {
    /// The answer streamed back as it comes (its head, and its attempt to finish at its end);
    /// the pool's slot is held until then.
    async fn stream(
        self,
        payload: crate::protocol::wire::Message,
        record: &mut Record,
    ) -> Result<(Response<BoxBody>, Attempt), GatewayError> {
        let permit = match self.slot {
            None => None,
            Some(slot) => {
                let (permit, waited) = slot.take(self.deadline).await?;
                record.queue_wait = waited;
                Some(permit)
            }
        };
        let (response, attempt) = self
            .pool
            .send("ModelInfer", payload, self.deadline, Some(&self.model))
            .await?;
        record.retries = attempt.number - 1;
        let (mut head, body) = response.into_parts();
        crate::protocol::respond::forwarded(&mut head.headers);
        let body = match permit {
            None => boxed(body),
            Some(permit) => boxed(Holding::new(body, permit)),
        };
        Ok((Response::from_parts(head, body), attempt))
    }

    /// The whole answer, and how the call went.
    async fn call(
        self,
        request: ModelInferRequest,
        payload: crate::protocol::wire::Message,
    ) -> Result<(Bytes, CallInfo), GatewayError> {
        let _permit = match self.slot {
            None => None,
            Some(slot) => Some(slot.take(self.deadline).await?.0),
        };
        match self.batch {
            Some(settings) => {
                let batchers = &self.state.batchers;
                batchers
                    .call(
                        &self.pool,
                        self.model,
                        request,
                        payload.to_bytes(),
                        settings,
                        self.deadline,
                    )
                    .await
            }
            None => alone(&self.pool, payload, self.deadline, &self.model).await,
        }
    }
}

/// Serve a ModelInfer: from the cache when the route caches it, else forwarded upstream with
/// the answer's head and body streamed back as they come. The answer, the attempt (of a
/// streamed answer) and the shadow copies to make.
pub async fn model_infer(
    state: &Arc<State>,
    payload: Bytes,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<(Response<BoxBody>, Option<Attempt>, Option<Box<Job>>), GatewayError> {
    let prepared = prepare(state, payload, headers, deadline, record).await?;
    let model = (
        prepared.variant.model.clone(),
        prepared.variant.version.clone(),
    );
    let policy =
        state
            .cache
            .policy_for(&prepared.route_model, prepared.decoupled, &prepared.request);
    let slot = Slot::of(state, &prepared, headers);
    let batch = state.batchers.settings(
        &prepared.route_model,
        prepared.max_batch_size,
        prepared.decoupled,
    );
    let unary = Unary {
        state: state.clone(),
        pool: prepared.pool.clone(),
        model,
        slot,
        batch,
        deadline,
    };
    let (response, attempt) = match (policy, batch) {
        (None, None) => {
            record.cache = Some(Outcome::Bypass);
            let (response, attempt) = unary.stream(prepared.payload.clone(), record).await?;
            (response, Some(attempt))
        }
        (None, Some(_)) => {
            record.cache = Some(Outcome::Bypass);
            // Boxed, as the cached path below: a large future inline would be copied with every
            // request's, the streamed path's included.
            let (message, info) =
                Box::pin(unary.call(prepared.request.clone(), prepared.payload.clone())).await?;
            record.took(info);
            (answer(&message), None)
        }
        (Some(policy), _) => {
            let directives = Directives::parse(header(headers, CACHE_CONTROL));
            let (request, payload) = (prepared.request.clone(), prepared.payload.clone());
            // Identical misses share this call, and its one slot of the pool.
            let call = move || unary.call(request, payload);
            let answer = Box::pin(state.cache.fetch(
                policy,
                &prepared.route_model,
                &prepared.variant,
                &prepared.request,
                directives,
                prepared.rows,
                call,
            ))
            .await?;
            record.cache = Some(answer.outcome);
            if let Some(info) = answer.call {
                record.took(info);
            }
            let message = with_id(&answer.message, &prepared.request.id);
            (crate::protocol::respond::answer(&message), None)
        }
    };
    // Boxed: rare, and large inline in the result every layer above moves.
    let job = (!prepared.shadows.is_empty()).then(|| {
        Box::new(Job {
            trace: traces::current(),
            model: prepared.route_model.to_string(),
            primary: prepared.variant.name.to_string(),
            request_id: record.request_id.clone(),
            request: prepared.request,
            payload: prepared.original,
            shadows: prepared.shadows,
        })
    });
    Ok((response, attempt, job))
}
