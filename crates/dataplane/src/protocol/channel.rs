//! The HTTP/2 client connections to a gRPC server (a v2 server, the OTLP collector), each opened
//! on first use and again after it breaks, and the collecting of a unary answer. Calls whose
//! request is one whole message (every unary RPC) go on the lean client's connection
//! (`http2`): its head a template encoded once, its frames queued by the caller. Calls that
//! stream their requests (ModelStreamInfer) go on one of h2's, its answer awaited in the
//! caller's own task (no task per call, no channel to the connection's task).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use rustls::pki_types::ServerName;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::protocol::body::BoxBody;
use crate::protocol::connections::{keepalive, Dialer, Io, LeanSet};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code, INFERENCE_SERVICE};
use crate::protocol::http2::{self, Literal};
use crate::protocol::respond::unindexed;
use crate::protocol::streams::{send_body, Open, RecvBody};
use crate::protocol::wire::Message;

/// An upstream's answer: its head, and its body as it comes.
pub type Answer = Response<RecvBody>;

pub fn method_path(method: &str) -> String {
    format!("/{INFERENCE_SERVICE}/{method}")
}

/// An HTTP/2 client connection, shared by the calls to its server.
#[derive(Clone)]
struct Live {
    sender: h2::client::SendRequest<Bytes>,
    /// Set by the connection's task when it ends.
    closed: Arc<AtomicBool>,
    /// Calls whose answers are being read on it.
    open: Arc<AtomicUsize>,
    /// Asks the connection's task to ping its server now (`Channel::check`).
    check: Arc<Notify>,
}

/// An HTTP/2 client connection over `io`, driven by a task of its own until it closes.
async fn handshake(io: Box<dyn Io>) -> Result<Live, String> {
    let (sender, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        // Until the server's SETTINGS arrive, as many streams as hyper allowed (h2's default is
        // unbounded, and a burst at connect could pass a proxy's limit and be refused).
        .initial_max_send_streams(100)
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(4 << 20)
        // Callers whose deadline passes reset their streams; frames the server still sends on
        // one it no longer remembers would be a protocol error that closes the connection
        // with every call on it (h2 remembers 10 by default).
        .max_concurrent_reset_streams(4096)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| with_causes(&e))?;
    let live = Live {
        sender,
        closed: Arc::new(AtomicBool::new(false)),
        open: Arc::new(AtomicUsize::new(0)),
        check: Arc::new(Notify::new()),
    };
    let (closed, open, check) = (live.closed.clone(), live.open.clone(), live.check.clone());
    let pings = connection.ping_pong();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut connection => {} // ends when the server or the network closes it
            () = keepalive(pings, open, check) => {} // or when its server stopped answering pings
        }
        closed.store(true, Ordering::Relaxed);
    });
    Ok(live)
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

/// The connections to `address` (TLS when a connector is given), shared by the calls to it.
pub struct Channel {
    /// The head of a ModelInfer to this endpoint, encoded once: a request copies it.
    model_infer: Bytes,
    /// The server's address (HOST:PORT) and TLS towards it.
    dialer: Dialer,
    live: Mutex<Option<Live>>,
    connecting: tokio::sync::Mutex<()>,
    /// The lean client's connections, for the unary calls.
    lean: Arc<LeanSet>,
}

impl Channel {
    /// `connections`: how many lean connections the unary calls may spread over (see
    /// `connections::LeanSet`); streamed calls share one of h2's.
    pub fn new(
        address: String,
        tls: Option<(TlsConnector, ServerName<'static>)>,
        connections: usize,
    ) -> Channel {
        let mut model_infer = BytesMut::new();
        head_block(
            &mut model_infer,
            tls.is_some(),
            &address,
            &method_path("ModelInfer"),
        );
        let dialer = Dialer { address, tls };
        Channel {
            model_infer: model_infer.freeze(),
            lean: LeanSet::new(dialer.clone(), connections),
            dialer,
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Has the connections (when there are) ping their server now, and close when no answer
    /// comes within `CHECK_TIMEOUT`: for an endpoint whose health probe got no answer.
    pub fn check(&self) {
        if let Some(live) = self.live() {
            live.check.notify_one();
        }
        self.lean.check();
    }

    /// The server's address (HOST:PORT).
    pub fn address(&self) -> &str {
        &self.dialer.address
    }

    /// The lean connections open now (the unary calls' ones).
    pub fn connections(&self) -> usize {
        self.lean.count()
    }

    /// A unary call to this endpoint: `method` with `message`, on the lean client's connection.
    /// Err(reason) when no answer could be had from it.
    pub async fn unary(
        &self,
        method: &str,
        message: &Message,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Answer, String> {
        let mut block = BytesMut::with_capacity(self.model_infer.len() + 96);
        match method {
            "ModelInfer" => block.extend_from_slice(&self.model_infer),
            other => head_block(
                &mut block,
                self.dialer.tls.is_some(),
                self.address(),
                &method_path(other),
            ),
        }
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = grpc::format_timeout(upstream_timeout(remaining));
            http2::put_field(
                &mut block,
                Literal::NeverIndexed,
                0,
                b"grpc-timeout",
                timeout.as_bytes(),
            );
        }
        if let Some(traceparent) = traceparent {
            http2::put_field(
                &mut block,
                Literal::NeverIndexed,
                0,
                b"traceparent",
                traceparent.as_bytes(),
            );
        }
        let request = [
            grpc::prefix(message.len()),
            message.bytes.clone(),
            message.appended.clone(),
        ];
        let mut reconnected = false;
        let (mut stream, open) = loop {
            let (lean, open) = self.lean.take(message.len()).await?;
            // A call that cannot start finds the connection closed or going away (its server
            // said GOAWAY, the socket broke, its stream ids ran out): the next calls go on
            // another one, or a new one (the calls still under way on it finish there); this
            // call tries once more (nothing of it was sent).
            match lean.connection.start(&block, &request).await {
                Ok(stream) => break (stream, open),
                Err(reason) => {
                    if reconnected {
                        return Err(reason);
                    }
                    reconnected = true;
                }
            }
        };
        let (status, headers) = std::future::poll_fn(|cx| stream.poll_head(cx))
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Response::new(RecvBody::lean_answer(stream, open));
        *answer.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    fn live(&self) -> Option<Live> {
        let guard = self.live.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|l| !l.closed.load(Ordering::Relaxed))
            .cloned()
    }

    async fn connect(&self) -> Result<Live, String> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let live = handshake(self.dialer.dial().await?).await?;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    /// One HTTP/2 request to this endpoint whose body streams (on h2's client); Err(reason)
    /// when no answer could be had from it.
    pub async fn send(
        &self,
        method: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Answer, String> {
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
    ) -> Result<Answer, String> {
        let uri =
            uri(self.dialer.tls.is_some(), self.address(), path).map_err(|e| e.to_string())?;
        self.request(uri, body, deadline, traceparent).await
    }

    async fn request(
        &self,
        uri: Uri,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Answer, String> {
        let mut reconnected = false;
        loop {
            let live = match self.live() {
                Some(live) => live,
                // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is rare, and its future
                // large; inline it would be copied with every request's future.
                None => Box::pin(self.connect()).await?,
            };
            let request = head(uri.clone(), deadline, traceparent);
            let Live {
                sender,
                closed,
                open,
                ..
            } = live;
            // A call that cannot start leaves the connection for dead (its server went away,
            // the socket broke, its stream ids ran out): closed now, the next call opens a new
            // one; this call tries once more on a new connection (its body is not sent yet).
            let started = match sender.ready().await {
                Ok(mut sender) => sender.send_request(request, body.is_end_stream()),
                Err(error) => Err(error),
            };
            let (answer, send) = match started {
                Ok(started) => started,
                Err(error) => {
                    closed.store(true, Ordering::Relaxed);
                    if reconnected {
                        return Err(with_causes(&error));
                    }
                    reconnected = true;
                    continue;
                }
            };
            let open = Open::new(&open);
            let cancel = match body.is_end_stream() {
                true => None,
                false => send_body(body, send).await?,
            };
            let answer = answer.await.map_err(|e| with_causes(&e))?;
            return Ok(answer.map(|recv| RecvBody::answer(recv, open, cancel)));
        }
    }
}

/// A request's head: a gRPC POST to `uri` (its timeout and trace context sent unindexed).
fn head(uri: Uri, deadline: Option<Instant>, traceparent: Option<&str>) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Some(value) = unindexed(&grpc::format_timeout(upstream_timeout(remaining))) {
            headers.insert(grpc::GRPC_TIMEOUT, value);
        }
    }
    if let Some(value) = traceparent.and_then(unindexed) {
        headers.insert(TRACEPARENT, value);
    }
    request
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A gRPC request's head for the lean client, encoded (HPACK) without touching the server's
/// table: POST, the scheme, `path`, `address` as the authority, `content-type` and `te`.
fn head_block(block: &mut BytesMut, tls: bool, address: &str, path: &str) {
    use http2::{put_field, AUTHORITY, CONTENT_TYPE, METHOD_POST, PATH, SCHEME_HTTP, SCHEME_HTTPS};
    let how = Literal::WithoutIndexing;
    block.extend_from_slice(&[METHOD_POST, if tls { SCHEME_HTTPS } else { SCHEME_HTTP }]);
    put_field(block, how, PATH, b"", path.as_bytes());
    put_field(block, how, AUTHORITY, b"", address.as_bytes());
    put_field(block, how, CONTENT_TYPE, b"", b"application/grpc");
    put_field(block, how, 0, b"te", b"trailers");
}

/// The URI of a request to `path` at `address` (HOST:PORT).
fn uri(tls: bool, address: &str, path: &str) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(address)
        .path_and_query(path)
        .build()
}

/// A collected answer: its one message, or the status it carried (headers or trailers).
/// Err(Unavailable(reason)) when the stream broke off.
pub async fn collect(response: Answer) -> Result<Bytes, GatewayError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_infer_s_head_names_its_method_and_endpoint() {
        let channel = Channel::new("10.0.0.1:8001".into(), None, 1);
        let mut expected = BytesMut::new();
        head_block(
            &mut expected,
            false,
            "10.0.0.1:8001",
            "/inference.GRPCInferenceService/ModelInfer",
        );
        assert_eq!(channel.model_infer, expected.freeze());
        let text = String::from_utf8_lossy(&channel.model_infer);
        for part in [
            "/inference.GRPCInferenceService/ModelInfer",
            "10.0.0.1:8001",
            "application/grpc",
            "te",
            "trailers",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(channel.model_infer[..2], [0x83, 0x86]); // POST, http
    }
}
