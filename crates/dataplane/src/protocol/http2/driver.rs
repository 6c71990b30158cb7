//! A lean connection's I/O: writes what its users queued, reads what the peer sends and has it
//! handled (`receive`), until the connection ends. A client's runs as a task of its own; a
//! server's is driven by the task that accepts its requests (`server`).

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;

use super::frame::{self, Malformed};
use super::receive::Receiver;
use super::shared::{Shared, READ_CHUNK};

/// The connection's task: writes what is queued, reads and handles what comes.
pub(super) struct Driver<I> {
    io: I,
    /// A client's: closed when the last handle is dropped: polled once, it keeps the task's waker
    /// and wakes it then; looked at (not polled) after that.
    unused: Option<oneshot::Receiver<()>>,
    watching: bool,
    shared: Arc<Shared>,
    read: BytesMut,
    writing: VecDeque<Bytes>,
    receiver: Receiver,
    /// A flush that has not completed yet.
    unflushed: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Future for Driver<I> {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
        let this = self.get_mut();
        match this.drive(cx) {
            Poll::Ready(reason) => {
                this.shared.close(&reason);
                Poll::Ready(reason)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Driver<I> {
    /// A client's driver (`unused` given), or a server's.
    pub(super) fn new(
        io: I,
        shared: Arc<Shared>,
        unused: Option<oneshot::Receiver<()>>,
    ) -> Driver<I> {
        let server = unused.is_none();
        Driver {
            io,
            unused,
            watching: false,
            shared,
            read: BytesMut::with_capacity(READ_CHUNK),
            writing: VecDeque::new(),
            receiver: Receiver::new(server),
            unflushed: false,
        }
    }

    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        if let Some(unused) = &mut self.unused {
            if !self.watching {
                self.watching = true;
                let _ = Pin::new(&mut *unused).poll(cx);
            }
            if let Err(oneshot::error::TryRecvError::Closed) = unused.try_recv() {
                return Poll::Ready("the connection is no longer used".into());
            }
        }
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(reason) = &state.closed {
                    return Poll::Ready(reason.to_string());
                }
                self.writing.extend(state.out.drain(..));
                if !state.tail.is_empty() {
                    let tail = state.tail.split().freeze();
                    self.writing.push_back(tail);
                }
            }
            if let Poll::Ready(Err(reason)) = self.write(cx) {
                return Poll::Ready(reason);
            }
            let read = match self.read(cx) {
                Poll::Ready(Ok(read)) => read,
                Poll::Ready(Err(reason)) => return Poll::Ready(reason),
                Poll::Pending => false,
            };
            if read {
                continue;
            }
            let mut state = self.shared.lock();
            if state.queued() && self.writing.is_empty() {
                continue; // queued while we read: write it now
            }
            state.driver = Some(cx.waker().clone());
            if state.server
                && state.going_away
                && state.streams.is_empty()
                && self.writing.is_empty()
                && !self.unflushed
            {
                // All out (a TLS stream's buffer too): closed cleanly (TLS close_notify).
                drop(state);
                return match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready("the connection went away (GOAWAY)".into()),
                };
            }
            return Poll::Pending;
        }
    }

    /// Writes until all is written or the socket is full.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        while !self.writing.is_empty() {
            // Up to 64 buffers a write, on the stack (this runs for every request).
            let mut slices = [IoSlice::new(&[]); 64];
            let mut count = 0;
            for (slice, bytes) in slices.iter_mut().zip(&self.writing) {
                *slice = IoSlice::new(bytes);
                count += 1;
            }
            let slices = &slices[..count];
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, slices) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err("the connection was closed".into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Pending => return Poll::Pending,
            };
            let mut left = written;
            while left > 0 {
                let front = self.writing.front_mut().expect("written from these");
                if front.len() <= left {
                    left -= front.len();
                    self.writing.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        // A TLS stream may hold what was written until it is flushed.
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.to_string())),
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.unflushed = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads what is there and handles its whole frames: Ok(true) when something was read.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, String>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        let reading = self.io.read_buf(&mut self.read);
        let n = match std::pin::pin!(reading).poll(cx) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err("the peer closed the connection".into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
            Poll::Pending => return Poll::Pending,
        };
        debug_assert!(n > 0);
        let mut state = self.shared.lock();
        let handled = self.receiver.frames(&mut self.read, &mut state);
        let last = state.last_opened;
        drop(state);
        self.receiver.wakers.drain(..).for_each(Waker::wake);
        if let Err(Malformed(code, what)) = handled {
            // The peer is told why, as far as the socket takes it now, before it is closed.
            let mut goaway = BytesMut::new();
            frame::put_goaway(&mut goaway, last, code);
            self.writing.push_back(goaway.freeze());
            let _ = self.write(cx);
            let code = h2::Reason::from(code);
            return Poll::Ready(Err(format!("HTTP/2 error from the peer ({code}): {what}")));
        }
        Poll::Ready(Ok(true))
    }
}
