//! The RPCs other than inference. Model-scoped ones go to the pool of the route's heaviest variant
//! (or of the version asked for), re-addressed and renamed when the variant serves another
//! upstream model; server-wide ones go to every pool, their answers merged.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_router::requested;
use prost::Message;

use crate::protocol::error::GatewayError;
use crate::protocol::messages::{Flag, NameVersion, RepositoryModelRequest, TraceSettingRequest};
use crate::protocol::wire;
use crate::state::State;

pub const SHARED_MEMORY_RPCS: [&str; 6] = [
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
];

/// The model-scoped unary RPCs, and where each request holds its model name (and version, if it
/// has one).
const MODEL_SCOPED: [(&str, u32, Option<u32>); 7] = [
    ("ModelReady", 1, Some(2)),
    ("ModelMetadata", 1, Some(2)),
    ("ModelConfig", 1, Some(2)),
    ("ModelStatistics", 1, Some(2)),
    ("RepositoryModelLoad", 2, None),
    ("RepositoryModelUnload", 2, None),
    ("TraceSetting", 2, None),
];

/// The unary RPCs about the server as a whole.
const SERVER_WIDE: [&str; 5] = [
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "RepositoryIndex",
    "LogSettings",
];

/// Where a model-scoped request holds its model name (and version, if it has one).
fn model_fields(method: &str) -> Option<(u32, Option<u32>)> {
    MODEL_SCOPED
        .into_iter()
        .find(|(name, ..)| *name == method)
        .map(|(_, model, version)| (model, version))
}

fn malformed(method: &str, error: prost::DecodeError) -> GatewayError {
    GatewayError::InvalidRequest(format!("malformed {method}Request: {error}"))
}

fn name_and_version(method: &str, payload: &Bytes) -> Result<(String, String), GatewayError> {
    match method {
        "RepositoryModelLoad" | "RepositoryModelUnload" => {
            RepositoryModelRequest::decode(payload.clone())
                .map(|r| (r.model_name, String::new()))
                .map_err(|e| malformed(method, e))
        }
        "TraceSetting" => TraceSettingRequest::decode(payload.clone())
            .map(|r| (r.model_name, String::new()))
            .map_err(|e| malformed(method, e)),
        _ => NameVersion::decode(payload.clone())
            .map(|r| (r.name, r.version))
            .map_err(|e| malformed(method, e)),
    }
}

/// Whether `unary` serves this method (anything else of the service is ModelInfer or the stream).
pub fn is_unary(method: &str) -> bool {
    unary_name(method).is_some()
}

/// `method`'s own static name when `unary` serves it.
pub fn unary_name(method: &str) -> Option<&'static str> {
    MODEL_SCOPED
        .into_iter()
        .map(|(name, ..)| name)
        .chain(SERVER_WIDE)
        .chain(SHARED_MEMORY_RPCS)
        .find(|name| *name == method)
}

pub async fn unary(
    state: &State,
    method: &str,
    payload: Bytes,
    deadline: Option<Instant>,
) -> Result<Bytes, GatewayError> {
    match method {
        "ServerLive" => Ok(Flag { value: true }.encode_to_vec().into()),
        "ServerReady" => Ok(Flag { value: state.all_pools_ready() }.encode_to_vec().into()),
        "ServerMetadata" => state.pool_order[0].call(method, payload.into(), deadline).await,
        "RepositoryIndex" | "LogSettings" => fan_out(state, method, payload, deadline).await,
        "ModelStatistics" | "ModelConfig" => {
            let answer = model_scoped(state, method, payload.clone(), deadline).await?;
            Ok(as_cached(state, method, &payload, answer))
        }
        _ if SHARED_MEMORY_RPCS.contains(&method) => Err(GatewayError::NotSupported(format!(
            "{method} is not available through the gateway: shared-memory regions live on the Triton host, \
             which the gateway may not share with you; send tensors in the request (raw_input_contents) instead"
        ))),
        _ => model_scoped(state, method, payload, deadline).await,
    }
}

async fn model_scoped(
    state: &State,
    method: &str,
    payload: Bytes,
    deadline: Option<Instant>,
) -> Result<Bytes, GatewayError> {
    let Some((name_field, version_field)) = model_fields(method) else {
        return Err(GatewayError::NotSupported(format!(
            "unknown method {method}"
        )));
    };
    let (public, version) = name_and_version(method, &payload)?;
    if public.is_empty() {
        // Statistics or trace settings of every model: ask every pool.
        return fan_out(state, method, payload, deadline).await;
    }
    let route = state.route(&public, deadline).await?;
    let variant = if version.is_empty() {
        route.heaviest().clone()
    } else {
        requested(&route, &version).into_owned()
    };
    let pool = state.pool(&variant.pool)?;
    // Re-addressed as inference is: the variant's upstream model, and the version a variant
    // named by the caller (by its name) is pinned to.
    let mut readdressed = payload.clone();
    if let Some(field) =
        version_field.filter(|_| !version.is_empty() && *variant.version != *version)
    {
        let malformed = |e: wire::WireError| {
            GatewayError::InvalidRequest(format!("malformed {method}Request: {}", e.0))
        };
        let mut edited = wire::strip(&readdressed, field).map_err(malformed)?;
        edited.extend_from_slice(&wire::string_field(field, variant.version.as_bytes()));
        readdressed = edited.freeze();
    }
    if *variant.model == *public {
        return pool.call(method, readdressed.into(), deadline).await;
    }
    let readdressed = wire::append(
        &readdressed,
        &wire::string_field(name_field, variant.model.as_bytes()),
    );
    let answer = pool.call(method, readdressed.into(), deadline).await?;
    Ok(rename(method, answer, &public))
}

/// What the gateway's cache changes in Triton's answers: its hits counted in ModelStatistics,
/// and `response_cache { enable: true }` in the ModelConfig of a route it caches.
fn as_cached(state: &State, method: &str, payload: &Bytes, answer: Bytes) -> Bytes {
    match method {
        "ModelStatistics" => {
            let hits = state.cache.hits.snapshot();
            match crate::cache::hits::fold_hits(&answer, &hits) {
                Ok(Some(folded)) => folded,
                _ => answer,
            }
        }
        "ModelConfig" => {
            let route = name_and_version(method, payload).map(|(name, _)| name);
            let cached = route.is_ok_and(|r| state.cache.policies().of(&r).enabled);
            if cached {
                crate::cache::hits::show_cached(&answer)
            } else {
                answer
            }
        }
        _ => answer,
    }
}

/// Show the caller the public model name where the server answered with the upstream one.
fn rename(method: &str, answer: Bytes, public: &str) -> Bytes {
    match method {
        "ModelMetadata" => wire::append(&answer, &wire::string_field(1, public.as_bytes())),
        "ModelConfig" => {
            let name = wire::string_field(1, public.as_bytes());
            let mut config = BytesMut::new();
            wire::put_field_header(&mut config, 1, name.len());
            config.extend_from_slice(&name);
            wire::append(&answer, &config)
        }
        _ => answer,
    }
}

/// Send to every pool; merge the answers (the first pool wins on scalars), models listed once.
async fn fan_out(
    state: &State,
    method: &str,
    payload: Bytes,
    deadline: Option<Instant>,
) -> Result<Bytes, GatewayError> {
    let calls: Vec<_> = state
        .pool_order
        .iter()
        .map(|pool| {
            let (pool, method, payload) = (pool.clone(), method.to_owned(), payload.clone());
            tokio::spawn(async move { pool.call(&method, payload.into(), deadline).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        let answer = call
            .await
            .map_err(|e| GatewayError::Internal(format!("a pool call failed: {e}")))?;
        answers.push(answer?);
    }
    if answers.len() == 1 {
        return Ok(answers.into_iter().next().unwrap_or_default());
    }
    let entries = match method {
        "RepositoryIndex" | "ModelStatistics" => Some(1),
        _ => None,
    };
    wire::merge_answers(&answers, entries).map_err(|e| GatewayError::Upstream {
        code: crate::protocol::grpc::Code::Internal,
        message: format!("a pool answered {method} with a malformed message: {}", e.0),
    })
}
