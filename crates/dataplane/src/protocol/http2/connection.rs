//! One HTTP/2 client connection for calls whose request is one whole message: the state the
//! callers and the connection's task share behind one lock, the task that writes what callers
//! queue and reads what the server sends, and a call's stream as its caller holds it.
//!
//! A call takes the lock to queue its HEADERS and DATA frames (as much of its message as the
//! windows allow; the rest when the server grants more), to take its answer's head, and to take
//! each DATA frame and the trailers as they come; the task takes it once for all it read in one
//! go. Dropped before its answer ended, a call resets its stream (CANCEL).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use hashbrown::HashMap;
use http::HeaderMap;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;

use super::frame::{self, Head, Malformed};
use super::hpack::Decoder;

/// What we ask of the server: no push; a stream may hold 4 MiB unread, the connection 16 MiB; a
/// frame may be 1 MiB; a header list 16 KiB (as the h2 client of the other calls asks).
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const MAX_FRAME: usize = 1 << 20;
const MAX_HEADER_LIST: usize = 16 << 10;
/// Streams a connection opens before the server's SETTINGS say how many it takes.
const INITIAL_MAX_STREAMS: usize = 100;
/// Payloads up to this size are copied into the write buffer; larger ones are written from
/// their own buffers.
const COPY_BELOW: usize = 1024;
const READ_CHUNK: usize = 64 << 10;

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
struct Slot {
    head: Option<(u16, HeaderMap)>,
    head_seen: bool,
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The server ended its side (END_STREAM).
    ended: bool,
    failed: Option<Failure>,
    waker: Option<Waker>,
    /// The request's bytes not sent yet, for want of window; `window`: what the server allows.
    unsent: VecDeque<Bytes>,
    unsent_len: usize,
    window: i64,
    blocked: bool,
    /// Read by the caller, not yet given back to the server.
    unacked: u32,
}

impl Slot {
    fn wake(&mut self, wakers: &mut Vec<Waker>) {
        if let Some(waker) = self.waker.take() {
            wakers.push(waker);
        }
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, Slot>,
    next_id: u32,
    /// Frames to write: small ones built in `tail`, large payloads as chunks of their own.
    out: VecDeque<Bytes>,
    tail: BytesMut,
    /// The connection's task, when it waits for something to write.
    driver: Option<Waker>,
    window: i64,
    peer_window: i64,
    peer_max_frame: usize,
    peer_max_streams: usize,
    blocked: VecDeque<u32>,
    /// Callers waiting for the server to take more streams.
    waiting: Vec<Waker>,
    /// Set when the connection ended: no new stream; the open ones failed.
    closed: Option<Arc<str>>,
    /// GOAWAY received, or stream ids ran out: no new stream.
    going_away: bool,
    /// Received bytes the connection's window has not been given back yet.
    unacked: u32,
    pings_sent: u64,
    pings_answered: u64,
    ping_waiters: Vec<Waker>,
}

impl State {
    fn queued(&self) -> bool {
        !self.out.is_empty() || !self.tail.is_empty()
    }

    fn push_payload(&mut self, part: Bytes) {
        if part.len() < COPY_BELOW {
            self.tail.extend_from_slice(&part);
        } else {
            if !self.tail.is_empty() {
                let small = self.tail.split().freeze();
                self.out.push_back(small);
            }
            self.out.push_back(part);
        }
    }

    /// Sends what the windows allow of stream `id`'s request; false while some is left.
    fn send_unsent(&mut self, id: u32) -> bool {
        let Some(slot) = self.streams.get_mut(&id) else {
            return true;
        };
        let mut frames = Vec::new();
        while slot.unsent_len > 0 {
            let allowed = self.window.min(slot.window).min(self.peer_max_frame as i64);
            if allowed <= 0 {
                break;
            }
            let len = (allowed as usize).min(slot.unsent_len);
            let mut left = len;
            let mut frame_parts = Vec::new();
            while left > 0 {
                let chunk = slot.unsent.front_mut().expect("unsent_len counts these");
                let part = chunk.split_to(left.min(chunk.len()));
                if chunk.is_empty() {
                    slot.unsent.pop_front();
                }
                left -= part.len();
                frame_parts.push(part);
            }
            slot.unsent_len -= len;
            slot.window -= len as i64;
            self.window -= len as i64;
            frames.push((len, slot.unsent_len == 0, frame_parts));
        }
        let done = slot.unsent_len == 0;
        slot.blocked = !done;
        for (len, last, frame_parts) in frames {
            let flags = if last { frame::END_STREAM } else { 0 };
            frame::put_head(&mut self.tail, len, frame::DATA, flags, id);
            for part in frame_parts {
                self.push_payload(part);
            }
        }
        done
    }

    /// Sends what the windows now allow of the streams that waited for them, in turn.
    fn send_blocked(&mut self) {
        while let Some(&id) = self.blocked.front() {
            if self.window <= 0 || !self.send_unsent(id) {
                return;
            }
            self.blocked.pop_front();
        }
    }

    fn fail_all(&mut self, reason: &Arc<str>, wakers: &mut Vec<Waker>) {
        for slot in self.streams.values_mut() {
            if !slot.ended && slot.failed.is_none() {
                slot.failed = Some(Failure::Lost(reason.clone()));
            }
            slot.unsent.clear();
            slot.unsent_len = 0;
            slot.wake(wakers);
        }
        wakers.append(&mut self.waiting);
        wakers.append(&mut self.ping_waiters);
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the connection (idempotent): its streams fail with `reason`.
    fn close(&self, reason: &str) {
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

/// Wakes the connection's task when it waits and frames were queued.
fn wake_driver(mut state: MutexGuard<'_, State>) {
    let driver = state.driver.take();
    drop(state);
    if let Some(driver) = driver {
        driver.wake();
    }
}

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
        let mut state = State {
            next_id: 1,
            window: frame::DEFAULT_WINDOW,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_max_streams: INITIAL_MAX_STREAMS,
            ..State::default()
        };
        state.tail.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut state.tail,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
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
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
        });
        let (alive, unused) = oneshot::channel();
        let driver = Driver {
            io,
            unused,
            watching: false,
            shared: shared.clone(),
            read: BytesMut::with_capacity(READ_CHUNK),
            writing: VecDeque::new(),
            decoder: Decoder::new(MAX_HEADER_LIST),
            continuing: None,
            wakers: Vec::new(),
        };
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
            let slot = Slot {
                window: state.peer_window,
                unsent: request.iter().filter(|b| !b.is_empty()).cloned().collect(),
                unsent_len,
                ..Slot::default()
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
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let mut guard = self.connection.0.shared.lock();
        let state = &mut *guard;
        let slot = state
            .streams
            .get_mut(&self.id)
            .expect("a stream's slot lives as long as it");
        if let Some(data) = slot.data.pop_front() {
            slot.unacked += data.len() as u32;
            if slot.unacked >= STREAM_WINDOW / 2 && !slot.ended {
                let increment = std::mem::take(&mut slot.unacked);
                frame::put_window_update(&mut state.tail, self.id, increment);
                wake_driver(guard);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = slot.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if slot.ended {
            self.done = true;
            return Poll::Ready(None);
        }
        if let Some(failure) = &slot.failed {
            self.done = true;
            return Poll::Ready(Some(Err(failure.clone())));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub fn is_end_stream(&self) -> bool {
        let state = self.connection.0.shared.lock();
        state
            .streams
            .get(&self.id)
            .is_none_or(|s| s.ended && s.data.is_empty() && s.trailers.is_none())
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
        if reset || stop {
            wake_driver(state);
        } else {
            drop(state);
        }
        waiting.into_iter().for_each(Waker::wake);
    }
}

/// The connection's task: writes what is queued, reads and handles what comes.
struct Driver<I> {
    io: I,
    /// Closed when the last handle is dropped: polled once, it keeps the task's waker and wakes
    /// it then; looked at (not polled) after that.
    unused: oneshot::Receiver<()>,
    watching: bool,
    shared: Arc<Shared>,
    read: BytesMut,
    writing: VecDeque<Bytes>,
    decoder: Decoder,
    /// A header block whose CONTINUATIONs are still to come: its stream, whether it ends the
    /// stream, and its fragments so far.
    continuing: Option<(u32, bool, BytesMut)>,
    wakers: Vec<Waker>,
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
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        if !self.watching {
            self.watching = true;
            let _ = Pin::new(&mut self.unused).poll(cx);
        }
        if let Err(oneshot::error::TryRecvError::Closed) = self.unused.try_recv() {
            return Poll::Ready("the connection is no longer used".into());
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
            return Poll::Pending;
        }
    }

    /// Writes until all is written or the socket is full.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        while !self.writing.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .writing
                .iter()
                .take(64)
                .map(|b| IoSlice::new(b))
                .collect();
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices) {
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
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.to_string())),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Reads what is there and handles its whole frames: Ok(true) when something was read.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, String>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        let reading = self.io.read_buf(&mut self.read);
        let n = match std::pin::pin!(reading).poll(cx) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err("the server closed the connection".into()))
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
            Poll::Pending => return Poll::Pending,
        };
        debug_assert!(n > 0);
        if let Err(Malformed(code, what)) = self.frames() {
            let code = h2::Reason::from(code);
            return Poll::Ready(Err(format!(
                "HTTP/2 error from the server ({code}): {what}"
            )));
        }
        Poll::Ready(Ok(true))
    }

    /// Handles every whole frame read.
    fn frames(&mut self) -> Result<(), Malformed> {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let result = loop {
            let Some(head) = Head::parse(&self.read) else {
                break Ok(());
            };
            if head.len > MAX_FRAME {
                break Err(Malformed(
                    frame::FRAME_SIZE_ERROR,
                    "a frame larger than allowed",
                ));
            }
            if self.read.len() < frame::HEAD_LEN + head.len {
                self.read
                    .reserve(frame::HEAD_LEN + head.len - self.read.len());
                break Ok(());
            }
            self.read.advance(frame::HEAD_LEN);
            let payload = self.read.split_to(head.len).freeze();
            if let Err(e) = self.frame(&mut state, head, payload) {
                break Err(e);
            }
        };
        drop(state);
        self.wakers.drain(..).for_each(Waker::wake);
        result
    }

    fn frame(&mut self, state: &mut State, head: Head, payload: Bytes) -> Result<(), Malformed> {
        if self.continuing.is_some() && head.kind != frame::CONTINUATION {
            return Err(Malformed(frame::PROTOCOL_ERROR, "a header block cut off"));
        }
        match head.kind {
            frame::DATA => {
                if head.stream == 0 {
                    return Err(Malformed(frame::PROTOCOL_ERROR, "DATA on stream 0"));
                }
                let (start, end) = frame::content(&head, &payload)?;
                state.unacked += head.len as u32;
                if state.unacked >= CONNECTION_WINDOW / 4 {
                    let increment = std::mem::take(&mut state.unacked);
                    frame::put_window_update(&mut state.tail, 0, increment);
                }
                if let Some(slot) = state.streams.get_mut(&head.stream) {
                    if !slot.ended && slot.failed.is_none() {
                        if end > start {
                            slot.data.push_back(payload.slice(start..end));
                        }
                        slot.ended = head.has(frame::END_STREAM);
                        slot.wake(&mut self.wakers);
                    }
                }
            }
            frame::HEADERS => {
                if head.stream == 0 {
                    return Err(Malformed(frame::PROTOCOL_ERROR, "HEADERS on stream 0"));
                }
                let (start, end) = frame::content(&head, &payload)?;
                let fragment = payload.slice(start..end);
                let end_stream = head.has(frame::END_STREAM);
                if head.has(frame::END_HEADERS) {
                    self.headers(state, head.stream, end_stream, &fragment)?;
                } else {
                    self.continuing =
                        Some((head.stream, end_stream, BytesMut::from(&fragment[..])));
                }
            }
            frame::CONTINUATION => {
                let Some((stream, end_stream, mut block)) = self.continuing.take() else {
                    return Err(Malformed(
                        frame::PROTOCOL_ERROR,
                        "CONTINUATION out of place",
                    ));
                };
                if stream != head.stream {
                    return Err(Malformed(
                        frame::PROTOCOL_ERROR,
                        "CONTINUATION on another stream",
                    ));
                }
                block.extend_from_slice(&payload);
                if block.len() > MAX_HEADER_LIST * 2 {
                    return Err(Malformed(frame::PROTOCOL_ERROR, "a header block too large"));
                }
                if head.has(frame::END_HEADERS) {
                    self.headers(state, stream, end_stream, &block.freeze())?;
                } else {
                    self.continuing = Some((stream, end_stream, block));
                }
            }
            frame::RST_STREAM => {
                let code = frame::u32_at(&payload, 0)?;
                if let Some(slot) = state.streams.get_mut(&head.stream) {
                    slot.failed.get_or_insert(Failure::Reset(code));
                    slot.unsent.clear();
                    slot.unsent_len = 0;
                    slot.wake(&mut self.wakers);
                }
            }
            frame::SETTINGS => {
                if head.has(frame::ACK) {
                    return Ok(());
                }
                let mut max_streams = usize::MAX;
                for (id, value) in frame::settings(&payload)? {
                    match id {
                        frame::SETTINGS_MAX_CONCURRENT_STREAMS => max_streams = value as usize,
                        frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                            let value = i64::from(value);
                            if value > frame::MAX_WINDOW {
                                return Err(Malformed(
                                    frame::FLOW_CONTROL_ERROR,
                                    "window too large",
                                ));
                            }
                            let delta = value - state.peer_window;
                            state.peer_window = value;
                            for slot in state.streams.values_mut() {
                                slot.window += delta;
                            }
                        }
                        frame::SETTINGS_MAX_FRAME_SIZE => {
                            if !(frame::DEFAULT_MAX_FRAME..1 << 24).contains(&(value as usize)) {
                                return Err(Malformed(frame::PROTOCOL_ERROR, "bad max frame size"));
                            }
                            state.peer_max_frame = value as usize;
                        }
                        _ => {}
                    }
                }
                state.peer_max_streams = max_streams;
                self.wakers.append(&mut state.waiting);
                frame::put_settings_ack(&mut state.tail);
                state.send_blocked();
            }
            frame::PING => {
                let bytes: [u8; 8] = payload[..]
                    .try_into()
                    .map_err(|_| Malformed(frame::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
                if head.has(frame::ACK) {
                    let number = u64::from_be_bytes(bytes);
                    state.pings_answered = state.pings_answered.max(number.min(state.pings_sent));
                    self.wakers.append(&mut state.ping_waiters);
                } else {
                    frame::put_ping(&mut state.tail, frame::ACK, bytes);
                }
            }
            frame::GOAWAY => {
                let last = frame::u32_at(&payload, 0)? & 0x7fff_ffff;
                state.going_away = true;
                let reason: Arc<str> =
                    "the server is going away (GOAWAY) and did not take the call".into();
                for (&id, slot) in state.streams.iter_mut() {
                    if id > last && slot.failed.is_none() {
                        slot.failed = Some(Failure::Lost(reason.clone()));
                        slot.unsent.clear();
                        slot.unsent_len = 0;
                        slot.wake(&mut self.wakers);
                    }
                }
                self.wakers.append(&mut state.waiting);
            }
            frame::WINDOW_UPDATE => {
                let increment = i64::from(frame::u32_at(&payload, 0)? & 0x7fff_ffff);
                if head.stream == 0 {
                    if increment == 0 {
                        return Err(Malformed(frame::PROTOCOL_ERROR, "a zero window update"));
                    }
                    state.window += increment;
                    if state.window > frame::MAX_WINDOW {
                        return Err(Malformed(frame::FLOW_CONTROL_ERROR, "window past 2^31-1"));
                    }
                } else if let Some(slot) = state.streams.get_mut(&head.stream) {
                    slot.window += increment;
                }
                state.send_blocked();
            }
            frame::PUSH_PROMISE => {
                return Err(Malformed(
                    frame::PROTOCOL_ERROR,
                    "PUSH_PROMISE though push is off",
                ));
            }
            _ => {} // PRIORITY, and types this client does not know: ignored (§4.1)
        }
        Ok(())
    }

    /// A whole header block on `stream`: its answer's head, or its trailers. Decoded even when
    /// the stream is gone (the table must follow the server's).
    fn headers(
        &mut self,
        state: &mut State,
        stream: u32,
        end_stream: bool,
        block: &Bytes,
    ) -> Result<(), Malformed> {
        let block = self
            .decoder
            .decode(block)
            .map_err(|e| Malformed(frame::COMPRESSION_ERROR, e.0))?;
        let Some(slot) = state.streams.get_mut(&stream) else {
            return Ok(());
        };
        if slot.ended || slot.failed.is_some() {
            return Ok(());
        }
        let informational = block.status.is_some_and(|s| (100..200).contains(&s));
        let malformed = block.malformed
            || if slot.head_seen {
                block.status.is_some() || !end_stream
            } else {
                block.status.is_none() || informational && end_stream
            };
        if malformed {
            slot.failed = Some(Failure::Reset(frame::PROTOCOL_ERROR));
            slot.unsent.clear();
            slot.unsent_len = 0;
            frame::put_rst_stream(&mut state.tail, stream, frame::PROTOCOL_ERROR);
        } else if !slot.head_seen {
            if informational {
                return Ok(());
            }
            slot.head_seen = true;
            slot.head = block.status.map(|status| (status, block.headers));
        } else {
            slot.trailers = Some(block.headers);
        }
        slot.ended |= end_stream;
        slot.wake(&mut self.wakers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http2::hpack::{put_field, Literal, CONTENT_TYPE, METHOD_POST, PATH};

    /// A server of h2's on one end of an in-memory pipe: answers each request with its body's
    /// length as the message, then `grpc-status: 0`; `reset` answers instead with RST_STREAM.
    fn serve(io: tokio::io::DuplexStream, reset: bool) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let mut connection = h2::server::handshake(io).await.expect("handshake");
            let mut seen = Vec::new();
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                seen.push(request.uri().path().to_owned());
                let mut body = request.into_body();
                tokio::spawn(async move {
                    if reset {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        return;
                    }
                    let mut len = 0;
                    while let Some(Ok(data)) = body.data().await {
                        len += data.len();
                        let _ = body.flow_control().release_capacity(data.len());
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut send = respond.send_response(head, false).expect("head");
                    send.send_data(Bytes::from(len.to_string()), false)
                        .expect("data");
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    send.send_trailers(trailers).expect("trailers");
                });
            }
            seen
        })
    }

    fn block() -> Vec<u8> {
        let mut block = BytesMut::new();
        block.extend_from_slice(&[METHOD_POST, 0x86]);
        put_field(&mut block, Literal::WithoutIndexing, PATH, b"", b"/x.Y/Z");
        put_field(&mut block, Literal::WithoutIndexing, 1, b"", b"localhost");
        put_field(
            &mut block,
            Literal::WithoutIndexing,
            CONTENT_TYPE,
            b"",
            b"application/grpc",
        );
        block.to_vec()
    }

    async fn answer(mut stream: Stream) -> Result<(u16, String, String), Failure> {
        let (status, _) = poll_fn(|cx| stream.poll_head(cx)).await?;
        let (mut data, mut trailers) = (String::new(), String::new());
        while let Some(frame) = poll_fn(|cx| stream.poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(bytes) => data.push_str(std::str::from_utf8(&bytes).unwrap()),
                Err(frame) => {
                    let t = frame.into_trailers().unwrap();
                    trailers = t["grpc-status"].to_str().unwrap().to_owned();
                }
            }
        }
        Ok((status, data, trailers))
    }

    #[tokio::test]
    async fn calls_large_and_many_are_answered_on_one_connection() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let served = serve(server, false);
        let (connection, driver) = Connection::new(client);
        tokio::spawn(driver);
        // 3 MiB: more than h2's server grants at first (64 KiB), so it waits for windows.
        let large = Bytes::from(vec![7u8; 3 << 20]);
        let stream = connection
            .start(&block(), &[Bytes::from_static(b"abcde"), large])
            .await;
        let (status, data, trailers) = answer(stream.expect("started")).await.expect("answered");
        assert_eq!(
            (status, data.as_str(), trailers.as_str()),
            (200, "3145733", "0")
        );
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let connection = connection.clone();
                tokio::spawn(async move {
                    let message = Bytes::from(vec![1u8; i * 100]);
                    let stream = connection
                        .start(&block(), &[message])
                        .await
                        .expect("started");
                    answer(stream).await.expect("answered").1
                })
            })
            .collect();
        let mut lengths = Vec::new();
        for call in calls {
            lengths.push(call.await.expect("no panic"));
        }
        assert_eq!(
            lengths,
            (0..50).map(|i| (i * 100).to_string()).collect::<Vec<_>>()
        );
        assert!(connection.pinger().ping().await.is_ok());
        drop(connection);
        let seen = served.await.expect("served");
        assert_eq!(seen.len(), 51);
        assert!(seen.iter().all(|path| path == "/x.Y/Z"));
    }

    #[tokio::test]
    async fn the_connection_ends_once_nothing_holds_it() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let _served = serve(server, false);
        let (connection, driver) = Connection::new(client);
        let task = tokio::spawn(driver);
        let stream = connection
            .start(&block(), &[Bytes::from_static(b"x")])
            .await;
        drop(connection);
        // The call's stream still holds it: answered.
        let (status, data, _) = answer(stream.expect("started")).await.expect("answered");
        assert_eq!((status, data.as_str()), (200, "1"));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        assert_eq!(
            ended.expect("ended").expect("no panic"),
            "the connection is no longer used"
        );
    }

    #[tokio::test]
    async fn a_reset_fails_its_call_and_a_lost_connection_all_calls() {
        let (client, server) = tokio::io::duplex(64 << 10);
        let served = serve(server, true);
        let (connection, driver) = Connection::new(client);
        tokio::spawn(driver);
        let stream = connection
            .start(&block(), &[Bytes::from_static(b"x")])
            .await;
        match answer(stream.expect("started")).await {
            Err(Failure::Reset(code)) => assert_eq!(code, 0x7), // REFUSED_STREAM
            other => panic!("{other:?}"),
        }
        served.abort();
        let _ = served.await;
        let stream = connection
            .start(&block(), &[Bytes::from_static(b"x")])
            .await;
        if let Ok(stream) = stream {
            assert!(matches!(answer(stream).await, Err(Failure::Lost(_))));
        }
        assert!(connection.is_closed());
        assert!(connection.start(&block(), &[]).await.is_err());
    }
}
