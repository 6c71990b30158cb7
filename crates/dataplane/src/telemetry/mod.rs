//! What the core records of each RPC once it has ended: counters and latency histograms (read by
//! the control plane's Prometheus collector at scrape time, `gateway.serving.metrics`), the access log (JSON lines written by a thread of its own), and the observation
//! stream the control plane pulls. The log and the stream are bounded: when they fall behind,
//! records are dropped and counted, never waited for.

pub mod prediction;
mod series;
pub mod streamed;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::primitives::events::Events;
use crate::primitives::histogram::{Histogram, LATENCY_BUCKETS};
use crate::primitives::jsonlog::{JsonLog, Rotation};
use crate::protocol::grpc::Code;
use crate::telemetry::prediction::{summarize, Prediction};
use crate::telemetry::series::{Labelled, Series};

/// The RPC's server span ends, with what the record knows.
fn end_span(trace: &crate::traces::Trace, record: &Record, code: Code) {
    use crate::traces::otlp::{attribute, Value};
    let text = |s: &str| Value::String(s.to_owned());
    let attributes = vec![
        attribute("rpc.system", text("grpc")),
        attribute("rpc.service", text(record.service)),
        attribute("rpc.method", text(record.method)),
        attribute("gateway.request_id", text(&record.request_id)),
        attribute("rpc.grpc.status_code", text(code.name())),
        attribute("gateway.model", text(&record.model)),
        attribute("gateway.variant", text(&record.variant)),
        attribute(
            "gateway.cache",
            text(record.cache.map_or("", crate::cache::Outcome::name)),
        ),
        attribute(
            "gateway.queue_wait_ms",
            Value::Double(record.queue_wait.as_secs_f64() * 1000.0),
        ),
        attribute("gateway.retries", Value::Int(i64::from(record.retries))),
    ];
    let name = format!("{}/{}", record.service, record.method);
    let error = (code != Code::Ok).then(|| code.name().to_owned());
    crate::traces::Tracer::finish(trace, &name, crate::traces::SERVER, attributes, &[], error);
}

/// One RPC as it goes: filled in by the stages that know each part.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The RPC's static name ("unknown" for a path the gateway does not serve).
    pub method: &'static str,
    pub request_id: String,
    pub started: Option<Instant>,
    pub bytes_in: u64,
    /// The route table's names, shared with it.
    pub model: Arc<str>,
    pub variant: Arc<str>,
    pub version: Arc<str>,
    pub pool: Arc<str>,
    pub upstream: Duration,
    pub retries: u32,
    /// Drawn for the payload log / the observation's tensors; then the request's bytes are kept
    /// until the answer is whole.
    pub sample_payload: bool,
    pub sample_tensors: bool,
    pub sampled_request: Option<Bytes>,
    /// The caller's `ModelInferRequest.id` (the join key for ground truth, before `request_id`).
    pub infer_id: String,
    /// The answer is kept until it is whole, to be summarized for the observation.
    pub predict: bool,
    /// How the response cache answered (ModelInfer only).
    pub cache: Option<crate::cache::Outcome>,
    /// Time spent in the pool's admission queue.
    pub queue_wait: Duration,
    /// Callers that shared the upstream call, when micro-batching served it.
    pub batch: Option<usize>,
    /// The RPC's trace, when sampled; `service` names its server span with `method`.
    pub trace: Option<Arc<crate::traces::Trace>>,
    pub service: &'static str,
}

impl Record {
    /// What the upstream call of a whole answer tells this RPC's record.
    pub fn took(&mut self, call: crate::upstream::CallInfo) {
        self.upstream = call.upstream;
        self.retries = call.retries;
        self.batch = call.shared;
    }
}

#[derive(Serialize, Default)]
struct AccessEntry {
    time: f64,
    request_id: String,
    trace_id: String,
    method: String,
    model: String,
    variant: String,
    code: &'static str,
    latency_ms: f64,
    cache: Option<&'static str>,
    queue_wait_ms: f64,
    retries: u32,
    bytes_in: u64,
    bytes_out: u64,
    /// A request of a stream (`method` ModelStreamInfer/request): how it ended, its time to
    /// its first answer, and its answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_response_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    responses: Option<u64>,
}

/// A compact per-request record for the control plane (rollouts, feedback, drift).
#[derive(Serialize)]
pub struct Observation<'a> {
    pub kind: &'static str,
    pub time: f64,
    pub request_id: &'a str,
    pub method: &'a str,
    pub model: &'a str,
    pub variant: &'a str,
    pub version: &'a str,
    pub code: &'static str,
    pub latency_ms: f64,
    /// The caller's ModelInferRequest.id, when it gave one.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// For a sampled fraction: the serialized request and answer, base64 (tensors included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

#[derive(Serialize)]
struct PayloadEntry {
    time: f64,
    request_id: String,
    model: String,
    variant: String,
    code: &'static str,
    request: String,  // base64 of the serialized request
    response: String, // base64 of the serialized answer
}

/// `telemetry.payload_log`: a sampled log of whole requests and answers, for audit and replay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PayloadLogConfig {
    pub path: String,
    pub fraction: f64,
    pub max_bytes: u64,
    pub backups: u32,
}

pub struct Telemetry {
    series: Mutex<Series>,
    access: Option<JsonLog<AccessEntry>>,
    payloads: Option<(JsonLog<PayloadEntry>, f64)>,
    observations: Option<Arc<Events>>,
    tensor_fraction: f64,
    predictions: Option<Option<String>>, // on, with the output to summarize (none: the first float one)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

impl Telemetry {
    /// `tensor_fraction`: the share of observations that carry the request and the answer.
    pub fn new(
        access_log: Option<&str>,
        payload_log: Option<&PayloadLogConfig>,
        observations: Option<Arc<Events>>,
        tensor_fraction: f64,
    ) -> Result<Telemetry, String> {
        let access = access_log
            .map(|path| JsonLog::open(path, None, 65_536, "gateway-access-log"))
            .transpose()
            .map_err(|e| format!("telemetry.access_log: cannot open it: {e}"))?;
        let payloads = match payload_log {
            None => None,
            Some(config) => {
                let rotation = Rotation {
                    max_bytes: config.max_bytes,
                    backups: config.backups,
                };
                let log = JsonLog::open(&config.path, Some(rotation), 1024, "gateway-payload-log")
                    .map_err(|e| format!("telemetry.payload_log.path: cannot open it: {e}"))?;
                Some((log, config.fraction))
            }
        };
        Ok(Telemetry {
            series: Mutex::new(Series::default()),
            access,
            payloads,
            observations,
            tensor_fraction,
            predictions: None,
        })
    }

    /// With `on` (and an observation stream), ModelInfer answers are summarized for it.
    #[must_use]
    pub fn with_predictions(mut self, on: bool, output: Option<String>) -> Telemetry {
        self.predictions = (on && self.observations.is_some()).then_some(output);
        self
    }

    /// Whether this ModelInfer's answer is kept to be summarized.
    pub fn predicts(&self) -> bool {
        self.predictions.is_some()
    }

    /// The summary of an answer, when predictions are on.
    pub fn summarize(&self, answer: &[u8]) -> Option<Prediction> {
        self.predictions
            .as_ref()
            .and_then(|output| summarize(answer, output.as_deref()))
    }

    /// Whether this RPC's observation carries its tensors (a draw per RPC).
    pub fn sample_tensors(&self) -> bool {
        self.observations.is_some()
            && self.tensor_fraction > 0.0
            && fastrand::f64() < self.tensor_fraction
    }

    /// Whether this RPC's request and answer go to the payload log (a draw per RPC).
    pub fn sample_payload(&self) -> bool {
        self.payloads
            .as_ref()
            .is_some_and(|(_, fraction)| fastrand::f64() < *fraction)
    }

    /// The sampled RPC's request and answer (serialized messages).
    pub fn log_payload(&self, record: &Record, code: Code, request: &[u8], response: &[u8]) {
        let Some((log, _)) = &self.payloads else {
            return;
        };
        let encode = base64;
        log.write(PayloadEntry {
            time: unix_time(),
            request_id: record.request_id.clone(),
            model: record.model.to_string(),
            variant: record.variant.to_string(),
            code: code.name(),
            request: encode(request),
            response: encode(response),
        });
    }

    /// The RPC has ended with `code` after sending `bytes_out` bytes of answer; `tensors`: its
    /// request and answer, when drawn for the observation stream.
    pub fn end(
        &self,
        record: &Record,
        code: Code,
        bytes_out: u64,
        tensors: Option<(&[u8], &[u8])>,
        prediction: Option<Prediction>,
    ) {
        let elapsed = record.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        if let Some(trace) = &record.trace {
            end_span(trace, record, code);
        }
        {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            let (method, model, variant) = (record.method, &*record.model, &*record.variant);
            series.calls.update([method, model, variant], |calls| {
                calls.codes.count(code);
                calls.durations.observe(elapsed);
            });
            // The variant comes from the route table (never from the caller), so it is bounded.
            if method == "ModelInfer" && !variant.is_empty() {
                series
                    .variants
                    .update([model, variant], |h| h.observe(elapsed));
            }
            if let Some(outcome) = record.cache {
                series.cache.update([model, outcome.name()], |n| *n += 1);
            }
            if !record.upstream.is_zero() {
                let upstream = record.upstream.as_secs_f64();
                series
                    .upstream
                    .update([&*record.pool, model, variant], |h| h.observe(upstream));
            }
        }
        if self.access.is_none() && self.observations.is_none() {
            return;
        }
        let now = unix_time();
        if let Some(access) = &self.access {
            let entry = AccessEntry {
                time: now,
                request_id: record.request_id.clone(),
                trace_id: record
                    .trace
                    .as_ref()
                    .map(|t| crate::traces::context::hex_id(&t.trace_id))
                    .unwrap_or_default(),
                method: record.method.into(),
                model: record.model.to_string(),
                variant: record.variant.to_string(),
                code: code.name(),
                latency_ms: round3(elapsed * 1000.0),
                cache: record.cache.map(crate::cache::Outcome::name),
                queue_wait_ms: round3(record.queue_wait.as_secs_f64() * 1000.0),
                retries: record.retries,
                bytes_in: record.bytes_in,
                bytes_out,
                ..AccessEntry::default()
            };
            access.write(entry);
        }
        if let Some(observations) = &self.observations {
            let observation = Observation {
                kind: "request",
                time: now,
                request_id: &record.request_id,
                method: record.method,
                model: &record.model,
                variant: &record.variant,
                version: &record.version,
                code: code.name(),
                latency_ms: round3(elapsed * 1000.0),
                id: &record.infer_id,
                prediction,
                request: tensors.map(|(request, _)| base64(request)),
                response: tensors.map(|(_, response)| base64(response)),
            };
            if let Ok(json) = serde_json::to_string(&observation) {
                observations.push(json);
            }
        }
    }

    /// The series as JSON-ready values: `requests`, `durations`, `upstream`.
    pub fn snapshot(&self) -> serde_json::Value {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let requests: Vec<serde_json::Value> = series
            .calls
            .iter()
            .flat_map(|([method, model, variant], calls)| {
                calls.codes.iter().map(move |(code, count)| {
                    serde_json::json!({"method": method, "model": model, "variant": variant, "code": code.name(), "count": count})
                })
            })
            .collect();
        let histogram = |labels: serde_json::Value, h: &Histogram| {
            let mut row = labels;
            row["buckets"] = serde_json::json!(h.buckets);
            row["count"] = serde_json::json!(h.count);
            row["sum"] = serde_json::json!(h.sum);
            row
        };
        let histograms = |map: &Labelled<Histogram, 3>,
                          [first, second, third]: [&str; 3]|
         -> Vec<serde_json::Value> {
            map.iter()
                .map(|([a, b, c], h)| {
                    histogram(serde_json::json!({first: a, second: b, third: c}), h)
                })
                .collect()
        };
        let cache: Vec<serde_json::Value> = series
            .cache
            .iter()
            .map(|([model, result], count)| serde_json::json!({"model": model, "result": result, "count": count}))
            .collect();
        serde_json::json!({
            "requests": requests,
            "cache": cache,
            "durations": series.calls.iter()
                .map(|([method, model, variant], calls)| histogram(serde_json::json!({"method": method, "model": model, "variant": variant}), &calls.durations))
                .collect::<Vec<_>>(),
            "upstream": histograms(&series.upstream, ["pool", "model", "variant"]),
            "variants": series.variants.iter()
                .map(|([model, variant], h)| histogram(serde_json::json!({"model": model, "variant": variant}), h))
                .collect::<Vec<_>>(),
            "streams": streamed::rows(series.streams.iter()),
            "bounds": LATENCY_BUCKETS,
            "answer_bounds": streamed::ANSWER_BUCKETS,
            "access_log_dropped": self.access.as_ref().map_or(0, |log| log.dropped.load(Ordering::Relaxed)),
            "payload_log_dropped": self.payloads.as_ref().map_or(0, |(log, _)| log.dropped.load(Ordering::Relaxed)),
        })
    }
}
