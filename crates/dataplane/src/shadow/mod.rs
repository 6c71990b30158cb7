//! Shadow traffic: copies of answered requests sent to other variants, outputs compared.
//!
//! A copy starts only after the primary has its whole answer, never delays or fails it, and is
//! dropped (and counted) when the shadow variant already has `max_inflight` copies under way.
//! Comparisons land in counters per (model, primary, shadow), which `gatewayctl shadow-stats`
//! reads, and (sampled, when not byte-identical) in the discrepancy log, written by a thread.

pub mod compare;
pub mod streamed;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_router::Variant;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::primitives::jsonlog::{JsonLog, Rotation};
use crate::protocol::error::GatewayError;
use crate::protocol::messages::ModelInferRequest;
use crate::route::retarget::retarget;
use crate::route::signatures::Signatures;
use crate::shadow::compare::{as_f64, compare_responses, Comparison, InferResponse};
use crate::traces::otlp::{attribute, Value};
use crate::traces::{self, Trace, Tracer};
use crate::upstream::Pool;
use crate::validate::validate;

/// Upper bounds of the absolute-error histogram; infinity is the last.
pub const ABS_ERROR_BUCKETS: [f64; 9] =
    [0.0, 1e-9, 1e-6, 1e-4, 1e-2, 1e-1, 1.0, 10.0, f64::INFINITY];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShadowConfig {
    pub timeout_s: f64,
    pub log_path: Option<PathBuf>,
    pub log_sample: f64,
    pub log_max_bytes: u64,
    pub log_tensors: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
    pub compared: u64,
    pub exact_matches: u64,
    pub argmax_compared: u64,
    pub argmax_disagreements: u64,
    /// Pairs with an output that could not be compared number by number (shape, datatype,
    /// missing, differing BYTES or non-finite values): counted in the last error bucket.
    pub mismatches: u64,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    pub abs_error_buckets: Vec<u64>,
    /// Of the compared: streamed requests (their answers concatenated), those whose first
    /// `streamed::FIRST_K` answers agreed exactly, and the time to the first answer of both
    /// (sums, over the pairs that had one).
    pub streams: u64,
    pub first_k_agreements: u64,
    pub first_response_pairs: u64,
    pub primary_first_response_s: f64,
    pub shadow_first_response_s: f64,
}

impl Counters {
    fn record(&mut self, comparison: &Comparison) {
        if self.abs_error_buckets.is_empty() {
            self.abs_error_buckets = vec![0; ABS_ERROR_BUCKETS.len()];
        }
        self.compared += 1;
        self.exact_matches += u64::from(comparison.exact());
        if comparison.has_class_scores() {
            self.argmax_compared += 1;
            self.argmax_disagreements += u64::from(comparison.argmax_disagrees());
        }
        let error = comparison.max_abs_error();
        self.max_abs_error = self.max_abs_error.max(error);
        self.max_rel_error = self.max_rel_error.max(comparison.max_rel_error());
        let mismatched = comparison.mismatched();
        self.mismatches += u64::from(mismatched);
        let last = ABS_ERROR_BUCKETS.len() - 1;
        let bucket = if mismatched {
            last
        } else {
            ABS_ERROR_BUCKETS
                .iter()
                .position(|bound| error <= *bound)
                .unwrap_or(last)
        };
        self.abs_error_buckets[bucket] += 1;
    }
}

/// A primary's request, kept until its answer is complete, with the copies it should get.
pub struct Job {
    /// The primary's trace (when sampled): each copy's own trace links to it.
    pub trace: Option<Arc<Trace>>,
    pub model: String,
    pub primary: String,
    pub request_id: String,
    pub request: ModelInferRequest,
    pub payload: Bytes,
    pub shadows: Vec<(Variant, u32)>, // variant, max_inflight
}

type Key = (String, String, String); // model, primary, shadow

/// A shadow copy's own span ("shadow ModelInfer"), linked to the primary's; ends with the copy.
struct ShadowSpan {
    own: Arc<Trace>,
    primary: Arc<Trace>,
    model: String,
    variant: String,
}

impl Drop for ShadowSpan {
    fn drop(&mut self) {
        let attributes = vec![
            attribute(
                "gateway.model",
                Value::String(std::mem::take(&mut self.model)),
            ),
            attribute(
                "gateway.variant",
                Value::String(std::mem::take(&mut self.variant)),
            ),
        ];
        let links = [&*self.primary];
        Tracer::finish(
            &self.own,
            "shadow ModelInfer",
            traces::INTERNAL,
            attributes,
            &links,
            None,
        );
    }
}

pub struct Shadows {
    timeout: Duration,
    counters: Mutex<HashMap<Key, Counters>>,
    inflight: Mutex<HashMap<(String, String), u32>>,
    log: Option<(JsonLog<serde_json::Value>, f64, bool)>, // writer, sample, tensors
}

struct Slot<'a> {
    shadows: &'a Shadows,
    key: (String, String),
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .shadows
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = inflight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
    }
}

/// A tensor for the log: nested lists in its shape, or hex for BYTES.
fn tensor_json(datatype: &str, shape: &[i64], raw: &[u8]) -> serde_json::Value {
    let Some(values) = as_f64(datatype, raw) else {
        return serde_json::Value::String(raw.iter().map(|b| format!("{b:02x}")).collect());
    };
    fn nest(values: &[f64], shape: &[i64]) -> serde_json::Value {
        match shape.split_first() {
            None => values
                .first()
                .map_or(serde_json::Value::Null, |v| serde_json::json!(v)),
            Some((_, [])) => serde_json::json!(values),
            Some((dim, rest)) => {
                let width = values.len() / (*dim).max(1) as usize;
                serde_json::Value::Array(
                    values.chunks(width.max(1)).map(|c| nest(c, rest)).collect(),
                )
            }
        }
    }
    nest(&values, shape)
}

fn outputs_json(response: &Bytes) -> serde_json::Value {
    let decoded = InferResponse::decode(response.clone()).unwrap_or_default();
    let map: serde_json::Map<String, serde_json::Value> = decoded
        .outputs
        .iter()
        .zip(&decoded.raw_output_contents)
        .map(|(t, raw)| (t.name.clone(), tensor_json(&t.datatype, &t.shape, raw)))
        .collect();
    serde_json::Value::Object(map)
}

/// What a copy needs of the gateway that holds the shadows (its state implements it), so this
/// module needs nothing of that state.
pub trait Gateway: Send + Sync + 'static {
    fn shadows(&self) -> &Shadows;
    fn tracer(&self) -> &Tracer;
    fn pool(&self, name: &str) -> Result<&Arc<Pool>, GatewayError>;
    fn signatures(&self) -> &Signatures;
}

impl Shadows {
    pub fn new(config: &ShadowConfig) -> std::io::Result<Shadows> {
        let log = match &config.log_path {
            Some(path) => {
                let rotation = Rotation {
                    max_bytes: config.log_max_bytes,
                    backups: 1,
                };
                let log = JsonLog::open(
                    &path.to_string_lossy(),
                    Some(rotation),
                    4096,
                    "gateway-discrepancies",
                )?;
                Some((log, config.log_sample, config.log_tensors))
            }
            None => None,
        };
        Ok(Shadows {
            timeout: Duration::from_secs_f64(config.timeout_s),
            counters: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            log,
        })
    }

    fn with_counters(&self, key: &Key, change: impl FnOnce(&mut Counters)) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        change(counters.entry(key.clone()).or_default());
    }

    /// One more copy to `variant` (counted as sent; its slot's key, for the `Slot` that gives it
    /// back), or None when it has `max_inflight` under way (counted as dropped); and the
    /// counters' key.
    fn admit(
        &self,
        job: &Job,
        variant: &Variant,
        max_inflight: u32,
    ) -> Option<(Key, (String, String))> {
        let key = (
            job.model.clone(),
            job.primary.clone(),
            variant.name.to_string(),
        );
        let slot_key = (job.model.clone(), variant.name.to_string());
        let admitted = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let count = inflight.entry(slot_key.clone()).or_default();
            (*count < max_inflight).then(|| *count += 1).is_some()
        };
        if !admitted {
            self.with_counters(&key, |c| c.dropped += 1);
            return None;
        }
        self.with_counters(&key, |c| c.sent += 1);
        Some((key, slot_key))
    }

    /// Start the copies of an answered request (`response`: the primary's message).
    pub fn submit<G: Gateway>(state: &Arc<G>, job: Job, response: Bytes) {
        let job = Arc::new(job);
        for (variant, max_inflight) in &job.shadows {
            let Some((key, slot)) = state.shadows().admit(&job, variant, *max_inflight) else {
                continue;
            };
            let (state, job, variant, response) = (
                state.clone(),
                job.clone(),
                variant.clone(),
                response.clone(),
            );
            let linked = job.trace.as_ref().map(|t| state.tracer().linked(t));
            tokio::spawn(async move {
                let _span = linked
                    .as_ref()
                    .zip(job.trace.as_ref())
                    .map(|(own, primary)| ShadowSpan {
                        own: own.clone(),
                        primary: primary.clone(),
                        model: job.model.clone(),
                        variant: variant.name.to_string(),
                    });
                let shadows = state.shadows();
                let _slot = Slot { shadows, key: slot };
                match traces::within(linked, copy(&*state, &job, &variant)).await {
                    Ok(answer) => {
                        let comparison = compare_responses(&response, &answer);
                        shadows.with_counters(&key, |c| c.record(&comparison));
                        shadows.log(&job, &variant, &comparison, &response, &answer);
                    }
                    Err(_) => shadows.with_counters(&key, |c| c.failed += 1),
                }
            });
        }
    }

    fn log(
        &self,
        job: &Job,
        variant: &Variant,
        comparison: &Comparison,
        primary: &Bytes,
        shadow: &Bytes,
    ) {
        let Some((writer, sample, tensors)) = &self.log else {
            return;
        };
        if comparison.exact() || fastrand::f64() >= *sample {
            return;
        }
        let per_tensor: serde_json::Map<String, serde_json::Value> = comparison
            .tensors
            .iter()
            .map(|t| {
                let mut entry = serde_json::json!({
                    "exact": t.exact, "max_abs_error": t.max_abs_error, "mismatch": t.mismatch,
                    "max_rel_error": t.max_rel_error, "argmax_agreement": t.argmax_agreement,
                });
                if !t.note.is_empty() {
                    entry["note"] = serde_json::json!(t.note);
                }
                (t.name.clone(), entry)
            })
            .collect();
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let request_id = if job.request.id.is_empty() {
            &job.request_id
        } else {
            &job.request.id
        };
        let mut entry = serde_json::json!({
            "time": time, "request_id": request_id, "model": job.model, "primary": job.primary,
            "shadow": variant.name, "argmax_disagrees": comparison.argmax_disagrees(),
            "max_abs_error": comparison.max_abs_error(), "mismatch": comparison.mismatched(),
            "tensors": per_tensor,
        });
        if *tensors {
            entry["primary_outputs"] = outputs_json(primary);
            entry["shadow_outputs"] = outputs_json(shadow);
        }
        writer.write(entry); // a full log queue drops the line
    }

    /// Counters per (model, primary, shadow), sorted, for one model or all ("").
    pub fn snapshot(&self, model: &str) -> Vec<serde_json::Value> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&Key, &Counters)> = counters
            .iter()
            .filter(|(k, _)| model.is_empty() || k.0 == model)
            .collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows.into_iter()
            .map(|((model, primary, shadow), c)| {
                let mut c = c.clone();
                if c.abs_error_buckets.is_empty() {
                    c.abs_error_buckets = vec![0; ABS_ERROR_BUCKETS.len()];
                }
                serde_json::json!({"model": model, "primary": primary, "variant": shadow, "counters": c})
            })
            .collect()
    }
}

/// A copy of `job` for `variant`, ready to send: its pool, the request re-addressed to the
/// variant (checked against the variant's signature), its deadline, and whether the variant's
/// model is decoupled.
struct Copy {
    pool: Arc<Pool>,
    payload: crate::protocol::wire::Message,
    deadline: Option<Instant>,
    decoupled: bool,
}

impl Copy {
    async fn of<G: Gateway>(state: &G, job: &Job, variant: &Variant) -> Result<Copy, GatewayError> {
        let deadline = Some(Instant::now() + state.shadows().timeout);
        let pool = state.pool(&variant.pool)?.clone();
        let signature = state
            .signatures()
            .get(&pool, &variant.model, &variant.version, deadline)
            .await?;
        validate(&job.request, &signature)?;
        let payload = retarget(&job.payload, &job.request, variant)?;
        Ok(Copy {
            pool,
            payload,
            deadline,
            decoupled: signature.decoupled,
        })
    }
}

async fn copy<G: Gateway>(state: &G, job: &Job, variant: &Variant) -> Result<Bytes, GatewayError> {
    let copy = Copy::of(state, job, variant).await?;
    copy.pool
        .call("ModelInfer", copy.payload, copy.deadline)
        .await
}
