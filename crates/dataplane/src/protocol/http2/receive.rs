//! What a lean connection reads, handled without I/O: the client's preface (a server's), then
//! each frame handed to its stream (heads, data and trailers, resets) or to the connection
//! (settings, pings, GOAWAY, windows).

use std::sync::Arc;
use std::task::Waker;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, Method, Request, Uri};

use super::frame::{self, Head, Malformed};
use super::hpack::{Block, Decoder};
use super::shared::{
    Failure, State, CONNECTION_WINDOW, MAX_FRAME, MAX_HEADER_LIST, MAX_STREAMS, STREAM_WINDOW,
};

pub(super) struct Receiver {
    /// A server's, until the client's preface has been read.
    preface: bool,
    decoder: Decoder,
    /// A header block whose CONTINUATIONs are still to come: its stream, whether it ends the
    /// stream, and its fragments so far.
    continuing: Option<(u32, bool, BytesMut)>,
    /// A server's: the last request's path, parsed (a connection's requests mostly name one).
    last_path: Option<(Bytes, Uri)>,
    pub(super) wakers: Vec<Waker>,
}

impl Receiver {
    pub(super) fn new(server: bool) -> Receiver {
        Receiver {
            preface: server,
            decoder: match server {
                true => Decoder::for_requests(MAX_HEADER_LIST),
                false => Decoder::new(MAX_HEADER_LIST),
            },
            continuing: None,
            last_path: None,
            wakers: Vec::new(),
        }
    }

    /// Handles every whole frame in `read` (taken out of it); who waits for what it brought is
    /// listed in `wakers`, to be woken once the state is unlocked.
    pub(super) fn frames(
        &mut self,
        read: &mut BytesMut,
        state: &mut State,
    ) -> Result<(), Malformed> {
        if self.preface {
            if read.len() < frame::PREFACE.len() {
                return Ok(());
            }
            if !read.starts_with(frame::PREFACE) {
                return Err(Malformed(frame::PROTOCOL_ERROR, "not an HTTP/2 preface"));
            }
            read.advance(frame::PREFACE.len());
            self.preface = false;
        }
        loop {
            let Some(head) = Head::parse(read) else {
                return Ok(());
            };
            if head.len > MAX_FRAME {
                return Err(Malformed(
                    frame::FRAME_SIZE_ERROR,
                    "a frame larger than allowed",
                ));
            }
            if read.len() < frame::HEAD_LEN + head.len {
                read.reserve(frame::HEAD_LEN + head.len - read.len());
                return Ok(());
            }
            read.advance(frame::HEAD_LEN);
            let payload = read.split_to(head.len).freeze();
            self.frame(state, head, payload)?;
        }
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
                    if slot.unread && !slot.ended {
                        // Nobody reads it: its window goes back at once.
                        slot.ended = head.has(frame::END_STREAM);
                        slot.give_back(head.stream, head.len as u32, &mut state.tail);
                    } else if !slot.ended && slot.failed.is_none() {
                        if end > start {
                            slot.data.push_back(payload.slice(start..end));
                            slot.buffered += end - start;
                        }
                        if slot.buffered > STREAM_WINDOW as usize {
                            // More than its window: the server broke flow control.
                            slot.data.clear();
                            let code = frame::FLOW_CONTROL_ERROR;
                            slot.reset(head.stream, code, &mut state.tail, &mut self.wakers);
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
                state.settle(head.stream); // a server's stream nobody holds any more is gone
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
                state.send_blocked(&mut self.wakers);
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
            frame::GOAWAY if state.server => {} // the client opens no more: those open go on
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
                state.send_blocked(&mut self.wakers);
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

    /// A whole header block on `stream`: a server's request head or trailers, a client's answer
    /// head or trailers. Decoded even when the stream is gone (the table must follow the peer's).
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
        if state.server {
            return self.received_head(state, stream, end_stream, block);
        }
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
            let code = frame::PROTOCOL_ERROR;
            slot.reset(stream, code, &mut state.tail, &mut self.wakers);
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

impl Receiver {
    /// A whole header block a client sent on `stream`: a new request's head, or a request's
    /// trailers. A head that opens no stream the gateway serves (malformed, over the limit, after
    /// GOAWAY) is refused with RST_STREAM.
    fn received_head(
        &mut self,
        state: &mut State,
        stream: u32,
        end_stream: bool,
        block: Block,
    ) -> Result<(), Malformed> {
        let wakers = &mut self.wakers;
        if stream.is_multiple_of(2) {
            return Err(Malformed(
                frame::PROTOCOL_ERROR,
                "a stream id a client may not open",
            ));
        }
        if let Some(slot) = state.streams.get_mut(&stream) {
            if slot.ended || slot.failed.is_some() {
                return Ok(());
            }
            let pseudo = block.method.is_some()
                || block.path.is_some()
                || block.scheme.is_some()
                || block.authority.is_some();
            if block.malformed || pseudo || !end_stream {
                slot.reset(stream, frame::PROTOCOL_ERROR, &mut state.tail, wakers);
                return Ok(());
            }
            if !slot.unread {
                slot.trailers = Some(block.headers);
            }
            slot.ended = true;
            slot.wake(wakers);
            return Ok(());
        }
        if stream <= state.last_opened {
            return Ok(()); // a stream already closed: what comes late is dropped
        }
        state.last_opened = stream;
        if state.going_away || state.streams.len() >= MAX_STREAMS {
            frame::put_rst_stream(&mut state.tail, stream, frame::REFUSED_STREAM);
            return Ok(());
        }
        let Some(request) = request(block, &mut self.last_path) else {
            frame::put_rst_stream(&mut state.tail, stream, frame::PROTOCOL_ERROR);
            return Ok(());
        };
        let mut slot = state.new_slot();
        slot.window = state.peer_window;
        slot.ended = end_stream;
        slot.holders = 2;
        state.streams.insert(stream, slot);
        state.accepted.push_back((stream, request));
        Ok(())
    }
}

/// A request's head, when it is a well-formed one (RFC 9113 §8.3.1, §8.2.2).
fn request(block: Block, last_path: &mut Option<(Bytes, Uri)>) -> Option<Request<()>> {
    let (Some(method), Some(_scheme), Some(path)) = (block.method, block.scheme, block.path) else {
        return None;
    };
    // Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2): the request's few
    // names compared with them (no lookup by a name parsed anew).
    const CONNECTION_SPECIFIC: [HeaderName; 5] = [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    if block.malformed
        || block
            .headers
            .keys()
            .any(|name| CONNECTION_SPECIFIC.contains(name))
        || block
            .headers
            .get(http::header::TE)
            .is_some_and(|te| te != "trailers")
    {
        return None;
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::from_bytes(&method).ok()?;
    *request.uri_mut() = match last_path {
        Some((last, uri)) if *last == path => uri.clone(),
        _ => {
            let uri = Uri::from_maybe_shared(path.clone()).ok()?;
            *last_path = Some((path, uri.clone()));
            uri
        }
    };
    *request.headers_mut() = block.headers;
    Some(request)
}

#[cfg(test)]
#[path = "receive_tests.rs"]
mod tests;
