//! One HTTP/2 client connection for calls whose request is one whole message, as its callers
//! hold it: the connection (a handle its calls share), its pinger, and a call's stream.
//!
//! A call takes the connection's lock (`shared`) to queue its HEADERS and DATA frames (as much of
//! its message as the windows allow; the rest when the server grants more), to take its
//! answer's head, and to take each DATA frame and the trailers as they come; the connection's
//! task (`driver`) takes it once for all it read in one go. Dropped before its answer ended, a
//! call resets its stream (CANCEL).

use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::driver::Driver;
use super::frame;
use super::shared::{wake_driver, Failure, Finish, Received, Shared, State};

/// A client connection, shared by the calls to its server. When the last handle (and the last
/// call's stream) is gone, its task ends and closes it.
#[derive(Clone)]
pub struct Connection(Arc<Handle>);

struct Handle {
    shared: Arc<Shared>,
    /// Dropped with the last handle: the connection's task then ends.
    _alive: oneshot::Sender<()>,
}

/// Pings a connection's server, from the connection's own task (it keeps no handle).
pub struct Pinger(Arc<Shared>);

impl Connection {
    /// Opens the connection over `io` (the preface and our SETTINGS go first) and the future
    /// that drives it until it ends, with the reason it ended.
    pub fn new<I>(io: I) -> (Connection, impl Future<Output = String> + Send)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::opening(false)),
        });
        let (alive, unused) = oneshot::channel();
        let driver = Driver::new(io, shared.clone(), Some(unused));
        let handle = Handle {
            shared,
            _alive: alive,
        };
        (Connection(Arc::new(handle)), driver)
    }

    pub fn pinger(&self) -> Pinger {
        Pinger(self.0.shared.clone())
    }

    /// Whether new calls can no longer start on it.
    pub fn is_closed(&self) -> bool {
        let state = self.0.shared.lock();
        state.closed.is_some() || state.going_away
    }

    /// Ends it: its calls fail with `reason`.
    pub fn close(&self, reason: &str) {
        self.0.shared.close(reason);
    }

    /// Starts a call: its head (an HPACK block) and its request's bytes, queued as far as the
    /// windows allow. Waits while the server has as many streams open as it takes. Err: the
    /// connection cannot take new calls.
    pub async fn start(&self, block: &[u8], request: &[Bytes]) -> Result<Stream, String> {
        poll_fn(|cx| {
            let mut guard = self.0.shared.lock();
            let state = &mut *guard;
            if let Some(reason) = &state.closed {
                return Poll::Ready(Err(reason.to_string()));
            }
            if state.going_away {
                return Poll::Ready(Err("the connection is going away".to_owned()));
            }
            if state.streams.len() >= state.peer_max_streams {
                state.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            let id = state.next_id;
            if id >= 1 << 31 {
                state.going_away = true;
                return Poll::Ready(Err("the connection's stream ids ran out".to_owned()));
            }
            state.next_id += 2;
            let unsent_len: usize = request.iter().map(Bytes::len).sum();
            let max_frame = state.peer_max_frame;
            frame::put_headers(&mut state.tail, id, block, unsent_len == 0, max_frame);
            let mut slot = state.new_slot();
            slot.window = state.peer_window;
            slot.unsent
                .extend(request.iter().filter(|b| !b.is_empty()).cloned());
            slot.unsent_len = unsent_len;
            slot.finish = match unsent_len {
                0 => Finish::Done,
                _ => Finish::Data,
            };
            state.streams.insert(id, slot);
            if unsent_len > 0 && !state.send_unsent(id) {
                state.blocked.push_back(id);
            }
            wake_driver(guard);
            Poll::Ready(Ok(Stream {
                connection: self.clone(),
                id,
                done: false,
            }))
        })
        .await
    }
}

impl Pinger {
    /// Ends the connection: its calls fail with `reason`.
    pub fn close(&self, reason: &str) {
        self.0.close(reason);
    }

    /// Pings the server; Ok once it answered, Err when the connection ended first.
    pub async fn ping(&self) -> Result<(), ()> {
        let number = {
            let mut state = self.0.lock();
            if state.closed.is_some() {
                return Err(());
            }
            state.pings_sent += 1;
            let number = state.pings_sent;
            frame::put_ping(&mut state.tail, 0, number.to_be_bytes());
            wake_driver(state);
            number
        };
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if state.pings_answered >= number {
                Poll::Ready(Ok(()))
            } else if state.closed.is_some() {
                Poll::Ready(Err(()))
            } else {
                state.ping_waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A call's stream, from its caller's side.
pub struct Stream {
    connection: Connection,
    id: u32,
    /// Its answer ended, or it failed: nothing to reset when it is dropped.
    done: bool,
}

impl Stream {
    /// The answer's head: its HTTP status and headers (a trailers-only answer's status among
    /// them).
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<(u16, HeaderMap), Failure>> {
        let mut guard = self.connection.0.shared.lock();
        let slot = guard
            .streams
            .get_mut(&self.id)
            .expect("a stream's slot lives as long as it");
        if let Some(head) = slot.head.take() {
            return Poll::Ready(Ok(head));
        }
        if let Some(failure) = &slot.failed {
            self.done = true;
            return Poll::Ready(Err(failure.clone()));
        }
        if slot.ended {
            self.done = true;
            return Poll::Ready(Err(Failure::Lost("the answer ended without a head".into())));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The answer's next DATA frame, then its trailers.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut state = self.connection.0.shared.lock();
        let (received, update) = state.poll_received(self.id, cx);
        if update {
            wake_driver(state);
        }
        if let Poll::Ready(None | Some(Err(_))) = received {
            self.done = true;
        }
        received
    }

    pub fn is_end_stream(&self) -> bool {
        self.connection.0.shared.lock().received_all(self.id)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut state = self.connection.0.shared.lock();
        let Some(slot) = state.streams.remove(&self.id) else {
            return;
        };
        // A stream fewer: who waited for one looks again.
        let waiting = std::mem::take(&mut state.waiting);
        let reset = !self.done && !slot.ended && slot.failed.is_none() && state.closed.is_none();
        let stop = slot.unsent_len > 0 && slot.failed.is_none() && state.closed.is_none();
        if reset {
            frame::put_rst_stream(&mut state.tail, self.id, frame::CANCEL);
        } else if stop {
            // The server answered before it had the whole request: it needs no more of it.
            frame::put_rst_stream(&mut state.tail, self.id, frame::NO_ERROR);
        }
        state.recycle(slot);
        if reset || stop {
            wake_driver(state);
        } else {
            drop(state);
        }
        waiting.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
