//! The core's expected failures, each carrying the gRPC status a caller receives. This is the one
//! place that maps them to a status.
//!
//! ```text
//! GatewayError
//! ├── ModelNotFound        NOT_FOUND          no route, or the upstream does not know it
//! ├── InvalidRequest       INVALID_ARGUMENT   malformed, or does not match the model's metadata
//! ├── NotSupported         UNIMPLEMENTED      an RPC the gateway cannot proxy
//! ├── Unavailable          UNAVAILABLE        no endpoint of a pool could be reached
//! ├── TooLarge             RESOURCE_EXHAUSTED a message over the size limit
//! ├── Overloaded           RESOURCE_EXHAUSTED the pool's queue is full (with a retry-after hint)
//! ├── DeadlineExceeded     DEADLINE_EXCEEDED  it could not be served in time
//! ├── Upstream             (upstream's code)  the server answered with an error: code and text kept
//! └── Internal             INTERNAL           a bug; the message names the request id
//! ```

use crate::protocol::grpc::{self, Code};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    ModelNotFound(String),
    InvalidRequest(String),
    NotSupported(String),
    Unavailable(String),
    TooLarge(String),
    Overloaded {
        message: String,
        retry_after_ms: u64,
    },
    DeadlineExceeded(String),
    Upstream {
        code: Code,
        message: String,
    },
    Internal(String),
}

impl GatewayError {
    pub fn code(&self) -> Code {
        match self {
            GatewayError::ModelNotFound(_) => Code::NotFound,
            GatewayError::InvalidRequest(_) => Code::InvalidArgument,
            GatewayError::NotSupported(_) => Code::Unimplemented,
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::TooLarge(_) | GatewayError::Overloaded { .. } => Code::ResourceExhausted,
            GatewayError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            GatewayError::Upstream { code, .. } => *code,
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            GatewayError::ModelNotFound(m)
            | GatewayError::InvalidRequest(m)
            | GatewayError::NotSupported(m)
            | GatewayError::Unavailable(m)
            | GatewayError::TooLarge(m)
            | GatewayError::DeadlineExceeded(m)
            | GatewayError::Internal(m) => m,
            GatewayError::Upstream { message, .. } | GatewayError::Overloaded { message, .. } => {
                message
            }
        }
    }

    /// A connection-level failure: the only kind that is retried on another endpoint.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, GatewayError::Unavailable(_))
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code().name(), self.message())
    }
}

impl std::error::Error for GatewayError {}

/// The status a header map (an answer's headers, trailers-only, or its trailers) carries: None
/// without `grpc-status`; an error other than OK as the server's own code and message.
pub fn status_in(headers: &http::HeaderMap) -> Option<Result<(), GatewayError>> {
    let code = Code::parse(headers.get(&grpc::GRPC_STATUS)?.as_bytes());
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get(&grpc::GRPC_MESSAGE)
        .map(|m| grpc::decode_message(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(GatewayError::Upstream { code, message }))
}

/// What a caller is told when its stream's framing is wrong.
pub fn frame_error(error: grpc::FrameError, limit: usize) -> GatewayError {
    match error {
        grpc::FrameError::Compressed => GatewayError::NotSupported(
            "compressed requests are not supported: send them uncompressed".into(),
        ),
        grpc::FrameError::TooLarge(len) => GatewayError::TooLarge(format!(
            "received message larger than max ({len} vs. {limit} bytes)"
        )),
        other => {
            GatewayError::InvalidRequest(format!("the request is not one gRPC message ({other:?})"))
        }
    }
}
