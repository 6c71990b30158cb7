//! A lean connection's task: writes what its callers queued, reads what the server sends and
//! hands each frame to its stream (answers' heads, data and trailers; resets, settings, pings,
//! GOAWAY and windows for the connection), until the connection ends.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;

use super::frame::{self, Head, Malformed};
use super::hpack::Decoder;
use super::shared::{
    Failure, Shared, State, CONNECTION_WINDOW, MAX_FRAME, MAX_HEADER_LIST, READ_CHUNK,
    STREAM_WINDOW,
};

/// The connection's task: writes what is queued, reads and handles what comes.
pub(super) struct Driver<I> {
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
    pub(super) fn new(io: I, shared: Arc<Shared>, unused: oneshot::Receiver<()>) -> Driver<I> {
        Driver {
            io,
            unused,
            watching: false,
            shared,
            read: BytesMut::with_capacity(READ_CHUNK),
            writing: VecDeque::new(),
            decoder: Decoder::new(MAX_HEADER_LIST),
            continuing: None,
            wakers: Vec::new(),
        }
    }

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
                            slot.buffered += end - start;
                        }
                        if slot.buffered > STREAM_WINDOW as usize {
                            // More than its window: the server broke flow control.
                            slot.data.clear();
                            slot.fail(Failure::Reset(frame::FLOW_CONTROL_ERROR), &mut self.wakers);
                            frame::put_rst_stream(
                                &mut state.tail,
                                head.stream,
                                frame::FLOW_CONTROL_ERROR,
                            );
                            return Ok(());
                        }
                        // Padding counts against the stream's window too: given back with the
                        // data, as it is read.
                        slot.unacked += (head.len - (end - start)) as u32;
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
                    slot.fail(Failure::Reset(code), &mut self.wakers);
                }
            }
            frame::SETTINGS => {
                if head.has(frame::ACK) {
                    return Ok(());
                }
                // Until the first SETTINGS, INITIAL_MAX_STREAMS; left out of it, no limit (its
                // initial value); left out of a later one, unchanged.
                let mut max_streams = match state.settings_seen {
                    true => state.peer_max_streams,
                    false => usize::MAX,
                };
                state.settings_seen = true;
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
                        slot.fail(Failure::Lost(reason.clone()), &mut self.wakers);
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
            slot.fail(Failure::Reset(frame::PROTOCOL_ERROR), &mut self.wakers);
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
