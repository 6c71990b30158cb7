//! One HTTP/2 client connection to a gRPC server (a v2 server, the OTLP collector), opened on
//! first use and again after it breaks, and the collecting of a unary answer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::protocol::body::BoxBody;
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code, INFERENCE_SERVICE};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn method_path(method: &str) -> String {
    format!("/{INFERENCE_SERVICE}/{method}")
}

/// An HTTP/2 client connection over `io`, driven by a task of its own until it closes.
async fn handshake<I>(io: I) -> Result<SendRequest<BoxBody>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        // Callers whose deadline passes reset their streams; frames the server still sends on
        // one it no longer remembers would be a protocol error that closes the connection
        // with every call on it (h2 remembers 10 by default).
        .max_concurrent_reset_streams(4096)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await; // ends when the server or the network closes it
    });
    Ok(sender)
}

/// The timeout propagated upstream: the caller's remaining time and a little more, so the
/// gateway's own timer ends a late call (resetting the stream, which Triton takes as a
/// cancellation) before the upstream's deadline fires. Triton 2.51's gRPC frontend answers an
/// expired deadline with its trailers more than once on the same stream, a protocol error that
/// would close the connection with every call on it.
pub fn upstream_timeout(remaining: Duration) -> Duration {
    let grace = (remaining / 50).clamp(Duration::from_millis(2), Duration::from_millis(20));
    remaining.max(Duration::from_millis(1)) + grace
}

/// An error with what caused it ("http2 error: stream error received: refused stream").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = inner.source();
    }
    text
}

/// A connection to `address` (TLS when a connector is given), shared by the calls to it.
pub struct Channel {
    pub address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sender: Mutex<Option<SendRequest<BoxBody>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Channel {
    pub fn new(address: String, tls: Option<(TlsConnector, ServerName<'static>)>) -> Channel {
        Channel {
            address,
            tls,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live_sender(&self) -> Option<SendRequest<BoxBody>> {
        let guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect(&self) -> Result<SendRequest<BoxBody>, String> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(sender) = self.live_sender() {
            return Ok(sender);
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(stream)).await?,
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                handshake(TokioIo::new(stream)).await?
            }
        };
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// One HTTP/2 request to this endpoint; Err(reason) when no answer could be had from it.
    pub async fn send(
        &self,
        method: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        self.post(&method_path(method), body, deadline, traceparent)
            .await
    }

    /// A gRPC request to `path`.
    pub async fn post(
        &self,
        path: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = match self.live_sender() {
            Some(sender) => sender,
            // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is rare, and its future large;
            // inline it would be copied with every request's future.
            None => Box::pin(self.connect()).await?,
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut request = Request::post(format!("{scheme}://{}{path}", self.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            request = request.header(
                "grpc-timeout",
                grpc::format_timeout(upstream_timeout(remaining)),
            );
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| with_causes(&e))
    }
}

/// A collected answer: its one message, or the status it carried (headers or trailers).
/// Err(Unavailable(reason)) when the stream broke off.
pub async fn collect(response: Response<Incoming>) -> Result<Bytes, GatewayError> {
    let (head, body) = response.into_parts();
    if let Some(status) = crate::protocol::error::status_in(&head.headers) {
        status?;
        return grpc::unary_message(Bytes::new()).map_err(not_one_message);
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let Some(status) = crate::protocol::error::status_in(&trailers) else {
        return Err(GatewayError::Unavailable(
            "the answer ended without a grpc-status".into(),
        ));
    };
    status?;
    grpc::unary_message(collected.to_bytes()).map_err(not_one_message)
}

fn not_one_message(e: grpc::FrameError) -> GatewayError {
    GatewayError::Upstream {
        code: Code::Internal,
        message: format!("upstream answer is not one gRPC message ({e:?})"),
    }
}
