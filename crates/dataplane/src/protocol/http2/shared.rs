//! What the users of a lean connection (a client's callers, a server's handlers) and its task
//! share behind one lock: each stream (`slot`), the frames queued for writing, the windows, and
//! the peer's settings; the sending of a stream's bytes as far as the windows allow, and the
//! reading of what it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use http_body::Frame;

use super::frame;
pub use super::slot::{Failure, Received};
pub(super) use super::slot::{Finish, Slot, STREAM_WINDOW};

/// What we ask of the server: no push; a stream may hold `STREAM_WINDOW` unread, the connection
/// 16 MiB; a frame may be 1 MiB; a header list 16 KiB (as the h2 client of the other calls asks).
pub(super) const CONNECTION_WINDOW: u32 = 16 << 20;
pub(super) const MAX_FRAME: usize = 1 << 20;
pub(super) const MAX_HEADER_LIST: usize = 16 << 10;
/// Streams a client may have open at once on a server's connection.
pub(super) const MAX_STREAMS: usize = 1024;
/// Streams a connection opens before the server's SETTINGS say how many it takes.
pub(super) const INITIAL_MAX_STREAMS: usize = 100;
/// Payloads up to this size are copied into the write buffer; larger ones are written from
/// their own buffers.
pub(super) const COPY_BELOW: usize = 1024;
pub(super) const READ_CHUNK: usize = 64 << 10;
/// Streams gone whose queues a connection keeps for new ones.
const SPARE_QUEUES: usize = 64;

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
    /// A client: GOAWAY received, or stream ids ran out: no new stream. A server: GOAWAY sent.
    pub(super) going_away: bool,
    /// A server's connection: the requests opened and not yet accepted, and the highest stream
    /// id opened.
    pub(super) server: bool,
    pub(super) accepted: VecDeque<(u32, http::Request<()>)>,
    pub(super) last_opened: u32,
    /// The queues of streams gone, for new ones.
    pub(super) spare: Vec<(VecDeque<Bytes>, VecDeque<Bytes>)>,
    /// Received bytes the connection's window has not been given back yet.
    pub(super) unacked: u32,
    pub(super) pings_sent: u64,
    pub(super) pings_answered: u64,
    pub(super) ping_waiters: Vec<Waker>,
}

impl State {
    /// A new connection's state, a server's or a client's, with what opens it queued: a client's
    /// preface, then our SETTINGS (a server says how many streams a client may open, a client
    /// that it takes no push) and the connection window we give.
    pub(super) fn opening(server: bool) -> State {
        let mut state = State {
            server,
            next_id: 1,
            window: frame::DEFAULT_WINDOW,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_max_streams: match server {
                true => usize::MAX, // a server opens none
                false => INITIAL_MAX_STREAMS,
            },
            ..State::default()
        };
        let role = match server {
            true => (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
            false => {
                state.tail.extend_from_slice(frame::PREFACE);
                (frame::SETTINGS_ENABLE_PUSH, 0)
            }
        };
        frame::put_settings(
            &mut state.tail,
            &[
                role,
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frame::SETTINGS_MAX_FRAME_SIZE, MAX_FRAME as u32),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        frame::put_window_update(
            &mut state.tail,
            0,
            CONNECTION_WINDOW - frame::DEFAULT_WINDOW as u32,
        );
        state
    }

    pub(super) fn queued(&self) -> bool {
        !self.out.is_empty() || !self.tail.is_empty()
    }

    /// Sends what the windows allow of stream `id`'s bytes, and its end once they are out; false
    /// while some are left.
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
        let data_ends = matches!(slot.finish, Finish::Data);
        if slot.unsent_len == 0 {
            match &slot.finish {
                Finish::Trailers(block) => {
                    frame::put_headers(tail, id, block, true, *peer_max_frame);
                    slot.finish = Finish::Done;
                }
                Finish::Data => {
                    frame::put_head(tail, 0, frame::DATA, frame::END_STREAM, id);
                    slot.finish = Finish::Done;
                }
                Finish::Open | Finish::Done => {}
            }
            return true;
        }
        while slot.unsent_len > 0 {
            let allowed = (*window).min(slot.window).min(*peer_max_frame as i64);
            if allowed <= 0 {
                break;
            }
            let len = (allowed as usize).min(slot.unsent_len);
            slot.unsent_len -= len;
            slot.window -= len as i64;
            *window -= len as i64;
            let flags = if slot.unsent_len == 0 && data_ends {
                slot.finish = Finish::Done;
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
        if slot.unsent_len == 0 && matches!(slot.finish, Finish::Trailers(_)) {
            return self.send_unsent(id); // the trailers after the data
        }
        slot.unsent_len == 0
    }

    /// Sends what the windows now allow of the streams that waited for them, in turn: one
    /// still short of window of its own stays in line without holding up those behind it. Who
    /// sends on them is woken (there may be room for more now).
    pub(super) fn send_blocked(&mut self, wakers: &mut Vec<Waker>) {
        let mut waiting = std::mem::take(&mut self.blocked);
        waiting.retain(|&id| {
            if !self.streams.contains_key(&id) {
                return false; // its call is gone
            }
            let left = self.window <= 0 || !self.send_unsent(id);
            if let Some(slot) = self.streams.get_mut(&id) {
                wakers.extend(slot.send_waker.take());
            }
            if !left {
                self.settle(id);
            }
            left
        });
        self.blocked = waiting;
    }

    /// A server's connection asks its client to go (GOAWAY with `code`, naming the last stream
    /// it opened: those are served, later ones refused); false when it had asked already.
    pub(super) fn go_away(&mut self, code: u32) -> bool {
        if self.going_away {
            return false;
        }
        self.going_away = true;
        frame::put_goaway(&mut self.tail, self.last_opened, code);
        true
    }

    /// A server's stream is forgotten once neither its request's reader nor its answer's sender
    /// holds it and its answer is out (or failed); a request not whole by then is stopped
    /// (RST_STREAM NO_ERROR: its answer needs no more of it).
    pub(super) fn settle(&mut self, id: u32) {
        let Some(slot) = self.streams.get(&id).filter(|_| self.server) else {
            return; // a client's call is forgotten when its caller drops it
        };
        if slot.holders > 0 || !slot.finished() && slot.failed.is_none() && self.closed.is_none() {
            return;
        }
        if !slot.ended && slot.failed.is_none() && self.closed.is_none() {
            frame::put_rst_stream(&mut self.tail, id, frame::NO_ERROR);
        }
        if let Some(slot) = self.streams.remove(&id) {
            self.recycle(slot);
        }
    }

    /// A new stream's slot, its queues those of a stream gone (none allocated per stream).
    pub(super) fn new_slot(&mut self) -> Slot {
        let (data, unsent) = self.spare.pop().unwrap_or_default();
        Slot {
            data,
            unsent,
            ..Slot::default()
        }
    }

    /// Keeps a forgotten stream's queues, emptied, for a next one.
    pub(super) fn recycle(&mut self, mut slot: Slot) {
        if self.spare.len() < SPARE_QUEUES {
            slot.data.clear();
            slot.unsent.clear();
            self.spare.push((slot.data, slot.unsent));
        }
    }

    /// What stream `id` received next: a DATA frame (its window given back as it is read: true
    /// when a WINDOW_UPDATE was queued), then its trailers, then its end or its failure.
    pub(super) fn poll_received(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> (Poll<Received>, bool) {
        let State { streams, tail, .. } = self;
        let slot = streams
            .get_mut(&id)
            .expect("a stream's slot lives as long as its holders");
        if let Some(data) = slot.data.pop_front() {
            slot.buffered -= data.len();
            let update = slot.give_back(id, data.len() as u32, tail);
            return (Poll::Ready(Some(Ok(Frame::data(data)))), update);
        }
        if let Some(trailers) = slot.trailers.take() {
            return (Poll::Ready(Some(Ok(Frame::trailers(trailers)))), false);
        }
        if slot.ended {
            return (Poll::Ready(None), false);
        }
        if let Some(failure) = &slot.failed {
            return (Poll::Ready(Some(Err(failure.clone()))), false);
        }
        slot.waker = Some(cx.waker().clone());
        (Poll::Pending, false)
    }

    /// Whether stream `id` has nothing more to give its reader.
    pub(super) fn received_all(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_none_or(|s| s.ended && s.data.is_empty() && s.trailers.is_none())
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
#[path = "shared_tests.rs"]
mod tests;
