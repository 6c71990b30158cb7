//! OpenTelemetry traces of the data plane: a server span per RPC (the caller's `traceparent`
//! continued), children for route, validate, queue and each upstream attempt, parent-based ratio
//! sampling, `traceparent` into Triton only when sampled, and spans exported in batches over
//! OTLP/gRPC (or printed, for `console`) from a bounded queue that drops and counts.

pub mod context;
pub mod otlp;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use context::{parse_traceparent, sampled, traceparent, Parent, SpanId, TraceId};
use otlp::{attribute, Value};

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const INTERNAL: i32 = 1;
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The `telemetry` keys of tracing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceConfig {
    /// "otlp", "console" or "none".
    pub exporter: String,
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            exporter: "none".into(),
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "triton-gateway".into(),
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn random_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Finished spans waiting for the exporter.
#[derive(Default)]
pub struct SpanQueue {
    spans: Mutex<VecDeque<otlp::Span>>,
    ready: Notify,
    pub dropped: AtomicU64,
    pub exported: AtomicU64,
}

impl SpanQueue {
    fn push(&self, span: otlp::Span) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= QUEUE {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        spans.push_back(span);
        if spans.len() >= BATCH {
            self.ready.notify_one();
        }
    }

    fn take(&self) -> Vec<otlp::Span> {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let count = spans.len().min(BATCH);
        spans.drain(..count).collect()
    }
}

/// One sampled trace as the RPC goes: its id and the server span its children hang under.
pub struct Trace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    parent: Option<SpanId>,
    started: u64,
    queue: Arc<SpanQueue>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trace({})", context::hex_id(&self.trace_id))
    }
}

tokio::task_local! {
    static CURRENT: Arc<Trace>;
}

/// The trace of the RPC this task works for, if it is sampled.
pub fn current() -> Option<Arc<Trace>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// `future` working for `trace` (a spawned task does not inherit its spawner's).
pub async fn within<F: Future>(trace: Option<Arc<Trace>>, future: F) -> F::Output {
    match trace {
        Some(trace) => CURRENT.scope(trace, future).await,
        None => future.await,
    }
}

/// A span under the current trace; recorded when it ends (or is dropped).
pub struct ChildSpan {
    trace: Arc<Trace>,
    pub span_id: SpanId,
    name: String,
    kind: i32,
    started: u64,
    attributes: Vec<otlp::KeyValue>,
    error: Option<String>,
}

impl ChildSpan {
    /// A child of the current trace's server span; None when the RPC is not sampled.
    pub fn start(name: &str, kind: i32) -> Option<ChildSpan> {
        let trace = current()?;
        Some(ChildSpan {
            trace,
            span_id: random_span_id(),
            name: name.to_owned(),
            kind,
            started: unix_ns(),
            attributes: Vec::new(),
            error: None,
        })
    }

    /// What goes upstream: this span as the parent of the upstream's own.
    pub fn traceparent(&self) -> String {
        traceparent(&self.trace.trace_id, &self.span_id)
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.attributes.push(attribute(key, value));
    }

    pub fn fail(&mut self, message: &str) {
        self.error = Some(message.to_owned());
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        let span = otlp::Span {
            trace_id: self.trace.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.trace.span_id.to_vec(),
            name: std::mem::take(&mut self.name),
            kind: self.kind,
            start_time_unix_nano: self.started,
            end_time_unix_nano: unix_ns(),
            attributes: std::mem::take(&mut self.attributes),
            links: Vec::new(),
            status: self
                .error
                .take()
                .map(|message| otlp::Status { message, code: 2 }),
        };
        self.trace.queue.push(span);
    }
}

pub struct Tracer {
    config: TraceConfig,
    pub queue: Option<Arc<SpanQueue>>,
}

impl Tracer {
    pub fn new(config: TraceConfig) -> Tracer {
        let queue = (config.exporter != "none").then(Arc::default);
        Tracer { config, queue }
    }

    /// The RPC's trace when it is sampled: the caller's `traceparent` continued, or a new one.
    pub fn begin(&self, headers: &HeaderMap) -> Option<Arc<Trace>> {
        let queue = self.queue.as_ref()?;
        let parent: Option<Parent> = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let trace_id = parent.map_or_else(
            || {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
                id[8..].copy_from_slice(&fastrand::u64(1..).to_be_bytes());
                id
            },
            |p| p.trace_id,
        );
        if !sampled(parent.as_ref(), &trace_id, self.config.sample_ratio) {
            return None;
        }
        Some(Arc::new(Trace {
            trace_id,
            span_id: random_span_id(),
            parent: parent.map(|p| p.span_id),
            started: unix_ns(),
            queue: queue.clone(),
        }))
    }

    /// A shadow copy's own trace, linked to the primary's span.
    pub fn linked(&self, to: &Trace) -> Arc<Trace> {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        trace_id[8..].copy_from_slice(&fastrand::u64(1..).to_be_bytes());
        Arc::new(Trace {
            trace_id,
            span_id: random_span_id(),
            parent: None,
            started: unix_ns(),
            queue: to.queue.clone(),
        })
    }

    /// The trace's own span ends: `name`, its kind, attributes, links, and the error it ended
    /// with (None: OK).
    pub fn finish(
        trace: &Trace,
        name: &str,
        kind: i32,
        attributes: Vec<otlp::KeyValue>,
        links: &[&Trace],
        error: Option<String>,
    ) {
        trace.queue.push(otlp::Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: trace.span_id.to_vec(),
            parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: name.to_owned(),
            kind,
            start_time_unix_nano: trace.started,
            end_time_unix_nano: unix_ns(),
            attributes,
            links: links
                .iter()
                .map(|l| otlp::Link {
                    trace_id: l.trace_id.to_vec(),
                    span_id: l.span_id.to_vec(),
                })
                .collect(),
            status: error.map(|message| otlp::Status { message, code: 2 }),
        });
    }

    /// Export until `stop` holds a grace period (then once more, and return).
    pub async fn export(&self, mut stop: watch::Receiver<Option<Duration>>) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        let endpoint = match (self.config.exporter.as_str(), &self.config.otlp_endpoint) {
            ("otlp", Some(address)) => {
                let address = address
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                Some(crate::protocol::channel::Channel::new(address, None, 1))
            }
            _ => None,
        };
        let mut warned = false;
        loop {
            let stopping = tokio::select! {
                () = queue.ready.notified() => false,
                () = tokio::time::sleep(Duration::from_secs(1)) => false,
                changed = stop.changed() => changed.is_err() || stop.borrow().is_some(),
            };
            loop {
                let spans = queue.take();
                if spans.is_empty() {
                    break;
                }
                let count = spans.len() as u64;
                let sent = match &endpoint {
                    Some(endpoint) => self.send(endpoint, spans).await,
                    None => {
                        self.print(&spans);
                        Ok(())
                    }
                };
                match sent {
                    Ok(()) => {
                        queue.exported.fetch_add(count, Ordering::Relaxed);
                    }
                    Err(reason) => {
                        queue.dropped.fetch_add(count, Ordering::Relaxed);
                        if !warned {
                            eprintln!("gateway core: traces not exported ({reason}); dropping them until the collector answers");
                            warned = true;
                        }
                        break;
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn request(&self, spans: Vec<otlp::Span>) -> otlp::ExportTraceServiceRequest {
        otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(otlp::Resource {
                    attributes: vec![attribute(
                        "service.name",
                        Value::String(self.config.service_name.clone()),
                    )],
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope {
                        name: "triton-gateway".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        }
    }

    async fn send(
        &self,
        endpoint: &crate::protocol::channel::Channel,
        spans: Vec<otlp::Span>,
    ) -> Result<(), String> {
        let payload = bytes::Bytes::from(self.request(spans).encode_to_vec());
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let body = crate::protocol::body::message(&payload);
        let response = endpoint.post(EXPORT_PATH, body, deadline, None).await?;
        crate::protocol::channel::collect(response)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn print(&self, spans: &[otlp::Span]) {
        for span in spans {
            let attributes: serde_json::Map<String, serde_json::Value> = span
                .attributes
                .iter()
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::String(s)) => serde_json::json!(s),
                        Some(Value::Bool(b)) => serde_json::json!(b),
                        Some(Value::Int(i)) => serde_json::json!(i),
                        Some(Value::Double(d)) => serde_json::json!(d),
                        None => serde_json::Value::Null,
                    };
                    (kv.key.clone(), value)
                })
                .collect();
            let line = serde_json::json!({
                "name": span.name,
                "trace_id": context::hex_id(&span.trace_id),
                "span_id": context::hex_id(&span.span_id),
                "parent_id": context::hex_id(&span.parent_span_id),
                "kind": span.kind,
                "start_unix_nano": span.start_time_unix_nano,
                "end_unix_nano": span.end_time_unix_nano,
                "attributes": attributes,
                "status": span.status.as_ref().map(|s| s.message.clone()),
            });
            println!("{line}");
        }
    }
}
