//! ModelInfer: parse → route (a decision per request) → signature → validate → forward the caller's
//! bytes (re-addressed only when the variant renames the model or pins a version). The answer is
//! streamed back as it comes, with `x-gateway-variant` added to its trailers.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gateway_router::{decide, Variant};
use http::{HeaderMap, Response};
use prost::Message;

use crate::body::{boxed, BoxBody};
use crate::error::GatewayError;
use crate::messages::ModelInferRequest;
use crate::shadow::Job;
use crate::state::State;
use crate::telemetry::Record;
use crate::upstream::{Attempt, Pool};
use crate::validate::validate;
use crate::wire;

pub const VARIANT_KEY: &str = "x-gateway-variant";

/// A request routed and validated: what to send upstream and where.
pub struct Prepared {
    pub request: ModelInferRequest,
    pub variant: Variant,
    pub pool: Arc<Pool>,
    pub payload: Bytes,
    /// The caller's bytes as they came (shadow copies are re-addressed from them).
    pub original: Bytes,
    pub route_model: String,
    pub shadows: Vec<(Variant, u32)>,
}

pub fn parse(payload: &Bytes) -> Result<ModelInferRequest, GatewayError> {
    ModelInferRequest::decode(payload.clone())
        .map_err(|e| GatewayError::InvalidRequest(format!("malformed ModelInferRequest: {e}")))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The caller's bytes re-addressed to the variant: appended fields override, and only clearing a
/// pinned version (which appending cannot do) walks the message once.
pub fn retarget(
    payload: &Bytes,
    request: &ModelInferRequest,
    variant: &Variant,
) -> Result<Bytes, GatewayError> {
    let malformed = |e: wire::WireError| {
        GatewayError::InvalidRequest(format!("malformed ModelInferRequest: {}", e.0))
    };
    if variant.version.is_empty() && !request.model_version.is_empty() {
        let mut stripped = wire::strip(payload, 2).map_err(malformed)?;
        if variant.model != request.model_name {
            stripped.extend_from_slice(&wire::string_field(1, variant.model.as_bytes()));
        }
        return Ok(stripped.freeze());
    }
    let mut suffix = bytes::BytesMut::new();
    if variant.model != request.model_name {
        suffix.extend_from_slice(&wire::string_field(1, variant.model.as_bytes()));
    }
    if variant.version != request.model_version {
        suffix.extend_from_slice(&wire::string_field(2, variant.version.as_bytes()));
    }
    if suffix.is_empty() {
        return Ok(payload.clone());
    }
    Ok(wire::append(payload, &suffix))
}

pub async fn prepare(
    state: &State,
    payload: Bytes,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<Prepared, GatewayError> {
    let request = parse(&payload)?;
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
    record.model.clone_from(&route.model);
    record.pool.clone_from(&variant.pool);
    record.infer_id.clone_from(&request.id);
    record.predict = state.telemetry.predicts();
    if named {
        record.variant.clone_from(&variant.name);
        record.version.clone_from(&variant.version);
    }
    let pool = state.pool(&variant.pool)?.clone();
    let signature = state
        .signatures
        .get(&pool, &variant.model, &variant.version, deadline)
        .await?;
    if !named {
        record.variant.clone_from(&variant.name);
        record.version.clone_from(&variant.version);
    }
    validate(&request, &signature)?;
    let original = payload.clone();
    let payload = retarget(&payload, &request, &variant)?;
    Ok(Prepared {
        original,
        route_model: route.model.clone(),
        shadows,
        request,
        variant,
        pool,
        payload,
    })
}

/// Forward a ModelInfer upstream: the answer's head and body as they come, and its attempt.
pub async fn model_infer(
    state: &State,
    payload: Bytes,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<(Response<BoxBody>, Attempt, Option<Job>), GatewayError> {
    let prepared = prepare(state, payload, headers, deadline, record).await?;
    let model = (
        prepared.variant.model.clone(),
        prepared.variant.version.clone(),
    );
    let (response, attempt) = prepared
        .pool
        .send("ModelInfer", prepared.payload, deadline, Some(&model))
        .await?;
    record.retries = attempt.number - 1;
    let (mut head, body) = response.into_parts();
    head.headers.remove("content-length");
    let job = (!prepared.shadows.is_empty()).then(|| Job {
        model: prepared.route_model,
        primary: prepared.variant.name.clone(),
        request_id: record.request_id.clone(),
        request: prepared.request,
        payload: prepared.original,
        shadows: prepared.shadows,
    });
    Ok((Response::from_parts(head, boxed(body)), attempt, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(model: &str, version: &str) -> Variant {
        Variant {
            name: "v".into(),
            pool: "p".into(),
            model: model.into(),
            version: version.into(),
            weight: 1,
        }
    }

    #[test]
    fn retargeted_requests_name_the_variants_model_and_version() {
        let request = ModelInferRequest {
            model_name: "public".into(),
            model_version: "3".into(),
            ..Default::default()
        };
        let payload = Bytes::from(request.encode_to_vec());
        let decoded = |b: Bytes| ModelInferRequest::decode(b).unwrap();
        let same = retarget(&payload, &request, &variant("public", "3")).unwrap();
        assert_eq!(same, payload);
        let moved = decoded(retarget(&payload, &request, &variant("upstream", "5")).unwrap());
        assert_eq!(
            (moved.model_name.as_str(), moved.model_version.as_str()),
            ("upstream", "5")
        );
        let cleared = decoded(retarget(&payload, &request, &variant("upstream", "")).unwrap());
        assert_eq!(
            (cleared.model_name.as_str(), cleared.model_version.as_str()),
            ("upstream", "")
        );
    }
}
