//! One HTTP/2 server connection, as the task that serves it holds it: the connection (driven by
//! that task as it waits for requests), and each request's two halves: its body as it comes
//! (`Incoming`) and its answer as it is sent (`Respond`).
//!
//! A request's head opens its stream; the handler that takes it reads the body and sends the
//! answer's head, data and trailers under the connection's lock (`shared`), as much as the
//! client's windows allow (the rest when it grants more). A stream is forgotten once both halves
//! are dropped and its answer is out. An answer dropped before its end resets the stream
//! (CANCEL); a request still coming when its answer ended is stopped (NO_ERROR).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::driver::Driver;
use super::frame;
use super::hpack_encode;
use super::shared::{wake_driver, Failure, Finish, Received, Shared, State};

/// An answer's bytes queued beyond the client's window before its sender waits.
const SEND_BUFFER: usize = 4 << 20;
/// Streams a client may reset before they are even taken up (opened and reset in one read, the
/// "rapid reset" flood of CVE-2023-44487) before it is asked to go (GOAWAY ENHANCE_YOUR_CALM).
const RESETS_BEFORE_ACCEPT: usize = 100;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A client's connection, served by the task that accepts its requests.
pub struct Server<I> {
    driver: Driver<I>,
    shared: Arc<Shared>,
    /// Streams the client reset before they were accepted: skipped, no work done for them.
    reset_early: usize,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Server<I> {
    /// Serves over `io`: our SETTINGS go first; the client's preface is expected.
    pub fn new(io: I) -> Server<I> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::opening(true)),
        });
        Server {
            driver: Driver::new(io, shared.clone(), None),
            shared,
            reset_early: 0,
        }
    }

    /// Ready once the client's preface and SETTINGS came; Err when the connection ended first.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        if self.shared.lock().settings_seen {
            return Poll::Ready(Ok(()));
        }
        match self.driver.drive(cx) {
            Poll::Ready(reason) => Poll::Ready(Err(reason)),
            Poll::Pending if self.shared.lock().settings_seen => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next request, driving the connection meanwhile; None once the connection ended.
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Request<Incoming>, Respond)>> {
        if let Some(next) = self.next() {
            return Poll::Ready(Some(next));
        }
        match self.driver.drive(cx) {
            Poll::Ready(_) => {
                self.shared.close("the connection ended");
                Poll::Ready(None)
            }
            Poll::Pending => self
                .next()
                .map_or(Poll::Pending, |next| Poll::Ready(Some(next))),
        }
    }

    /// The next request opened and not reset meanwhile.
    fn next(&mut self) -> Option<(Request<Incoming>, Respond)> {
        let mut state = self.shared.lock();
        let (id, request) = loop {
            let (id, request) = state.accepted.pop_front()?;
            let Some(slot) = state.streams.get_mut(&id).filter(|s| s.failed.is_some()) else {
                break (id, request);
            };
            slot.holders = 0;
            state.settle(id);
            self.reset_early += 1;
            if self.reset_early == RESETS_BEFORE_ACCEPT && state.go_away(ENHANCE_YOUR_CALM) {
                wake_driver(state);
                state = self.shared.lock();
            }
        };
        drop(state);
        let incoming = Incoming {
            shared: self.shared.clone(),
            id,
        };
        let respond = Respond {
            shared: self.shared.clone(),
            id,
        };
        Some((request.map(|()| incoming), respond))
    }

    /// Asks the client to go away (GOAWAY): the requests opened so far are served, later ones
    /// refused; the connection ends when the last is answered.
    pub fn graceful_shutdown(&mut self) {
        let mut state = self.shared.lock();
        if state.go_away(frame::NO_ERROR) {
            wake_driver(state);
        }
    }
}

/// A request's body as it comes: its DATA frames, then its trailers.
pub struct Incoming {
    shared: Arc<Shared>,
    id: u32,
}

impl Incoming {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut state = self.shared.lock();
        let (received, update) = state.poll_received(self.id, cx);
        if update {
            wake_driver(state);
        }
        received
    }

    pub fn is_end_stream(&self) -> bool {
        self.shared.lock().received_all(self.id)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let State { streams, tail, .. } = &mut *state;
        if let Some(slot) = streams.get_mut(&self.id) {
            slot.holders -= 1;
            slot.unread = true;
            slot.data.clear();
            // What it held unread goes back to the client's window with what comes later.
            slot.unacked += std::mem::take(&mut slot.buffered) as u32;
            if slot.unacked > 0 && !slot.ended {
                frame::put_window_update(tail, self.id, std::mem::take(&mut slot.unacked));
            }
        }
        state.settle(self.id);
        wake_if_queued(state);
    }
}

/// A request's answer as it is sent: its head, its data, its trailers (or its reset).
pub struct Respond {
    shared: Arc<Shared>,
    id: u32,
}

impl Respond {
    /// Locks the connection for this stream, unless the stream failed (or the connection).
    fn open(&self) -> Result<std::sync::MutexGuard<'_, State>, Failure> {
        let state = self.shared.lock();
        if let Some(reason) = &state.closed {
            return Err(Failure::Lost(reason.clone()));
        }
        match state.streams.get(&self.id).and_then(|s| s.failed.clone()) {
            Some(failure) => Err(failure),
            None => Ok(state),
        }
    }

    /// The answer's head: `end` when it is all of it (trailers-only).
    pub fn send_head(
        &mut self,
        status: u16,
        headers: &HeaderMap,
        end: bool,
    ) -> Result<(), Failure> {
        let mut state = self.open()?;
        let max_frame = state.peer_max_frame;
        frame::put_headers_with(&mut state.tail, self.id, end, max_frame, |block| {
            hpack_encode::put_head(block, Some(status), headers);
        });
        if end {
            if let Some(slot) = state.streams.get_mut(&self.id) {
                slot.finish = Finish::Done;
            }
        }
        wake_driver(state);
        Ok(())
    }

    /// Queues `data` (and the end of the answer when `end`), sent as the windows allow.
    pub fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), Failure> {
        let mut state = self.open()?;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Ok(());
        };
        let waiting = slot.unsent_len > 0;
        if !data.is_empty() {
            slot.unsent_len += data.len();
            slot.unsent.push_back(data);
        }
        if end {
            slot.finish = Finish::Data;
        }
        if !state.send_unsent(self.id) && !waiting {
            state.blocked.push_back(self.id);
        }
        wake_driver(state);
        Ok(())
    }

    /// The answer's trailers, which end it once its data is out.
    pub fn send_trailers(&mut self, trailers: &HeaderMap) -> Result<(), Failure> {
        let mut state = self.open()?;
        let State {
            streams,
            tail,
            peer_max_frame,
            ..
        } = &mut *state;
        let Some(slot) = streams.get_mut(&self.id) else {
            return Ok(());
        };
        if slot.unsent_len == 0 {
            // Nothing before them: straight into the write buffer.
            frame::put_headers_with(tail, self.id, true, *peer_max_frame, |block| {
                hpack_encode::put_head(block, None, trailers);
            });
            slot.finish = Finish::Done;
        } else {
            let mut block = BytesMut::new();
            hpack_encode::put_head(&mut block, None, trailers);
            slot.finish = Finish::Trailers(block.freeze());
        }
        wake_driver(state);
        Ok(())
    }

    /// Resets the stream (unless its answer already ended).
    pub fn send_reset(&mut self, code: u32) {
        let Ok(mut state) = self.open() else {
            return;
        };
        let mut wakers = Vec::new();
        let State { streams, tail, .. } = &mut *state;
        if let Some(slot) = streams.get_mut(&self.id) {
            if !matches!(slot.finish, Finish::Done) {
                slot.reset(self.id, code, tail, &mut wakers);
            }
        }
        wake_driver(state);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ready when the client reset the stream (or the connection ended).
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = match self.open() {
            Ok(state) => state,
            Err(_) => return Poll::Ready(()),
        };
        if let Some(slot) = state.streams.get_mut(&self.id) {
            slot.send_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Ready when more data may be queued; Err when the stream failed.
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        let mut state = self.open()?;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.unsent_len < SEND_BUFFER {
            return Poll::Ready(Ok(()));
        }
        slot.send_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Respond {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let alive = state.closed.is_none();
        let mut wakers = Vec::new();
        let State { streams, tail, .. } = &mut *state;
        if let Some(slot) = streams.get_mut(&self.id) {
            slot.holders -= 1;
            if matches!(slot.finish, Finish::Open) && slot.failed.is_none() && alive {
                // Dropped before its end: the answer is abandoned.
                slot.reset(self.id, frame::CANCEL, tail, &mut wakers);
            }
        }
        state.settle(self.id);
        wake_if_queued(state);
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<I> Drop for Server<I> {
    /// The connection is no longer served: its requests' halves fail.
    fn drop(&mut self) {
        self.shared.close("the connection ended");
    }
}

/// Wakes the connection's I/O when frames were queued, or when the last stream of a connection
/// going away is gone (the connection ends then).
fn wake_if_queued(state: std::sync::MutexGuard<'_, State>) {
    if state.queued() || state.going_away && state.streams.is_empty() {
        wake_driver(state);
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
