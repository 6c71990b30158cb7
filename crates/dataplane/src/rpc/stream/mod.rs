//! ModelStreamInfer: each request of the caller's stream is first-class traffic.
//!
//! Every request is routed on its own (weights, header rules and sticky keys apply per request),
//! validated, admitted by its pool's admission control (it waits in the same fair queues and
//! priorities as unary calls, and holds its slot until its last answer; shed, it gets an
//! in-stream error answer carrying `grpc_status` and `retry-after-ms`), and sent to the
//! endpoint P2C picks among the ready ones, counted in that endpoint's load until its last
//! answer. It goes up the caller's own stream to that endpoint for that model (one model per
//! upstream stream is deliberate: Triton 2.51 aborts when responses of different models race on
//! one stream), so that the caller cancelling its RPC, or its deadline passing, resets exactly
//! its own upstream streams, and Triton cancels what they were generating. Requests of one
//! caller's stream are taken in order (a request waiting for a slot holds the next back). A
//! request that fails validation gets an in-stream error answer (as Triton does) and the stream
//! goes on; a broken upstream stream ends the caller's stream with the mapped status.

mod inflight;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cache::{self, Outcome, ResponseCache, CACHE_KEY};
use crate::protocol::body::{self, boxed, status_trailers, BoxBody, ChannelSender};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code};
use crate::protocol::messages::ModelInferResponseHead;
use crate::protocol::respond::grpc_response;
use crate::protocol::stream_answers::{
    final_answer, flag, parameter, upstream_request, Answer, Value, EMPTY_FINAL,
};
use crate::protocol::streams::{Messages, Read, ReadError, RecvBody};
use crate::protocol::wire;
use crate::route::affinity;
use crate::rpc::infer::{self, Prepared, Slot};
use crate::shadow::streamed::Capture;
use crate::shadow::Job;
use crate::state::State;
use crate::telemetry::streamed::Ending;
use crate::telemetry::streamed::Timing;
use crate::telemetry::Record;
use crate::upstream::{Endpoint, ModelKey};
use inflight::Pending;
use upstream::{open, Upstream};

pub fn model_stream_infer(
    state: Arc<State>,
    body: RecvBody,
    headers: HeaderMap,
    deadline: Option<Instant>,
) -> Response<BoxBody> {
    let (out, receiver) = body::channel(16);
    tokio::spawn(async move {
        let session = run(&state, body, &headers, deadline, &out);
        // The deadline ends the whole stream: what is under way upstream is cancelled with it.
        let result = match deadline {
            None => session.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), session)
                .await
                .unwrap_or_else(|_| {
                    Err(GatewayError::DeadlineExceeded(
                        "the stream's deadline passed".into(),
                    ))
                }),
        };
        let (code, message) = match result {
            Ok(()) => (Code::Ok, String::new()),
            Err(error) => (error.code(), error.message().to_owned()),
        };
        let _ = out
            .send(Frame::trailers(status_trailers(code, &message)))
            .await;
    });
    grpc_response(boxed(receiver))
}

/// An in-stream error answer (as Triton sends one) to the request `id` of `model`: the message,
/// and parameters `grpc_status` (the status a unary call would have had) and, when shed,
/// `retry-after-ms`.
fn error_response(id: &str, model: &str, error: &GatewayError) -> Bytes {
    let mut inner = ModelInferResponseHead {
        id: id.to_owned(),
        model_name: model.to_owned(),
        model_version: String::new(),
    }
    .encode_to_vec();
    inner.extend_from_slice(&parameter(
        4,
        "grpc_status",
        Value::String(error.code().name()),
    ));
    if let GatewayError::Overloaded { retry_after_ms, .. } = error {
        inner.extend_from_slice(&parameter(
            4,
            "retry-after-ms",
            Value::Int64(*retry_after_ms),
        ));
    }
    let mut out = wire::string_field(1, error.message().as_bytes());
    wire::message_field(&mut out, 2, &inner);
    out.freeze()
}

/// A request's measures, from now, under its route and variant.
fn timing(prepared: &Prepared) -> Timing {
    let (model, variant) = (
        prepared.route_model.to_string(),
        prepared.variant.name.to_string(),
    );
    Timing::new(model, variant, Instant::now())
}

/// The endpoint for a request: by prefix affinity when its route has it, else P2C.
fn pick(
    state: &State,
    headers: &HeaderMap,
    prepared: &Prepared,
    model: &ModelKey,
) -> Result<Arc<Endpoint>, GatewayError> {
    let affinities = state.affinities.load();
    let Some(policy) = affinities.get(&*prepared.route_model) else {
        return prepared.pool.pick(Some(model), &[]);
    };
    let session = policy
        .session_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|value| value.to_str().ok());
    let keys = affinity::keys(policy, &prepared.route_model, &prepared.request, session);
    let (endpoint, _how) = prepared
        .pool
        .pick_affine(Some(model), &keys, policy.load_factor)?;
    Ok(endpoint)
}

/// The caller's stream: its upstream streams (one per pool, endpoint and model), the tasks
/// pumping their answers, and the first failure of any.
struct Session<'a> {
    state: &'a Arc<State>,
    headers: &'a HeaderMap,
    deadline: Option<Instant>,
    out: &'a ChannelSender,
    upstreams: HashMap<(String, String, String), Upstream>,
    failures: mpsc::Sender<GatewayError>,
    pumps: JoinSet<()>,
    sent: u64,
}

impl Session<'_> {
    /// One request of the caller's: Err only for what ends the whole stream.
    async fn request(&mut self, message: Bytes) -> Result<(), GatewayError> {
        let request = infer::parse(&message)?; // a malformed message ends the stream, as in Triton
        if let Err(error) = self.forward(&message).await {
            let answer = error_response(&request.id, &request.model_name, &error);
            let _ = self.out.send(Frame::data(grpc::frame(&answer))).await;
        }
        Ok(())
    }

    /// Routed, admitted and sent upstream; Err: the request's in-stream error.
    async fn forward(&mut self, message: &Bytes) -> Result<(), GatewayError> {
        let (state, deadline) = (self.state, self.deadline);
        let mut record = Record::default();
        let prepared =
            infer::prepare(state, message.clone(), self.headers, deadline, &mut record).await?;
        let cached = (state.cache).stream_policy(
            &prepared.route_model,
            &prepared.variant,
            &prepared.request,
        );
        let recording = match cached {
            None => None,
            Some((policy, key)) => match state.cache.stream_hit(&key, &policy).await {
                Some((stored, outcome)) => {
                    self.replay(&prepared, &stored, outcome).await;
                    return Ok(());
                }
                None => Some(ResponseCache::recording(key, policy)),
            },
        };
        let permit = match Slot::of(state, &prepared, self.headers) {
            None => None,
            Some(slot) => Some(slot.take(deadline).await?.0),
        };
        let model = (
            prepared.variant.model.clone(),
            prepared.variant.version.clone(),
        );
        let endpoint = pick(state, self.headers, &prepared, &model)?;
        self.sent += 1;
        let id = self.sent;
        let timing = timing(&prepared);
        let held = (permit, prepared.pool.hold(&endpoint));
        let mut pending = Pending::new(&prepared.request, prepared.decoupled, timing, held);
        pending.recording = recording;
        if !prepared.shadows.is_empty() {
            pending.capture = Some(Capture::new(Job {
                trace: None,
                model: prepared.route_model.to_string(),
                primary: prepared.variant.name.to_string(),
                request_id: String::new(),
                request: prepared.request.clone(),
                payload: prepared.original.clone(),
                shadows: prepared.shadows.clone(),
            }));
        }
        let payload = Frame::data(grpc::frame(&upstream_request(&prepared.payload, id)));
        let key = (
            prepared.pool.name.clone(),
            endpoint.address().to_owned(),
            prepared.variant.model.to_string(),
        );
        let upstream = self.upstream(&prepared, &endpoint, key.clone());
        upstream.tracked.lock().add(id, pending);
        let Err(unsent) = upstream.sender.send(payload).await else {
            return Ok(());
        };
        // That upstream stream has ended (its server closed it): a new one takes this request,
        // so none is lost.
        let pending = upstream.tracked.lock().remove(id);
        self.upstreams.remove(&key);
        let upstream = self.upstream(&prepared, &endpoint, key);
        if let Some(pending) = pending {
            upstream.tracked.lock().add(id, pending);
        }
        upstream
            .sender
            .send(unsent.0)
            .await
            .map_err(|_| GatewayError::Unavailable("an upstream stream closed at once".into()))
    }

    /// A stored sequence of answers, replayed to the caller, each marked with the parameter
    /// `x-cache` (`hit-l1`, `hit-l2`).
    async fn replay(&self, prepared: &Prepared, stored: &Bytes, outcome: Outcome) {
        let request = &prepared.request;
        let mut timing = timing(prepared);
        let mark = parameter(4, CACHE_KEY, Value::String(outcome.name()));
        for message in cache::streamed::answers(stored) {
            let Ok(answer) = Answer::read(message) else {
                continue;
            };
            let Ok(forward) = answer.for_caller_with(&request.id, &mark) else {
                continue;
            };
            timing.answered(Instant::now());
            if self
                .out
                .send(Frame::data(grpc::frame(&forward)))
                .await
                .is_err()
            {
                return; // the caller left
            }
        }
        if flag(&request.parameters, EMPTY_FINAL) {
            let last = final_answer(&request.id);
            let _ = self.out.send(Frame::data(grpc::frame(&last))).await;
        }
        (self.state.telemetry).stream_request_ended(&timing, Ending::Done);
    }

    fn upstream(
        &mut self,
        prepared: &Prepared,
        endpoint: &Arc<Endpoint>,
        key: (String, String, String),
    ) -> &Upstream {
        self.upstreams.entry(key).or_insert_with(|| {
            open(
                self.state.clone(),
                prepared.pool.clone(),
                endpoint.clone(),
                self.deadline,
                self.out.clone(),
                self.failures.clone(),
                &mut self.pumps,
            )
        })
    }
}

async fn run(
    state: &Arc<State>,
    body: RecvBody,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    out: &ChannelSender,
) -> Result<(), GatewayError> {
    let (failures, mut failed) = mpsc::channel::<GatewayError>(1);
    let mut session = Session {
        state,
        headers,
        deadline,
        out,
        upstreams: HashMap::new(),
        failures,
        pumps: JoinSet::new(),
        sent: 0,
    };
    let limit = state.config.max_message_bytes;
    let mut requests = Messages::new(body, limit);
    loop {
        let next = tokio::select! {
            next = requests.next() => next,
            Some(error) = failed.recv() => return Err(error),
        };
        match next {
            Ok(Read::Message(message)) => session.request(message).await?,
            Ok(Read::Trailers(_)) => continue,
            Ok(Read::End) => break,
            Err(ReadError::Body(_)) => {
                return Err(GatewayError::Internal(
                    "the caller's stream broke off".into(),
                ))
            }
            Err(ReadError::Frame(e)) => return Err(crate::protocol::error::frame_error(e, limit)),
        }
    }
    // Done writing: every upstream stream sees the end of its requests, and their answers are
    // awaited (unless the caller leaves: its upstream streams are then reset, cancelling them).
    session.upstreams.clear();
    let Session {
        mut pumps,
        failures,
        ..
    } = session;
    drop(failures);
    loop {
        tokio::select! {
            joined = pumps.join_next() => if joined.is_none() { break },
            Some(error) = failed.recv() => return Err(error),
            () = out.closed() => return Ok(()),
        }
    }
    match failed.try_recv() {
        Ok(error) => Err(error),
        Err(_) => Ok(()),
    }
}
