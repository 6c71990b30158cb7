//! One HTTP/2 client connection to a gRPC server (a v2 server, the OTLP collector), opened on
//! first use and again after it breaks, and the collecting of a unary answer. It speaks h2
//! directly: a call's answer is awaited in the caller's own task (no task per call, no channel
//! to the connection's task), and a unary request's message is written as the call starts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::protocol::body::BoxBody;
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::{self, Code, INFERENCE_SERVICE};
use crate::protocol::respond::unindexed;
use crate::protocol::streams::{send_body, Open, RecvBody};

/// An upstream's answer: its head, and its body as it comes.
pub type Answer = Response<RecvBody>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn method_path(method: &str) -> String {
    format!("/{INFERENCE_SERVICE}/{method}")
}

/// ModelInfer's path, the one sent with nearly every request (the others are built when asked).
const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

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

/// How often a connection with calls under way pings its server, and how long it waits for the
/// answer before it takes the connection for dead (its calls then fail and are retried).
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the connection's task looks whether it should ping.
const KEEPALIVE_TICK: Duration = Duration::from_secs(1);
/// How long a ping asked for by `Channel::check` waits for its answer. A server that is only slow
/// answers pings at once (its HTTP/2 layer does, whatever its models are doing).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// An HTTP/2 client connection over `io`, driven by a task of its own until it closes.
async fn handshake<I>(io: I) -> Result<Live, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
    let mut pings = connection.ping_pong();
    tokio::spawn(async move {
        // Pings only while calls are under way (gRPC servers refuse too many on an idle
        // connection): every KEEPALIVE while busy, and at once when a call starts on one that
        // sat idle that long (it may have died silently meanwhile); and whenever asked to (the
        // endpoint's health probe got no answer), with a short wait: a connection whose server
        // is cut off is closed then, so its calls fail (and are retried elsewhere) instead of
        // waiting for their deadlines.
        let keepalive = async {
            let Some(pings) = pings.as_mut() else {
                return std::future::pending().await;
            };
            let (mut pinged, mut idle_since) = (Instant::now(), Some(Instant::now()));
            loop {
                let asked = tokio::select! {
                    () = tokio::time::sleep(KEEPALIVE_TICK) => false,
                    () = check.notified() => true,
                };
                let now = Instant::now();
                let wait = if asked {
                    CHECK_TIMEOUT
                } else {
                    if open.load(Ordering::Relaxed) == 0 {
                        idle_since.get_or_insert(now);
                        continue;
                    }
                    let woke_after_idle = idle_since
                        .take()
                        .is_some_and(|since| now - since >= KEEPALIVE);
                    if !woke_after_idle && now - pinged < KEEPALIVE {
                        continue;
                    }
                    KEEPALIVE_TIMEOUT
                };
                pinged = now;
                let pong = tokio::time::timeout(wait, pings.ping(h2::Ping::opaque()));
                if !matches!(pong.await, Ok(Ok(_))) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = &mut connection => {} // ends when the server or the network closes it
            () = keepalive => {}      // or when its server stopped answering pings
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

/// A connection to `address` (TLS when a connector is given), shared by the calls to it.
pub struct Channel {
    pub address: String,
    /// The URI of a ModelInfer to this endpoint, built once: a request clones it.
    model_infer: Option<Uri>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    live: Mutex<Option<Live>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Channel {
    pub fn new(address: String, tls: Option<(TlsConnector, ServerName<'static>)>) -> Channel {
        let model_infer = uri(tls.is_some(), &address, MODEL_INFER_PATH).ok();
        Channel {
            address,
            model_infer,
            tls,
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Has the connection (when there is one) ping its server now, and close when no answer
    /// comes within `CHECK_TIMEOUT`: for an endpoint whose health probe got no answer.
    pub fn check(&self) {
        if let Some(live) = self.live() {
            live.check.notify_one();
        }
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
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let live = match &self.tls {
            None => handshake(stream).await?,
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                handshake(stream).await?
            }
        };
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    /// One HTTP/2 request to this endpoint; Err(reason) when no answer could be had from it.
    pub async fn send(
        &self,
        method: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Answer, String> {
        match (method, &self.model_infer) {
            ("ModelInfer", Some(model_infer)) => {
                self.request(model_infer.clone(), body, deadline, traceparent)
                    .await
            }
            _ => {
                self.post(&method_path(method), body, deadline, traceparent)
                    .await
            }
        }
    }

    /// A gRPC request to `path`.
    pub async fn post(
        &self,
        path: &str,
        body: BoxBody,
        deadline: Option<Instant>,
        traceparent: Option<&str>,
    ) -> Result<Answer, String> {
        let uri = uri(self.tls.is_some(), &self.address, path).map_err(|e| e.to_string())?;
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
    fn model_infer_s_ready_uri_is_the_one_built_for_it() {
        assert_eq!(MODEL_INFER_PATH, method_path("ModelInfer"));
        let channel = Channel::new("10.0.0.1:8001".into(), None);
        let built = uri(false, "10.0.0.1:8001", &method_path("ModelInfer")).expect("a valid URI");
        assert_eq!(channel.model_infer, Some(built));
        assert_eq!(
            channel.model_infer.map(|u| u.to_string()),
            Some("http://10.0.0.1:8001/inference.GRPCInferenceService/ModelInfer".to_owned())
        );
    }
}
