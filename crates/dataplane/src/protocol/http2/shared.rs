//! What the callers of a lean connection and its task share behind one lock: each call's stream
//! (its answer as it comes, its request's bytes still to send), the frames queued for writing,
//! the windows, and the server's settings; and the sending of a request's bytes as far as the
//! windows allow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use http::HeaderMap;

use super::frame;

/// What we ask of the server: no push; a stream may hold 4 MiB unread, the connection 16 MiB; a
/// frame may be 1 MiB; a header list 16 KiB (as the h2 client of the other calls asks).
pub(super) const STREAM_WINDOW: u32 = 4 << 20;
pub(super) const CONNECTION_WINDOW: u32 = 16 << 20;
pub(super) const MAX_FRAME: usize = 1 << 20;
pub(super) const MAX_HEADER_LIST: usize = 16 << 10;
/// Streams a connection opens before the server's SETTINGS say how many it takes.
pub(super) const INITIAL_MAX_STREAMS: usize = 100;
/// Payloads up to this size are copied into the write buffer; larger ones are written from
/// their own buffers.
pub(super) const COPY_BELOW: usize = 1024;
pub(super) const READ_CHUNK: usize = 64 << 10;

/// Why a stream failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The server reset it (RST_STREAM) with this code.
    Reset(u32),
    /// The connection was lost, or the server went away before taking it.
    Lost(Arc<str>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Reset(code) => write!(
                f,
                "stream reset by the server ({})",
                h2::Reason::from(*code)
            ),
            Failure::Lost(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Failure {}

/// One call's stream.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) head: Option<(u16, HeaderMap)>,
    pub(super) head_seen: bool,
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// The server ended its side (END_STREAM).
    pub(super) ended: bool,
    pub(super) failed: Option<Failure>,
    pub(super) waker: Option<Waker>,
    /// The request's bytes not sent yet, for want of window; `window`: what the server allows.
    pub(super) unsent: VecDeque<Bytes>,
    pub(super) unsent_len: usize,
    pub(super) window: i64,
    /// Read by the caller, not yet given back to the server.
    pub(super) unacked: u32,
    /// Received, not yet read by the caller: never more than the window we gave.
    pub(super) buffered: usize,
}

impl Slot {
    /// Fails the call (unless it failed already): nothing more of its request is sent, and its
    /// caller is woken to see it.
    pub(super) fn fail(&mut self, failure: Failure, wakers: &mut Vec<Waker>) {
        self.failed.get_or_insert(failure);
        self.unsent.clear();
        self.unsent_len = 0;
        self.wake(wakers);
    }

    pub(super) fn wake(&mut self, wakers: &mut Vec<Waker>) {
        if let Some(waker) = self.waker.take() {
            wakers.push(waker);
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) streams: HashMap<u32, Slot>,
    pub(super) next_id: u32,
    /// Frames to write: small ones built in `tail`, large payloads as chunks of their own.
    pub(super) out: VecDeque<Bytes>,
    pub(super) tail: BytesMut,
    /// The connection's task, when it waits for something to write.
    pub(super) driver: Option<Waker>,
    pub(super) window: i64,
    pub(super) peer_window: i64,
    pub(super) peer_max_frame: usize,
    pub(super) peer_max_streams: usize,
    /// The server's first SETTINGS came: a parameter a later one leaves out keeps its value.
    pub(super) settings_seen: bool,
    pub(super) blocked: VecDeque<u32>,
    /// Callers waiting for the server to take more streams.
    pub(super) waiting: Vec<Waker>,
    /// Set when the connection ended: no new stream; the open ones failed.
    pub(super) closed: Option<Arc<str>>,
    /// GOAWAY received, or stream ids ran out: no new stream.
    pub(super) going_away: bool,
    /// Received bytes the connection's window has not been given back yet.
    pub(super) unacked: u32,
    pub(super) pings_sent: u64,
    pub(super) pings_answered: u64,
    pub(super) ping_waiters: Vec<Waker>,
}

impl State {
    pub(super) fn queued(&self) -> bool {
        !self.out.is_empty() || !self.tail.is_empty()
    }

    /// Sends what the windows allow of stream `id`'s request; false while some is left.
    pub(super) fn send_unsent(&mut self, id: u32) -> bool {
        let State {
            streams,
            out,
            tail,
            window,
            peer_max_frame,
            ..
        } = self;
        let Some(slot) = streams.get_mut(&id) else {
            return true;
        };
        while slot.unsent_len > 0 {
            let allowed = (*window).min(slot.window).min(*peer_max_frame as i64);
            if allowed <= 0 {
                break;
            }
            let len = (allowed as usize).min(slot.unsent_len);
            slot.unsent_len -= len;
            slot.window -= len as i64;
            *window -= len as i64;
            let flags = if slot.unsent_len == 0 {
                frame::END_STREAM
            } else {
                0
            };
            frame::put_head(tail, len, frame::DATA, flags, id);
            let mut left = len;
            while left > 0 {
                let chunk = slot.unsent.front_mut().expect("unsent_len counts these");
                let part = chunk.split_to(left.min(chunk.len()));
                if chunk.is_empty() {
                    slot.unsent.pop_front();
                }
                left -= part.len();
                push_payload(out, tail, part);
            }
        }
        slot.unsent_len == 0
    }

    /// Sends what the windows now allow of the streams that waited for them, in turn: one
    /// still short of window of its own stays in line without holding up those behind it.
    pub(super) fn send_blocked(&mut self) {
        let mut waiting = std::mem::take(&mut self.blocked);
        waiting.retain(|&id| {
            if !self.streams.contains_key(&id) {
                return false; // its call is gone
            }
            self.window <= 0 || !self.send_unsent(id)
        });
        self.blocked = waiting;
    }

    pub(super) fn fail_all(&mut self, reason: &Arc<str>, wakers: &mut Vec<Waker>) {
        for slot in self.streams.values_mut() {
            match slot.ended {
                true => slot.wake(wakers), // its answer is whole: it ends as it is
                false => slot.fail(Failure::Lost(reason.clone()), wakers),
            }
        }
        wakers.append(&mut self.waiting);
        wakers.append(&mut self.ping_waiters);
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the connection (idempotent): its streams fail with `reason`.
    pub(super) fn close(&self, reason: &str) {
        let mut wakers = Vec::new();
        {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            let reason: Arc<str> = reason.into();
            state.fail_all(&reason, &mut wakers);
            state.closed = Some(reason);
        }
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Appends a DATA frame's payload after its head: copied into `tail` when small, else written
/// from its own buffer (what `tail` held so far queued before it).
fn push_payload(out: &mut VecDeque<Bytes>, tail: &mut BytesMut, part: Bytes) {
    if part.len() < COPY_BELOW {
        tail.extend_from_slice(&part);
    } else {
        if !tail.is_empty() {
            out.push_back(tail.split().freeze());
        }
        out.push_back(part);
    }
}

/// Wakes the connection's task when it waits and frames were queued.
pub(super) fn wake_driver(mut state: MutexGuard<'_, State>) {
    let driver = state.driver.take();
    drop(state);
    if let Some(driver) = driver {
        driver.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked_pair() -> State {
        let mut state = State {
            window: 1 << 20,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            ..State::default()
        };
        for id in [1, 3] {
            let slot = Slot {
                unsent: VecDeque::from([Bytes::from(vec![0u8; 100])]),
                unsent_len: 100,
                ..Slot::default()
            };
            state.streams.insert(id, slot);
            state.blocked.push_back(id);
        }
        state
    }

    #[test]
    fn a_stream_short_of_its_own_window_does_not_hold_up_the_next() {
        let mut state = blocked_pair();
        state.streams.get_mut(&3).unwrap().window = 1000; // its WINDOW_UPDATE came, 1's did not
        state.send_blocked();
        assert_eq!(state.blocked, [1]);
        assert_eq!(state.streams[&3].unsent_len, 0);
        assert_eq!(state.streams[&1].unsent_len, 100);
        assert_eq!(state.window, (1 << 20) - 100);
        // 1's call is gone: it leaves the line.
        state.streams.remove(&1);
        state.send_blocked();
        assert!(state.blocked.is_empty());
    }

    #[test]
    fn a_request_goes_in_frames_as_large_as_the_windows_allow() {
        let mut state = blocked_pair();
        state.window = 60;
        state.streams.get_mut(&1).unwrap().window = 1000;
        assert!(
            !state.send_unsent(1),
            "40 bytes left for want of connection window"
        );
        assert_eq!(state.streams[&1].unsent_len, 40);
        let written = state.tail.split();
        let head = frame::Head::parse(&written).unwrap();
        assert_eq!(
            (head.kind, head.len, head.flags, head.stream),
            (frame::DATA, 60, 0, 1)
        );
        state.window = 1000;
        assert!(state.send_unsent(1));
        let head = frame::Head::parse(&state.tail).unwrap();
        assert_eq!((head.len, head.flags), (40, frame::END_STREAM));
    }
}
