//! The data port: HTTP/2 connections, each request dispatched by its path. The boundary where
//! every failure becomes a gRPC status: a GatewayError its own, a deadline DEADLINE_EXCEEDED, a
//! panic in the request's task INTERNAL naming its request id (the process keeps serving).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::batching::BATCH_KEY;
use crate::body::{self, boxed, status_trailers, BoxBody, Observed, OnEnd, Unary};
use crate::cache::CACHE_KEY;
use crate::error::GatewayError;
use crate::grpc::{self, Code};
use crate::health::SERVICE_UNKNOWN;
use crate::infer::VARIANT_KEY;
use crate::messages::{HealthCheckRequest, HealthCheckResponse};
use crate::shadow::{Job, Shadows};
use crate::state::State;
use crate::telemetry::Record;
use crate::upstream::{Attempt, INFERENCE_SERVICE};
use crate::{infer, metadata, stream, traces};

pub const REQUEST_ID_KEY: &str = "x-request-id";
/// Trailing metadata of RESOURCE_EXHAUSTED from a full queue: when to try again.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// A future that turns a panic into an error value instead of unwinding through hyper.
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

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map_or_else(
            || format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            str::to_owned,
        )
}

pub(crate) fn grpc_response(body: BoxBody) -> Response<BoxBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// Trailers-only: the status and the trailing metadata in the headers, no body.
pub fn failure(error: &GatewayError, trailing: &[(HeaderName, HeaderValue)]) -> Response<BoxBody> {
    let mut response = grpc_response(body::empty());
    let headers = response.headers_mut();
    headers.extend(status_trailers(error.code(), error.message()));
    if let GatewayError::Overloaded { retry_after_ms, .. } = error {
        headers.insert(RETRY_AFTER_KEY, HeaderValue::from(*retry_after_ms));
    }
    for (name, value) in trailing {
        headers.insert(name.clone(), value.clone());
    }
    response
}

fn answer(message: &[u8]) -> Response<BoxBody> {
    grpc_response(boxed(Unary::new(message, status_trailers(Code::Ok, ""))))
}

async fn read_unary(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    let collected = Limited::new(body, limit.saturating_add(5))
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                GatewayError::TooLarge(format!("received message larger than max ({limit} bytes)"))
            } else {
                GatewayError::Unavailable(format!("the request broke off: {e}"))
            }
        })?;
    grpc::unary_message(collected.to_bytes()).map_err(|e| grpc::frame_error(e, limit))
}

/// A unary request's message, counted in its record (and kept, when drawn for the payload log
/// or the observation's tensors).
async fn read_recorded(
    body: Incoming,
    limit: usize,
    record: &mut Record,
) -> Result<Bytes, GatewayError> {
    let payload = read_unary(body, limit).await?;
    record.bytes_in = payload.len() as u64;
    if record.sample_payload || record.sample_tensors {
        record.sampled_request = Some(payload.clone());
    }
    Ok(payload)
}

async fn dispatch(
    state: Arc<State>,
    request: Request<Incoming>,
    deadline: Option<Instant>,
    record: &mut Record,
) -> Result<(Response<BoxBody>, Option<Attempt>, Option<Job>), GatewayError> {
    let path = request.uri().path().to_owned();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let (head, body) = request.into_parts();
    let limit = state.config.max_message_bytes;
    let response = match (service, method) {
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
        (HEALTH_SERVICE, "Check") => {
            let service = health_service(body, limit).await?;
            let status = health_of(&state, &service)
                .ok_or_else(|| GatewayError::ModelNotFound(format!("unknown service {service}")))?;
            Ok(answer(&HealthCheckResponse { status }.encode_to_vec()))
        }
        (HEALTH_SERVICE, "Watch") => Ok(watch_health(state, health_service(body, limit).await?)),
        (
            "grpc.reflection.v1alpha.ServerReflection" | "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
        ) => Ok(reflect(state, body)),
        _ => Err(GatewayError::NotSupported(format!("unknown method {path}"))),
    }?;
    Ok((response, None, None))
}

/// The service a health Check or Watch asks about.
async fn health_service(body: Incoming, limit: usize) -> Result<String, GatewayError> {
    let payload = read_unary(body, limit).await?;
    HealthCheckRequest::decode(payload)
        .map(|request| request.service)
        .map_err(|e| GatewayError::InvalidRequest(format!("malformed HealthCheckRequest: {e}")))
}

fn health_of(state: &State, service: &str) -> Option<i32> {
    match service {
        "" | INFERENCE_SERVICE => Some(*state.health.status.borrow()),
        _ => None,
    }
}

fn watch_health(state: Arc<State>, service: String) -> Response<BoxBody> {
    let (sender, receiver) = body::channel(4);
    tokio::spawn(async move {
        let Some(_) = health_of(&state, &service) else {
            let message = HealthCheckResponse {
                status: SERVICE_UNKNOWN,
            }
            .encode_to_vec();
            let _ = sender.send(Frame::data(grpc::frame(&message))).await;
            // A watcher of an unknown service waits (as grpcio's servicer does) until it leaves.
            sender.closed().await;
            return;
        };
        let mut status: watch::Receiver<i32> = state.health.status.subscribe();
        loop {
            let current = *status.borrow_and_update();
            let message = HealthCheckResponse { status: current }.encode_to_vec();
            if sender
                .send(Frame::data(grpc::frame(&message)))
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { break },
                () = sender.closed() => return,
            }
        }
        let _ = sender
            .send(Frame::trailers(status_trailers(Code::Ok, "")))
            .await;
    });
    grpc_response(boxed(receiver))
}

fn reflect(state: Arc<State>, mut body: Incoming) -> Response<BoxBody> {
    let (sender, receiver) = body::channel(4);
    tokio::spawn(async move {
        let mut buffer = BytesMut::new();
        let code = loop {
            match body.frame().await {
                None => break Code::Ok,
                Some(Err(_)) => break Code::Cancelled,
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    buffer.extend_from_slice(&data);
                    loop {
                        match grpc::next_message(&mut buffer, state.config.max_message_bytes) {
                            Ok(Some(message)) => {
                                let answer = state.reflection.answer(message);
                                if sender
                                    .send(Frame::data(grpc::frame(&answer)))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(error) => {
                                let error =
                                    grpc::frame_error(error, state.config.max_message_bytes);
                                let trailers = status_trailers(error.code(), error.message());
                                let _ = sender.send(Frame::trailers(trailers)).await;
                                return;
                            }
                        }
                    }
                }
            }
        };
        let _ = sender
            .send(Frame::trailers(status_trailers(code, "")))
            .await;
    });
    grpc_response(boxed(receiver))
}

/// The `method` label of an RPC: its name for the services served, "unknown" for any other path
/// (a caller must not be able to mint metric series).
fn method_label(path: &str) -> String {
    let Some((_, method)) = path.trim_start_matches('/').split_once('/') else {
        return "unknown".to_owned();
    };
    let service = service_label(path);
    let served = service != "unknown"
        && (service != INFERENCE_SERVICE
            || metadata::is_unary(method)
            || method == "ModelInfer"
            || method == "ModelStreamInfer");
    if served {
        method.to_owned()
    } else {
        "unknown".to_owned()
    }
}

/// The service of a served path ("unknown" for any other): the span's name, and what
/// `method_label` checks first.
fn service_label(path: &str) -> &'static str {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    [
        INFERENCE_SERVICE,
        HEALTH_SERVICE,
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ]
    .into_iter()
    .find(|served| *served == service)
    .unwrap_or("unknown")
}

/// How an RPC whose answer is streamed ends: its attempt given back, its record closed.
struct Ending {
    record: Record,
    attempt: Option<Attempt>,
    state: Arc<State>,
    /// Shadow copies to start once the answer is whole, and the answer's frames meanwhile.
    job: Option<Job>,
    captured: Vec<Bytes>,
}

impl Ending {
    fn new(
        record: Record,
        attempt: Option<Attempt>,
        state: Arc<State>,
        job: Option<Job>,
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
            Shadows::submit(&self.state, job, answer);
        }
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let id = request_id(request.headers());
    let mut trailing = Vec::with_capacity(2);
    if let Ok(value) = HeaderValue::from_str(&id) {
        trailing.push((HeaderName::from_static(REQUEST_ID_KEY), value));
    }
    let path = request.uri().path();
    let trace = state.tracer.begin(request.headers());
    let mut record = Record {
        method: method_label(path),
        service: service_label(path),
        trace: trace.clone(),
        request_id: id.clone(),
        started: Some(Instant::now()),
        sample_payload: state.telemetry.sample_payload(),
        sample_tensors: state.telemetry.sample_tensors(),
        ..Record::default()
    };
    let timeout = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc::parse_timeout);
    let deadline = timeout.map(|t| Instant::now() + t);
    let work = CatchUnwind(Box::pin(traces::within(
        trace,
        dispatch(state.clone(), request, deadline, &mut record),
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
                    trailing.push((HeaderName::from_static(VARIANT_KEY), value));
                }
            }
            if let Some(shared) = record.batch {
                trailing.push((
                    HeaderName::from_static(BATCH_KEY),
                    HeaderValue::from(shared),
                ));
            }
            if let Some(outcome) = record.cache {
                trailing.push((
                    HeaderName::from_static(CACHE_KEY),
                    HeaderValue::from_static(outcome.name()),
                ));
            }
            let (mut head, body) = response.into_parts();
            if let Some(status) = head.headers.get("grpc-status") {
                // Trailers-only: the status (and our metadata) travel in the headers.
                let code = Code::parse(status.as_bytes());
                for (name, value) in trailing {
                    head.headers.insert(name, value);
                }
                Ending::new(record, attempt, state, None).ended(code, 0);
                return Ok(Response::from_parts(head, body::empty()));
            }
            let ending = Ending::new(record, attempt, state, job);
            return Ok(Response::from_parts(
                head,
                boxed(Observed::new(body, trailing, ending)),
            ));
        }
        Ok(Err(error)) => error,
        Err(()) => {
            eprintln!("gateway core: a request's task panicked (request id {id})");
            GatewayError::Internal(format!("internal gateway error (request id {id})"))
        }
    };
    state.telemetry.end(&record, error.code(), 0, None, None);
    Ok(failure(&error, &trailing))
}

type Http2 = hyper::server::conn::http2::Builder<TokioExecutor>;

/// When a connection is asked to go: at shutdown, and once it is `max_age` old (clients then
/// reconnect, and are spread again over replicas); after the ask, `grace` more to finish.
#[derive(Clone)]
struct Lifetime {
    stop: watch::Receiver<Option<Duration>>,
    max_age: Option<Duration>,
}

/// One client connection, plain or TLS, served until it ends; asked to go away (GOAWAY, the
/// calls under way finish) at shutdown or at its maximum age.
fn spawn_connection<I>(
    state: &Arc<State>,
    builder: &Http2,
    mut lifetime: Lifetime,
    connections: &mut JoinSet<()>,
    io: I,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = state.clone();
    let service = service_fn(move |request| handle(state.clone(), request));
    let connection = builder.serve_connection(io, service);
    connections.spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let far = Duration::from_secs(365 * 24 * 3600);
        let aged = tokio::time::sleep(lifetime.max_age.unwrap_or(far));
        let mut aged = std::pin::pin!(aged);
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                () = &mut aged, if deadline.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    deadline = Some(Box::pin(tokio::time::sleep(lifetime.max_age.unwrap_or(far))));
                }
                changed = lifetime.stop.changed(), if deadline.is_none() => {
                    let grace = (*lifetime.stop.borrow()).unwrap_or_default();
                    if changed.is_err() || lifetime.stop.borrow().is_some() {
                        connection.as_mut().graceful_shutdown();
                        deadline = Some(Box::pin(tokio::time::sleep(grace)));
                    }
                }
                () = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => return,
            }
        }
    });
}

/// Serve until `stop` holds a grace period; then stop accepting, ask every connection to go
/// away, and give the calls under way that long to finish.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(1024)
        .max_send_buf_size(4 << 20);
    let max_age = state
        .config
        .max_connection_age_s
        .map(Duration::from_secs_f64);
    let lifetime = Lifetime {
        stop: stop.clone(),
        max_age,
    };
    let mut connections = JoinSet::new();
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => {
                while connections.try_join_next().is_some() {} // reap the ended ones
                let Ok((stream, _peer)) = accepted else {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                state.connections_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match &tls {
                    None => spawn_connection(&state, &builder, lifetime.clone(), &mut connections, TokioIo::new(stream)),
                    Some(acceptor) => {
                        // The handshake in a task of its own: a slow client never holds up accept.
                        let (acceptor, state, builder, lifetime) = (acceptor.clone(), state.clone(), builder.clone(), lifetime.clone());
                        connections.spawn(async move {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                            if let Ok(Ok(stream)) = handshake.await {
                                let mut inner = JoinSet::new();
                                spawn_connection(&state, &builder, lifetime, &mut inner, TokioIo::new(stream));
                                while inner.join_next().await.is_some() {}
                            }
                        });
                    }
                }
            }
            changed = stop.changed() => {
                let grace = *stop.borrow();
                if changed.is_err() || grace.is_some() {
                    break grace.unwrap_or_default();
                }
            }
        }
    };
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace + Duration::from_millis(100), drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_bug() -> i32 {
        panic!("a bug in a request's task")
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_value_not_an_unwind() {
        assert_eq!(CatchUnwind(Box::pin(async { a_bug() })).await, Err(()));
        assert_eq!(CatchUnwind(Box::pin(async { 7 })).await, Ok(7));
    }

    #[test]
    fn failures_travel_trailers_only_with_the_request_id() {
        let trailing = [(
            HeaderName::from_static(REQUEST_ID_KEY),
            HeaderValue::from_static("r-1"),
        )];
        let response = failure(
            &GatewayError::Internal("internal gateway error (request id r-1)".into()),
            &trailing,
        );
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "13");
        assert_eq!(
            headers["grpc-message"],
            "internal gateway error (request id r-1)"
        );
        assert_eq!(headers[REQUEST_ID_KEY], "r-1");
        assert!(http_body::Body::is_end_stream(response.body()));
    }
}
#[cfg(test)]
mod future_sizes {
    use std::sync::Arc;

    use crate::config::CoreConfig;
    use crate::reflection::{Reflection, ReflectionConfig};
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
        let infer =
            crate::infer::model_infer(&state, bytes::Bytes::new(), &headers, None, &mut record);
        let size = std::mem::size_of_val(&infer);
        assert!(size < 4096, "ModelInfer's future is {size} bytes");
    }
}
