//! HTTP/2 streams as HTTP bodies, both ways and on both sides: a stream's received half (a
//! caller's request on the lean server, an upstream's answer on the lean client or h2's) read as
//! a `Body`, its flow-control window given back as it is read; and a `Body` written into a
//! stream's sending half (`Sink`: a streamed request upstream on h2's client, an answer to a
//! caller on the lean server): what is there at once is sent at once (all of a unary message,
//! every ModelInfer), the rest only once the stream has room for it, stopping when the far end
//! resets the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::protocol::body::{BoxBody, BoxError};
use crate::protocol::grpc::{self, FrameError};
use crate::protocol::http2;

/// A call under way on a connection, counted while its answer is read (the connection pings
/// its server only while some are, as gRPC servers expect): as one, or by a weight of its own
/// (the lean connections weigh a call by its request's bytes).
pub struct Open(Arc<AtomicUsize>, usize);

impl Open {
    pub fn new(count: &Arc<AtomicUsize>) -> Open {
        Open::weighing(count, 1)
    }

    pub fn weighing(count: &Arc<AtomicUsize>, weight: usize) -> Open {
        count.fetch_add(weight, Ordering::Relaxed);
        Open(count.clone(), weight)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// What comes next in a received body of gRPC messages.
pub enum Read {
    Message(Bytes),
    Trailers(HeaderMap),
    End,
}

/// Why a received body of gRPC messages could not be read on.
pub enum ReadError {
    /// The stream failed (reset, connection lost).
    Body(String),
    /// A message was malformed or over the limit.
    Frame(FrameError),
}

/// The gRPC messages of a received body, one at a time (those already buffered first, so a
/// frame holding several gives them all before the body is read again).
pub struct Messages {
    body: RecvBody,
    buffer: BytesMut,
    limit: usize,
}

impl Messages {
    pub fn new(body: RecvBody, limit: usize) -> Messages {
        Messages {
            body,
            buffer: BytesMut::new(),
            limit,
        }
    }

    pub async fn next(&mut self) -> Result<Read, ReadError> {
        loop {
            let message = grpc::next_message(&mut self.buffer, self.limit);
            if let Some(message) = message.map_err(ReadError::Frame)? {
                return Ok(Read::Message(message));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(Read::End);
            };
            match frame
                .map_err(|e| ReadError::Body(e.to_string()))?
                .into_data()
            {
                Ok(data) => self.buffer.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return Ok(Read::Trailers(trailers));
                    }
                }
            }
        }
    }
}

/// The received half of a stream: its DATA frames, then its trailers. Dropped before its end,
/// the stream is reset (CANCEL): an upstream takes it as the call cancelled.
pub struct RecvBody {
    source: Source,
    data_done: bool,
    /// An upstream's answer: a reset with NO_ERROR or CANCEL after its end is its end (a server
    /// may stop a request body it no longer needs so). A caller's request: every reset fails it.
    answer: bool,
    _open: Option<Open>,
    /// When the request's body is still being piped: dropped with the answer, it stops the pipe.
    _piped: Option<Piped>,
}

impl RecvBody {
    /// A caller's request body.
    pub fn request(incoming: http2::Incoming) -> RecvBody {
        RecvBody {
            source: Source::Caller(incoming),
            data_done: false,
            answer: false,
            _open: None,
            _piped: None,
        }
    }

    /// An upstream's answer to a call counted by `open`.
    pub fn answer(recv: RecvStream, open: Open, piped: Option<Piped>) -> RecvBody {
        RecvBody {
            source: Source::H2(recv),
            data_done: false,
            answer: true,
            _open: Some(open),
            _piped: piped,
        }
    }

    /// An answer to a call on the lean client's connection (`http2`).
    pub fn lean_answer(stream: http2::Stream, open: Open) -> RecvBody {
        RecvBody {
            source: Source::Lean(stream),
            data_done: false,
            answer: true,
            _open: Some(open),
            _piped: None,
        }
    }

    fn ended(
        &self,
        reason: Option<Reason>,
        error: BoxError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match reason {
            Some(Reason::NO_ERROR | Reason::CANCEL) if self.answer => Poll::Ready(None),
            _ => Poll::Ready(Some(Err(error))),
        }
    }
}

/// Where a received body comes from: a caller's request on the lean server, a unary call's
/// answer on the lean client, a streamed call's answer on h2's client.
enum Source {
    Caller(http2::Incoming),
    Lean(http2::Stream),
    H2(RecvStream),
}

/// Held by the caller of a call whose request body is piped by a task of its own: once the
/// caller drops it (the answer read or abandoned), the pipe resets the stream and ends.
pub struct Piped(#[allow(dead_code)] oneshot::Sender<()>);

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Lean(stream) => stream.poll_frame(cx),
            Source::Caller(incoming) => incoming.poll_frame(cx),
            Source::H2(recv) => {
                if !this.data_done {
                    match recv.poll_data(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(data))) => {
                            // Read: its share of the window goes back to the sender.
                            let _ = recv.flow_control().release_capacity(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(Some(Err(error))) => {
                            return this.ended(error.reason(), error.into())
                        }
                        Poll::Ready(None) => this.data_done = true,
                    }
                }
                return match recv.poll_trailers(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(Some(trailers))) => {
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Poll::Ready(Ok(None)) => Poll::Ready(None),
                    Poll::Ready(Err(error)) => this.ended(error.reason(), error.into()),
                };
            }
        };
        match polled {
            Poll::Ready(Some(Err(failure))) => {
                let reason = match failure {
                    http2::Failure::Reset(code) => Some(Reason::from(code)),
                    http2::Failure::Lost(_) => None,
                };
                this.ended(reason, failure.into())
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::H2(recv) => recv.is_end_stream(),
            Source::Lean(stream) => stream.is_end_stream(),
            Source::Caller(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A stream's sending half: a streamed request upstream (h2's client), an answer to a caller
/// (the lean server).
pub trait Sink {
    fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), String>;
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), String>;
    fn send_reset(&mut self, reason: Reason);
    /// Ready when the far end reset the stream (or is gone).
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Ready(true) once `len` more bytes may be sent; Ready(false) when the stream failed.
    fn poll_room(&mut self, len: usize, cx: &mut Context<'_>) -> Poll<bool>;
}

impl Sink for SendStream<Bytes> {
    fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), String> {
        SendStream::send_data(self, data, end).map_err(|e| e.to_string())
    }

    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), String> {
        SendStream::send_trailers(self, trailers).map_err(|e| e.to_string())
    }

    fn send_reset(&mut self, reason: Reason) {
        SendStream::send_reset(self, reason);
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        SendStream::poll_reset(self, cx).map(|_| ())
    }

    fn poll_room(&mut self, len: usize, cx: &mut Context<'_>) -> Poll<bool> {
        if self.capacity() > 0 {
            return Poll::Ready(true);
        }
        self.reserve_capacity(len.max(1));
        self.poll_capacity(cx)
            .map(|room| matches!(room, Some(Ok(_))))
    }
}

impl Sink for http2::Respond {
    fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), String> {
        http2::Respond::send_data(self, data, end).map_err(|e| e.to_string())
    }

    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), String> {
        http2::Respond::send_trailers(self, &trailers).map_err(|e| e.to_string())
    }

    fn send_reset(&mut self, reason: Reason) {
        http2::Respond::send_reset(self, reason.into());
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        http2::Respond::poll_reset(self, cx)
    }

    fn poll_room(&mut self, _len: usize, cx: &mut Context<'_>) -> Poll<bool> {
        http2::Respond::poll_room(self, cx).map(|room| room.is_ok())
    }
}

/// A body's next frame, as far as the stream still has to send it.
enum Next {
    /// Data to send, and whether it is the body's last.
    Data(Bytes, bool),
    /// The body ended: its end (or its trailers) went into the stream, or, when it failed, the
    /// stream was reset.
    Ended,
}

/// What a stream is reset with when the body written into it fails: a request upstream whose
/// caller's stream broke off is cancelled; an answer to a caller that broke off is an internal
/// error (as hyper resets both).
#[derive(Clone, Copy)]
pub enum Writing {
    Request,
    Answer,
}

impl Writing {
    fn reset(self) -> Reason {
        match self {
            Writing::Request => Reason::CANCEL,
            Writing::Answer => Reason::INTERNAL_ERROR,
        }
    }
}

/// Reads the body's next frame; its end, its trailers and its failure are written into `send`
/// here, its data is left to the caller (sent at once, or once the stream has window).
fn next_frame<S: Sink>(
    body: &mut BoxBody,
    send: &mut S,
    writing: Writing,
    cx: &mut Context<'_>,
) -> Poll<Result<Next, String>> {
    let frame = match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(frame) => frame,
    };
    Poll::Ready(match frame {
        None => send.send_data(Bytes::new(), true).map(|()| Next::Ended),
        Some(Err(error)) => {
            send.send_reset(writing.reset());
            Err(error.to_string())
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => Ok(Next::Data(data, body.is_end_stream())),
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_else(|_| HeaderMap::new());
                send.send_trailers(trailers).map(|()| Next::Ended)
            }
        },
    })
}

/// Sends the frames of `body` that are ready now; Ok(true) once it has all gone.
async fn send_ready<S: Sink>(
    body: &mut BoxBody,
    send: &mut S,
    writing: Writing,
) -> Result<bool, String> {
    std::future::poll_fn(|cx| {
        Poll::Ready(loop {
            match next_frame(body, send, writing, cx) {
                Poll::Pending => break Ok(false),
                Poll::Ready(Ok(Next::Data(data, end))) => {
                    if let Err(error) = send.send_data(data, end) {
                        break Err(error);
                    }
                    if end {
                        break Ok(true);
                    }
                }
                Poll::Ready(Ok(Next::Ended)) => break Ok(true),
                Poll::Ready(Err(error)) => break Err(error),
            }
        })
    })
    .await
}

/// Sends a request's body upstream: what is ready now, here (all of a unary message); the rest,
/// when there is a rest, by a task of its own (`pipe`) that stops when the server resets the
/// stream or the caller drops the `Piped` it is given.
pub async fn send_body(
    mut body: BoxBody,
    mut send: SendStream<Bytes>,
) -> Result<Option<Piped>, String> {
    if send_ready(&mut body, &mut send, Writing::Request).await? {
        return Ok(None);
    }
    let (piped, cancelled) = oneshot::channel();
    tokio::spawn(pipe(body, send, Writing::Request, Some(cancelled)));
    Ok(Some(Piped(piped)))
}

/// Sends an answer's body to its caller, in the caller's own task, until it ends or the caller
/// resets the stream (the body is then dropped unfinished: an upstream answer read through it is
/// reset in turn).
pub async fn send_answer(mut body: BoxBody, mut send: http2::Respond) {
    if let Ok(false) = send_ready(&mut body, &mut send, Writing::Answer).await {
        pipe(body, send, Writing::Answer, None).await;
    }
}

/// The rest of a body: a frame is read from the body, then sent once the stream has some window
/// for it (no window is asked for before there is a frame to send).
async fn pipe<S: Sink>(
    mut body: BoxBody,
    mut send: S,
    writing: Writing,
    mut cancelled: Option<oneshot::Receiver<()>>,
) {
    let mut held: Option<(Bytes, bool)> = None;
    std::future::poll_fn(|cx| loop {
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(()); // the far end is done with the stream
        }
        if let Some(cancelled) = cancelled.as_mut() {
            if Pin::new(cancelled).poll(cx).is_ready() {
                send.send_reset(Reason::CANCEL); // the caller left
                return Poll::Ready(());
            }
        }
        let (data, end) = match held.take() {
            Some(held) => held,
            None => match next_frame(&mut body, &mut send, writing, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Next::Data(data, end))) => (data, end),
                Poll::Ready(Ok(Next::Ended) | Err(_)) => return Poll::Ready(()),
            },
        };
        match send.poll_room(data.len(), cx) {
            Poll::Pending => {
                held = Some((data, end));
                return Poll::Pending;
            }
            Poll::Ready(false) => return Poll::Ready(()),
            Poll::Ready(true) => {}
        }
        if send.send_data(data, end).is_err() || end {
            return Poll::Ready(());
        }
    })
    .await;
}
