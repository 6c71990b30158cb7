//! One request at the edge: dispatched by its path to its RPC, recorded when it ends, and the
//! boundary where every failure becomes a gRPC status: a GatewayError its own, a deadline
//! DEADLINE_EXCEEDED, a panic in the request's task INTERNAL naming its request id (the process
//! keeps serving).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};

use crate::batching::BATCH_KEY;
use crate::cache::CACHE_KEY;
use crate::protocol::body::{self, boxed, BoxBody, Observed, OnEnd};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::INFERENCE_SERVICE;
use crate::protocol::grpc::{self, Code};
use crate::protocol::http2::{Incoming, Respond};
use crate::protocol::respond::{answer, failure, request_id, unindexed, REQUEST_ID};
use crate::protocol::streams::{send_answer, RecvBody};
use crate::rpc::infer::VARIANT_KEY;
use crate::rpc::{health, infer, metadata, reflection, stream};
use crate::shadow::{Job, Shadows};
use crate::state::State;
use crate::telemetry::Record;
use crate::traces;
use crate::upstream::Attempt;

/// The trailing metadata the gateway adds, its names parsed once.
const VARIANT: HeaderName = HeaderName::from_static(VARIANT_KEY);
const BATCH: HeaderName = HeaderName::from_static(BATCH_KEY);
const CACHE: HeaderName = HeaderName::from_static(CACHE_KEY);

/// A future that turns a panic into an error value instead of unwinding through the task.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// A unary request's message, counted in its record (and kept, when drawn for the payload log
/// or the observation's tensors).
async fn read_recorded(
    body: RecvBody,
    limit: usize,
    record: &mut Record,
) -> Result<Bytes, GatewayError> {
    let payload = body::read_unary(body, limit).await?;
    record.bytes_in = payload.len() as u64;
    if record.sample_payload || record.sample_tensors {
        record.sampled_request = Some(payload.clone());
    }
    Ok(payload)
}

async fn dispatch(
    state: Arc<State>,
    request: Request<RecvBody>,
    rpc: Rpc,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<(Response<BoxBody>, Option<Attempt>, Option<Box<Job>>), GatewayError> {
    let (head, body) = request.into_parts();
    let limit = state.config.max_message_bytes;
    let response = match (rpc.service, rpc.method) {
        (INFERENCE_SERVICE, "ModelInfer") => {
            let payload = read_recorded(body, limit, record).await?;
            let (response, attempt, job) =
                infer::model_infer(&state, payload, &head.headers, deadline, record).await?;
            return Ok((response, attempt, job));
        }
        (INFERENCE_SERVICE, "ModelStreamInfer") => Ok(stream::model_stream_infer(
            state,
            body,
            head.headers,
            deadline,
        )),
        (INFERENCE_SERVICE, method) if metadata::is_unary(method) => {
            let payload = read_recorded(body, limit, record).await?;
            let message = metadata::unary(&state, method, payload, deadline).await?;
            Ok(answer(&message))
        }
        (health::SERVICE, "Check") => health::check(&state, body, limit).await,
        (health::SERVICE, "Watch") => health::watch(state, body, limit).await,
        (service, "ServerReflectionInfo") if reflection::SERVICES.contains(&service) => {
            Ok(reflection::serve(state, body))
        }
        _ => Err(GatewayError::NotSupported(format!(
            "unknown method {}",
            head.uri.path()
        ))),
    }?;
    Ok((response, None, None))
}

/// A request's path, read once: the RPC it names, by the static names that label its metrics and
/// its span and that `dispatch` serves. Any path the gateway does not serve is "unknown" (a caller
/// must not be able to mint metric series).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rpc {
    service: &'static str,
    method: &'static str,
}

impl Rpc {
    const UNKNOWN: &'static str = "unknown";

    fn of(path: &str) -> Rpc {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or("");
        let Some(service) = [
            INFERENCE_SERVICE,
            health::SERVICE,
            reflection::SERVICES[0],
            reflection::SERVICES[1],
        ]
        .into_iter()
        .find(|served| *served == service) else {
            return Rpc {
                service: Rpc::UNKNOWN,
                method: Rpc::UNKNOWN,
            };
        };
        let method = parts.next().and_then(|method| match (service, method) {
            (INFERENCE_SERVICE, "ModelInfer") => Some("ModelInfer"),
            (INFERENCE_SERVICE, "ModelStreamInfer") => Some("ModelStreamInfer"),
            (INFERENCE_SERVICE, method) => metadata::unary_name(method),
            (health::SERVICE, "Check") => Some("Check"),
            (health::SERVICE, "Watch") => Some("Watch"),
            (service, "ServerReflectionInfo") if reflection::SERVICES.contains(&service) => {
                Some("ServerReflectionInfo")
            }
            _ => None,
        });
        Rpc {
            service,
            method: method.unwrap_or(Rpc::UNKNOWN),
        }
    }
}

/// How an RPC whose answer is streamed ends: its attempt given back, its record closed.
struct Ending {
    record: Record,
    attempt: Option<Attempt>,
    state: Arc<State>,
    /// Shadow copies to start once the answer is whole, and the answer's frames meanwhile.
    job: Option<Box<Job>>,
    captured: Vec<Bytes>,
}

impl Ending {
    fn new(
        record: Record,
        attempt: Option<Attempt>,
        state: Arc<State>,
        job: Option<Box<Job>>,
    ) -> Box<Ending> {
        Box::new(Ending {
            record,
            attempt,
            state,
            job,
            captured: Vec::new(),
        })
    }
}

impl OnEnd for Ending {
    fn data(&mut self, chunk: &Bytes) {
        if self.job.is_some() || self.record.sampled_request.is_some() || self.record.predict {
            self.captured.push(chunk.clone());
        }
    }

    fn ended(mut self: Box<Self>, code: Code, bytes: u64) {
        let answer = match code {
            Code::Ok if !self.captured.is_empty() => {
                grpc::unary_message(self.captured.concat().into()).ok()
            }
            _ => None,
        };
        let request = self.record.sampled_request.take();
        if let (Some(request), Some(answer), true) = (&request, &answer, self.record.sample_payload)
        {
            self.state
                .telemetry
                .log_payload(&self.record, code, request, answer);
        }
        if let Some(attempt) = self.attempt.take() {
            self.record.upstream = attempt.started.elapsed();
            attempt.finish(code.is_gateway_failure());
        }
        let tensors = match (&request, &answer, self.record.sample_tensors) {
            (Some(request), Some(answer), true) => Some((&request[..], &answer[..])),
            _ => None,
        };
        let prediction = match (&answer, self.record.predict) {
            (Some(answer), true) => self.state.telemetry.summarize(answer),
            _ => None,
        };
        self.state
            .telemetry
            .end(&self.record, code, bytes, tensors, prediction);
        if let (Some(job), Some(answer)) = (self.job.take(), answer) {
            Shadows::submit(&self.state, *job, answer);
        }
    }
}

/// One stream a caller opened: its request handled, then its answer sent, in this task. A caller
/// that resets the stream before its answer cancels the work (its upstream call is reset too).
pub async fn serve(state: Arc<State>, request: Request<Incoming>, mut respond: Respond) {
    let handling = handle(state, request.map(RecvBody::request));
    let mut handling = std::pin::pin!(handling);
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        respond.poll_reset(cx).map(|()| None)
    })
    .await;
    let Some(response) = response else {
        return; // the caller left
    };
    let (head, body) = response.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    if respond
        .send_head(head.status.as_u16(), &head.headers, end)
        .is_ok()
        && !end
    {
        send_answer(body, respond).await;
    }
}

async fn handle(state: Arc<State>, request: Request<RecvBody>) -> Response<BoxBody> {
    let id = request_id(request.headers());
    let mut trailing = Vec::with_capacity(4); // the request id, variant, batch, cache
    if let Some(value) = unindexed(&id) {
        trailing.push((REQUEST_ID, value));
    }
    let rpc = Rpc::of(request.uri().path());
    let trace = state.tracer.begin(request.headers());
    let mut record = Record {
        method: rpc.method,
        service: rpc.service,
        trace: trace.clone(),
        request_id: id,
        started: Some(Instant::now()),
        sample_payload: state.telemetry.sample_payload(),
        sample_tensors: state.telemetry.sample_tensors(),
        ..Record::default()
    };
    let timeout = request
        .headers()
        .get(&grpc::GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(grpc::parse_timeout);
    let deadline = timeout.map(|t| Instant::now() + t);
    let work = CatchUnwind(Box::pin(traces::within(
        trace,
        dispatch(state.clone(), request, rpc, deadline, &mut record),
    )));
    let outcome = match deadline {
        None => work.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(Err(GatewayError::DeadlineExceeded(
                "Deadline Exceeded".into(),
            ))),
        },
    };
    let error = match outcome {
        Ok(Ok((response, attempt, job))) => {
            if record.method == "ModelInfer" && !record.variant.is_empty() {
                if let Ok(value) = HeaderValue::from_str(&record.variant) {
                    trailing.push((VARIANT, value));
                }
            }
            if let Some(shared) = record.batch {
                trailing.push((BATCH, HeaderValue::from(shared)));
            }
            if let Some(outcome) = record.cache {
                trailing.push((CACHE, HeaderValue::from_static(outcome.name())));
            }
            let (mut head, body) = response.into_parts();
            if let Some(status) = head.headers.get(&grpc::GRPC_STATUS) {
                // Trailers-only: the status (and our metadata) travel in the headers.
                let code = Code::parse(status.as_bytes());
                for (name, value) in trailing {
                    head.headers.insert(name, value);
                }
                Ending::new(record, attempt, state, None).ended(code, 0);
                return Response::from_parts(head, body::empty());
            }
            let ending = Ending::new(record, attempt, state, job);
            return Response::from_parts(head, boxed(Observed::new(body, trailing, ending)));
        }
        Ok(Err(error)) => error,
        Err(()) => {
            let id = &record.request_id;
            eprintln!("gateway core: a request's task panicked (request id {id})");
            GatewayError::Internal(format!("internal gateway error (request id {id})"))
        }
    };
    state.telemetry.end(&record, error.code(), 0, None, None);
    failure(&error, &trailing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_bug() -> i32 {
        panic!("a bug in a request's task")
    }

    #[test]
    fn a_path_names_a_served_rpc_or_is_unknown() {
        let rpc = |service, method| Rpc { service, method };
        let infer = "/inference.GRPCInferenceService/";
        assert_eq!(
            Rpc::of(&format!("{infer}ModelInfer")),
            rpc(INFERENCE_SERVICE, "ModelInfer")
        );
        assert_eq!(
            Rpc::of(&format!("{infer}ModelMetadata")),
            rpc(INFERENCE_SERVICE, "ModelMetadata")
        );
        for method in ["ServerReady", "CudaSharedMemoryStatus", "TraceSetting"] {
            assert_eq!(
                Rpc::of(&format!("{infer}{method}")),
                rpc(INFERENCE_SERVICE, method)
            );
        }
        assert_eq!(
            Rpc::of(&format!("{infer}MadeUp")),
            rpc(INFERENCE_SERVICE, "unknown")
        );
        assert_eq!(
            Rpc::of("/inference.GRPCInferenceService"),
            rpc(INFERENCE_SERVICE, "unknown")
        );
        assert_eq!(
            Rpc::of("/grpc.health.v1.Health/Watch"),
            rpc(health::SERVICE, "Watch")
        );
        assert_eq!(
            Rpc::of("/grpc.health.v1.Health/Anything"),
            rpc(health::SERVICE, "unknown")
        );
        assert_eq!(
            Rpc::of(&format!(
                "/{}/ServerReflectionInfo",
                reflection::SERVICES[1]
            )),
            rpc(reflection::SERVICES[1], "ServerReflectionInfo")
        );
        assert_eq!(Rpc::of("/made.Up/ModelInfer"), rpc("unknown", "unknown"));
        assert_eq!(Rpc::of(""), rpc("unknown", "unknown"));
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_value_not_an_unwind() {
        assert_eq!(CatchUnwind(Box::pin(async { a_bug() })).await, Err(()));
        assert_eq!(CatchUnwind(Box::pin(async { 7 })).await, Ok(7));
    }
}
#[cfg(test)]
mod future_sizes {
    use std::sync::Arc;

    use crate::config::CoreConfig;
    use crate::protocol::reflection::{Reflection, ReflectionConfig};
    use crate::state::State;

    fn state() -> Arc<State> {
        let outlier = serde_json::json!({"consecutive_failures": 1, "base_ejection_s": 1.0,
            "max_ejection_s": 1.0, "max_ejection_percent": 1});
        let config: CoreConfig = serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:0", "max_message_bytes": 1000, "metadata_ttl_s": 1.0,
            "health_check_interval_s": 1.0, "health_check_timeout_s": 1.0, "default_pool": null,
            "pools": [{"name": "p", "endpoints": ["127.0.0.1:1"], "outlier": outlier, "max_attempts": 1,
                       "retry_budget_ratio": 0.1, "retry_budget_initial": 1.0, "hedge_delay_ms": null}],
            "shadow": {"timeout_s": 1.0, "log_path": null, "log_sample": 0.0, "log_max_bytes": 1,
                       "log_tensors": false},
        }))
        .expect("a valid configuration");
        let reflection = Reflection::new(ReflectionConfig {
            services: vec![],
            files: vec![],
            symbols: Default::default(),
        });
        Arc::new(State::new(config, reflection).expect("a state"))
    }

    /// Every request's future is moved (copied) as it is built and awaited: large, rarely taken
    /// paths (connecting, hedging, the cache, batching, Redis) are boxed so that it stays small.
    /// Inline they made it 153 KB, a quarter of a cache hit's CPU spent in memmove.
    #[test]
    fn a_requests_future_stays_small() {
        let state = state();
        let mut record = crate::telemetry::Record::default();
        let headers = http::HeaderMap::new();
        let infer = crate::rpc::infer::model_infer(
            &state,
            bytes::Bytes::new(),
            &headers,
            None,
            &mut record,
        );
        let size = std::mem::size_of_val(&infer);
        assert!(size < 4096, "ModelInfer's future is {size} bytes");
    }
}
