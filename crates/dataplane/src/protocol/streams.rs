//! h2's client streams as HTTP bodies: an answer's `RecvStream` read as a `Body` (its flow-control
//! window given back as it is read), and a request's `Body` written into its `SendStream`: at
//! once when it is all there (a unary message, every ModelInfer), else by a task of its own that
//! sends each frame once there is window for it, and resets the stream when its caller leaves
//! (a client's stream of requests).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::protocol::body::BoxBody;

/// A call under way on a connection, counted while its answer is read (the connection pings
/// its server only while some are, as gRPC servers expect).
pub struct Open(Arc<AtomicUsize>);

impl Open {
    pub fn new(count: &Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::Relaxed);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body of an upstream's answer: its DATA frames, then its trailers. Dropped before its end,
/// the stream is reset (CANCEL), which a gRPC server takes as the call cancelled.
pub struct AnswerBody {
    recv: RecvStream,
    data_done: bool,
    _open: Open,
    /// When the request's body is still being piped: dropped with the answer, it stops the pipe.
    _piped: Option<Piped>,
}

impl AnswerBody {
    pub fn new(recv: RecvStream, open: Open, piped: Option<Piped>) -> AnswerBody {
        AnswerBody {
            recv,
            data_done: false,
            _open: open,
            _piped: piped,
        }
    }
}

/// Held by the caller of a call whose request body is piped by a task of its own: once the
/// caller drops it (the answer read or abandoned), the pipe resets the stream and ends.
pub struct Piped(#[allow(dead_code)] oneshot::Sender<()>);

/// A stream the server ended with NO_ERROR or CANCEL has ended, not failed (as hyper reads it).
fn ended(error: h2::Error) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
    match error.reason() {
        Some(Reason::NO_ERROR | Reason::CANCEL) => Poll::Ready(None),
        _ => Poll::Ready(Some(Err(error))),
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // Read: its share of the window goes back to the server.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return ended(error),
                Poll::Ready(None) => self.data_done = true,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => ended(error),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A request body's next frame, as far as the stream still has to send it.
enum Next {
    /// Data to send, and whether it is the body's last.
    Data(Bytes, bool),
    /// The body ended: its end (or its trailers) went into the stream, or, when it failed, the
    /// stream was reset.
    Ended,
}

/// Reads the body's next frame; its end, its trailers and its failure are written into `send`
/// here, its data is left to the caller (sent at once, or once the stream has window).
fn next_frame(
    body: &mut BoxBody,
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<Next, String>> {
    let frame = match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(frame) => frame,
    };
    Poll::Ready(match frame {
        None => send
            .send_data(Bytes::new(), true)
            .map(|()| Next::Ended)
            .map_err(|e| e.to_string()),
        Some(Err(error)) => {
            send.send_reset(Reason::CANCEL);
            Err(error.to_string())
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => Ok(Next::Data(data, body.is_end_stream())),
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_else(|_| HeaderMap::new());
                send.send_trailers(trailers)
                    .map(|()| Next::Ended)
                    .map_err(|e| e.to_string())
            }
        },
    })
}

/// Sends a request's body: what is ready now, here (all of a unary message); the rest, when there
/// is a rest, by a task of its own that sends a frame only once the stream has window for it and
/// stops when the server resets the stream or the caller drops the `Piped` it is given.
pub async fn send_body(
    mut body: BoxBody,
    mut send: SendStream<Bytes>,
) -> Result<Option<Piped>, String> {
    let all_sent = std::future::poll_fn(|cx| {
        Poll::Ready(loop {
            match next_frame(&mut body, &mut send, cx) {
                Poll::Pending => break Ok(false),
                Poll::Ready(Ok(Next::Data(data, end))) => {
                    if let Err(error) = send.send_data(data, end) {
                        break Err(error.to_string());
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
    .await?;
    if all_sent {
        return Ok(None);
    }
    let (piped, cancelled) = oneshot::channel();
    tokio::spawn(pipe(body, send, cancelled));
    Ok(Some(Piped(piped)))
}

/// The rest of a streaming request body: a frame is read from the body, then sent once the
/// stream has some window for it (no window is asked for before there is a frame to send).
async fn pipe(
    mut body: BoxBody,
    mut send: SendStream<Bytes>,
    mut cancelled: oneshot::Receiver<()>,
) {
    let mut held: Option<(Bytes, bool)> = None;
    std::future::poll_fn(|cx| loop {
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(()); // the server is done with the stream
        }
        if Pin::new(&mut cancelled).poll(cx).is_ready() {
            send.send_reset(Reason::CANCEL); // the caller left
            return Poll::Ready(());
        }
        let (data, end) = match held.take() {
            Some(held) => held,
            None => match next_frame(&mut body, &mut send, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Next::Data(data, end))) => (data, end),
                Poll::Ready(Ok(Next::Ended) | Err(_)) => return Poll::Ready(()),
            },
        };
        if send.capacity() == 0 {
            send.reserve_capacity(data.len().max(1));
            match send.poll_capacity(cx) {
                Poll::Pending => {
                    held = Some((data, end));
                    return Poll::Pending;
                }
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
        if send.send_data(data, end).is_err() || end {
            return Poll::Ready(());
        }
    })
    .await;
}
