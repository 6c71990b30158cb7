//! ModelStreamInfer as a bidirectional passthrough.
//!
//! Each request of the caller's stream is routed and validated on its own; it goes up one
//! long-lived stream per (pool, upstream model), and their responses are merged back into the
//! caller's stream as they come, message by message. One model per upstream stream is deliberate:
//! Triton 2.51 aborts when responses of different models race on one stream. A request that fails
//! validation gets an in-stream error response (as Triton does) and the stream goes on; a broken
//! upstream stream ends the caller's stream with the mapped status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::protocol::body::{self, boxed, status_trailers, BoxBody, ChannelSender};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code};
use crate::protocol::messages::{ModelInferResponseHead, ModelStreamInferResponse};
use crate::protocol::respond::grpc_response;
use crate::protocol::streams::RecvBody;
use crate::rpc::infer;
use crate::state::State;
use crate::telemetry::Record;
use crate::traces::{self, ChildSpan};
use crate::upstream::Pool;

pub fn model_stream_infer(
    state: Arc<State>,
    body: RecvBody,
    headers: HeaderMap,
    deadline: Option<Instant>,
) -> Response<BoxBody> {
    let (out, receiver) = body::channel(16);
    tokio::spawn(async move {
        let code_and_message = run(&state, body, &headers, deadline, &out).await;
        let (code, message) = match code_and_message {
            Ok(()) => (Code::Ok, String::new()),
            Err(error) => (error.code(), error.message().to_owned()),
        };
        let _ = out
            .send(Frame::trailers(status_trailers(code, &message)))
            .await;
    });
    grpc_response(boxed(receiver))
}

fn error_response(request: &Bytes, error: &GatewayError) -> Bytes {
    let head = infer::parse(request)
        .map(|r| (r.id, r.model_name))
        .unwrap_or_default();
    ModelStreamInferResponse {
        error_message: error.message().to_owned(),
        infer_response: Some(ModelInferResponseHead {
            id: head.0,
            model_name: head.1,
            model_version: String::new(),
        }),
    }
    .encode_to_vec()
    .into()
}

/// One upstream stream: requests in through `sender`, answers pumped into the caller's stream.
fn open(
    pool: Arc<Pool>,
    deadline: Option<Instant>,
    out: ChannelSender,
    failures: mpsc::Sender<GatewayError>,
    pumps: &mut JoinSet<()>,
) -> ChannelSender {
    let (sender, requests) = body::channel(16);
    pumps.spawn(async move {
        if let Err(error) = pump(&pool, requests, deadline, &out).await {
            let _ = failures.send(error).await;
        }
    });
    sender
}

async fn pump(
    pool: &Arc<Pool>,
    requests: body::Channel,
    deadline: Option<Instant>,
    out: &ChannelSender,
) -> Result<(), GatewayError> {
    let endpoint = pool.pick(None, &[])?;
    let unreachable = |reason: String| pool.unreachable(&endpoint, &reason);
    let span = ChildSpan::start("upstream ModelStreamInfer", traces::CLIENT);
    let traceparent = span.as_ref().map(ChildSpan::traceparent);
    let response = endpoint
        .channel
        .send(
            "ModelStreamInfer",
            boxed(requests),
            deadline,
            traceparent.as_deref(),
        )
        .await
        .map_err(unreachable)?;
    let (head, mut answers) = response.into_parts();
    if let Some(status) = crate::protocol::error::status_in(&head.headers) {
        return status;
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = answers.frame().await {
        let frame = frame.map_err(|e| unreachable(e.to_string()))?;
        match frame.into_data() {
            Ok(data) => {
                buffer.extend_from_slice(&data);
                while let Some(message) =
                    grpc::next_message(&mut buffer, usize::MAX).map_err(|e| {
                        GatewayError::Upstream {
                            code: Code::Internal,
                            message: format!("malformed upstream stream: {e:?}"),
                        }
                    })?
                {
                    if out.send(Frame::data(grpc::frame(&message))).await.is_err() {
                        return Ok(()); // the caller left
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return crate::protocol::error::status_in(&trailers).unwrap_or(Err(
                        GatewayError::Upstream {
                            code: Code::Unknown,
                            message: String::new(),
                        },
                    ));
                }
            }
        }
    }
    Err(unreachable("the stream broke off".into()))
}

async fn run(
    state: &Arc<State>,
    mut body: RecvBody,
    headers: &HeaderMap,
    deadline: Option<Instant>,
    out: &ChannelSender,
) -> Result<(), GatewayError> {
    let mut upstreams: HashMap<(String, String), ChannelSender> = HashMap::new();
    let (failures, mut failed) = mpsc::channel::<GatewayError>(1);
    let mut pumps = JoinSet::new();
    let mut buffer = BytesMut::new();
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            Some(error) = failed.recv() => return Err(error),
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            return Err(GatewayError::Internal(
                "the caller's stream broke off".into(),
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        let limit = state.config.max_message_bytes;
        while let Some(message) = grpc::next_message(&mut buffer, limit)
            .map_err(|e| crate::protocol::error::frame_error(e, limit))?
        {
            infer::parse(&message)?; // a malformed message ends the stream, as in Triton
            let prepared = match infer::prepare(
                state,
                message.clone(),
                headers,
                deadline,
                &mut Record::default(),
            )
            .await
            {
                Ok(prepared) => prepared,
                Err(error) => {
                    let _ = out
                        .send(Frame::data(grpc::frame(&error_response(&message, &error))))
                        .await;
                    continue;
                }
            };
            let key = (prepared.pool.name.clone(), prepared.variant.model.clone());
            let framed = Frame::data(grpc::frame(&prepared.payload));
            let sender = upstreams.entry(key.clone()).or_insert_with(|| {
                open(
                    prepared.pool.clone(),
                    deadline,
                    out.clone(),
                    failures.clone(),
                    &mut pumps,
                )
            });
            if let Err(unsent) = sender.send(framed).await {
                // That upstream stream has ended (its server closed it): a new one takes this
                // request, so none is lost.
                let fresh = open(
                    prepared.pool.clone(),
                    deadline,
                    out.clone(),
                    failures.clone(),
                    &mut pumps,
                );
                if fresh.send(unsent.0).await.is_err() {
                    return Err(GatewayError::Internal(
                        "an upstream stream closed at once".into(),
                    ));
                }
                upstreams.insert(key, fresh);
            }
        }
    }
    upstreams.clear(); // done writing: every upstream stream sees the end of its requests
    drop(failures);
    loop {
        tokio::select! {
            joined = pumps.join_next() => if joined.is_none() { break },
            Some(error) = failed.recv() => return Err(error),
        }
    }
    match failed.try_recv() {
        Ok(error) => Err(error),
        Err(_) => Ok(()),
    }
}
