//! One upstream stream of a caller's stream: its requests for one model to one endpoint, and the
//! pump that routes the answers back into the caller's stream, ending each request (its slot
//! and its share of the endpoint's load given back) at its last answer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http_body::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::inflight::{Ended, InFlight};
use crate::admission::Permit;
use crate::primitives::locked;
use crate::protocol::body::{self, boxed, ChannelSender};
use crate::protocol::error::{status_in, GatewayError};
use crate::protocol::grpc::{self, Code};
use crate::protocol::streams::{Messages, Read, ReadError};
use crate::shadow::Shadows;
use crate::state::State;
use crate::telemetry::streamed::Ending;
use crate::traces::{self, ChildSpan};
use crate::upstream::{Attempt, Endpoint, Pool};

/// What a streamed request holds until its last answer: its admission slot (when its pool has a
/// limit) and its share of the endpoint's load.
pub type Held = (Option<Permit>, Attempt);

/// The requests under way on one upstream stream; those still there when it goes (its caller
/// left, its task was stopped) are counted as cancelled.
pub struct Tracked {
    inflight: Mutex<InFlight<Held>>,
    state: Arc<State>,
}

impl Tracked {
    pub fn lock(&self) -> MutexGuard<'_, InFlight<Held>> {
        locked(&self.inflight)
    }

    fn end_all(&self, ending: Ending) {
        let unfinished: Vec<_> = self.lock().drain().collect();
        for request in unfinished {
            self.state
                .telemetry
                .stream_request_ended(&request.timing, ending);
        }
    }

    fn end(&self, ended: Ended<Held>) {
        let request = ended.request;
        self.state
            .telemetry
            .stream_request_ended(&request.timing, ended.ending);
        let (_permit, attempt) = request.held;
        attempt.finish(false); // an error answer is the model's, not the endpoint's failure
        if let (Some(recording), Ending::Done) = (request.recording, ended.ending) {
            self.state.cache.keep(recording);
        }
        if let (Some(capture), Ending::Done) = (request.capture, ended.ending) {
            Shadows::submit_stream(&self.state, capture, request.timing.first_after());
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.end_all(Ending::Cancelled);
    }
}

pub struct Upstream {
    pub sender: ChannelSender,
    pub tracked: Arc<Tracked>,
}

/// Opens a stream to `endpoint`; its answers go into `out`, its failure into `failures`.
pub fn open(
    state: Arc<State>,
    pool: Arc<Pool>,
    endpoint: Arc<Endpoint>,
    deadline: Option<Instant>,
    out: ChannelSender,
    failures: mpsc::Sender<GatewayError>,
    pumps: &mut JoinSet<()>,
) -> Upstream {
    let (sender, requests) = body::channel(16);
    let tracked = Arc::new(Tracked {
        inflight: Mutex::new(InFlight::default()),
        state,
    });
    let pumped = tracked.clone();
    pumps.spawn(async move {
        let result = pump(&pool, &endpoint, requests, deadline, &out, &pumped).await;
        // Whatever is still under way ended with the stream: slots and loads given back.
        pumped.end_all(match out.is_closed() {
            true => Ending::Cancelled,
            false => Ending::Broken,
        });
        if let Err(error) = result {
            let _ = failures.send(error).await;
        }
    });
    Upstream { sender, tracked }
}

async fn pump(
    pool: &Arc<Pool>,
    endpoint: &Arc<Endpoint>,
    requests: body::Channel,
    deadline: Option<Instant>,
    out: &ChannelSender,
    tracked: &Tracked,
) -> Result<(), GatewayError> {
    let unreachable = |reason: String| pool.unreachable(endpoint, &reason);
    let mut span = ChildSpan::start("upstream ModelStreamInfer", traces::CLIENT);
    if let Some(span) = &mut span {
        let address = traces::otlp::Value::String(endpoint.address().to_owned());
        span.set("server.address", address);
    }
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
    let (head, answers) = response.into_parts();
    if let Some(status) = status_in(&head.headers) {
        return status;
    }
    let malformed = |e: String| GatewayError::Upstream {
        code: Code::Internal,
        message: format!("malformed upstream stream: {e}"),
    };
    let mut answers = Messages::new(answers, usize::MAX);
    loop {
        let message = match answers.next().await {
            Ok(Read::Message(message)) => message,
            Ok(Read::Trailers(trailers)) => {
                return status_in(&trailers).unwrap_or(Err(GatewayError::Upstream {
                    code: Code::Unknown,
                    message: String::new(),
                }))
            }
            Ok(Read::End) => break,
            Err(ReadError::Body(reason)) => return Err(unreachable(reason)),
            Err(ReadError::Frame(e)) => return Err(malformed(format!("{e:?}"))),
        };
        let routed = tracked
            .lock()
            .route(message, Instant::now())
            .map_err(|e| malformed(e.0))?;
        if let Some(ended) = routed.ended {
            tracked.end(ended);
        }
        if let Some(forward) = routed.forward {
            if out.send(Frame::data(grpc::frame(&forward))).await.is_err() {
                return Ok(()); // the caller left: dropping the answer cancels the stream
            }
        }
    }
    Err(unreachable("the stream broke off".into()))
}
