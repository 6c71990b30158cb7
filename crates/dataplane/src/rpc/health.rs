//! grpc.health.v1.Health: Check, and Watch (the status now, then each change). The gateway is
//! one service, `inference.GRPCInferenceService` (or ""), SERVING while its pools are ready and
//! it is not draining; any other service is unknown.

use std::sync::Arc;

use http::Response;
use http_body::Frame;
use prost::Message;

use crate::health::SERVICE_UNKNOWN;
use crate::protocol::body::{self, boxed, status_trailers, BoxBody};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code, INFERENCE_SERVICE};
use crate::protocol::messages::{HealthCheckRequest, HealthCheckResponse};
use crate::protocol::respond::{answer, grpc_response};
use crate::protocol::streams::RecvBody;
use crate::state::State;

pub const SERVICE: &str = "grpc.health.v1.Health";

/// Check: the status now; NOT_FOUND for a service the gateway is not.
pub async fn check(
    state: &State,
    body: RecvBody,
    limit: usize,
) -> Result<Response<BoxBody>, GatewayError> {
    let service = asked(body, limit).await?;
    let status = status_of(state, &service)
        .ok_or_else(|| GatewayError::ModelNotFound(format!("unknown service {service}")))?;
    Ok(answer(&HealthCheckResponse { status }.encode_to_vec()))
}

/// The service a health Check or Watch asks about.
async fn asked(body: RecvBody, limit: usize) -> Result<String, GatewayError> {
    let payload = body::read_unary(body, limit).await?;
    HealthCheckRequest::decode(payload)
        .map(|request| request.service)
        .map_err(|e| GatewayError::InvalidRequest(format!("malformed HealthCheckRequest: {e}")))
}

fn status_of(state: &State, service: &str) -> Option<i32> {
    match service {
        "" | INFERENCE_SERVICE => Some(*state.health.status.borrow()),
        _ => None,
    }
}

/// Watch: the status now, and again each time it changes, until the caller leaves.
pub async fn watch(
    state: Arc<State>,
    body: RecvBody,
    limit: usize,
) -> Result<Response<BoxBody>, GatewayError> {
    let service = asked(body, limit).await?;
    let (sender, receiver) = body::channel(4);
    tokio::spawn(async move {
        let Some(_) = status_of(&state, &service) else {
            let message = HealthCheckResponse {
                status: SERVICE_UNKNOWN,
            }
            .encode_to_vec();
            let _ = sender.send(Frame::data(grpc::frame(&message))).await;
            // A watcher of an unknown service waits (as grpcio's servicer does) until it leaves.
            sender.closed().await;
            return;
        };
        let mut status: tokio::sync::watch::Receiver<i32> = state.health.status.subscribe();
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
    Ok(grpc_response(boxed(receiver)))
}
