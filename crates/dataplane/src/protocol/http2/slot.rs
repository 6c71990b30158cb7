//! One stream of a lean connection, as its state is kept behind the connection's lock: what it
//! received as it comes, its bytes still to send and how its sending ends, its windows, and how
//! it fails. Sans-IO: what it must tell the peer goes into the connection's write buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;

use super::frame;

/// What a stream may hold unread (its window, as we give it): 4 MiB.
pub(super) const STREAM_WINDOW: u32 = 4 << 20;

/// Why a stream failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The peer reset it (RST_STREAM) with this code.
    Reset(u32),
    /// The connection was lost, or the server went away before taking it.
    Lost(Arc<str>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Reset(code) => {
                write!(f, "stream reset by the peer ({})", h2::Reason::from(*code))
            }
            Failure::Lost(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Failure {}

/// What a stream received next, as its reader sees it: a frame, its end, or its failure.
pub type Received = Option<Result<Frame<Bytes>, Failure>>;

/// How a stream's sending ends, once its bytes still unsent (if any) are out.
#[derive(Default)]
pub(super) enum Finish {
    /// More may come.
    #[default]
    Open,
    /// Its last DATA frame ends the stream (a request; an empty one when nothing is left).
    Data,
    /// This header block (trailers) ends it.
    Trailers(Bytes),
    /// Its end was sent, or it failed: nothing more of it goes out.
    Done,
}

/// One stream: a client's call, or a request a server serves.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) head: Option<(u16, HeaderMap)>,
    pub(super) head_seen: bool,
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// The server ended its side (END_STREAM).
    pub(super) ended: bool,
    pub(super) failed: Option<Failure>,
    /// Who reads what the stream received.
    pub(super) waker: Option<Waker>,
    /// Who sends on it (a server's answer), waiting for room or for a reset.
    pub(super) send_waker: Option<Waker>,
    /// Its bytes not sent yet, for want of window; `window`: what the peer allows.
    pub(super) unsent: VecDeque<Bytes>,
    pub(super) unsent_len: usize,
    pub(super) window: i64,
    /// Read by the caller, not yet given back to the server.
    pub(super) unacked: u32,
    /// Received, not yet read by the caller: never more than the window we gave.
    pub(super) buffered: usize,
    pub(super) finish: Finish,
    /// A server's stream: its request's reader and its answer's sender still held (0 to 2); what
    /// it receives while nobody reads is dropped, its window given back.
    pub(super) holders: u8,
    pub(super) unread: bool,
}

impl Slot {
    /// Fails the call (unless it failed already): nothing more of its request is sent, and its
    /// caller is woken to see it.
    pub(super) fn fail(&mut self, failure: Failure, wakers: &mut Vec<Waker>) {
        self.failed.get_or_insert(failure);
        self.unsent.clear();
        self.unsent_len = 0;
        self.finish = Finish::Done; // no frame goes out on a stream reset (RFC 9113 §6.4)
        self.wake(wakers);
    }

    /// Resets stream `id` (RST_STREAM with `code`, written into `tail`) and fails it.
    pub(super) fn reset(
        &mut self,
        id: u32,
        code: u32,
        tail: &mut BytesMut,
        wakers: &mut Vec<Waker>,
    ) {
        frame::put_rst_stream(tail, id, code);
        self.fail(Failure::Reset(code), wakers);
    }

    /// Counts `len` more bytes of stream `id` as taken from its window; once half the window is
    /// taken and the peer still sends, gives it back (a WINDOW_UPDATE into `tail`): true then.
    pub(super) fn give_back(&mut self, id: u32, len: u32, tail: &mut BytesMut) -> bool {
        self.unacked += len;
        let update = self.unacked >= STREAM_WINDOW / 2 && !self.ended;
        if update {
            frame::put_window_update(tail, id, std::mem::take(&mut self.unacked));
        }
        update
    }

    pub(super) fn wake(&mut self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.waker.take());
        wakers.extend(self.send_waker.take());
    }

    pub(super) fn finished(&self) -> bool {
        matches!(self.finish, Finish::Done)
    }
}
