//! gRPC server reflection (v1 and v1alpha): a stream of requests, each answered from the
//! descriptors the control plane handed over (`protocol::reflection`).

use std::sync::Arc;

use bytes::BytesMut;
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;

use crate::protocol::body::{self, boxed, status_trailers, BoxBody};
use crate::protocol::grpc::{self, Code};
use crate::protocol::respond::grpc_response;
use crate::protocol::streams::RecvBody;
use crate::state::State;

pub const SERVICES: [&str; 2] = [
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
];

/// ServerReflectionInfo: each request message answered from the descriptors, in order.
pub fn serve(state: Arc<State>, mut body: RecvBody) -> Response<BoxBody> {
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
                                let error = crate::protocol::error::frame_error(
                                    error,
                                    state.config.max_message_bytes,
                                );
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
