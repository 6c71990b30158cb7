//! HTTP/2 frames (RFC 9113 §4, §6), as far as a client of unary calls reads and writes them:
//! the 9-byte frame head, the frames it sends built into a buffer, and the payloads it reads
//! (padding, SETTINGS, GOAWAY) taken apart. Sans-IO.

use bytes::{BufMut, BytesMut};

/// What a client sends first on a connection (§3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEAD_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// SETTINGS parameters (§6.5.2).
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (§7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;

/// The largest window a peer may grant (§6.9.1), and the one a connection starts with.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const DEFAULT_MAX_FRAME: usize = 16_384;

/// A frame's head: its payload's length, type, flags and stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// The head at the start of `buf`, when all 9 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Head> {
        let b: &[u8; HEAD_LEN] = buf.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame head for a payload of `len` bytes.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    dst.reserve(HEAD_LEN + len);
    dst.put_slice(&(len as u32).to_be_bytes()[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream);
}

pub fn put_settings(dst: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(dst, 6 * settings.len(), SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, SETTINGS, ACK, 0);
}

pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

pub fn put_rst_stream(dst: &mut BytesMut, stream: u32, code: u32) {
    put_head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(code);
}

/// GOAWAY: no stream past `last` will be served.
pub fn put_goaway(dst: &mut BytesMut, last: u32, code: u32) {
    put_head(dst, 8, GOAWAY, 0, 0);
    dst.put_u32(last);
    dst.put_u32(code);
}

pub fn put_ping(dst: &mut BytesMut, flags: u8, payload: [u8; 8]) {
    put_head(dst, 8, PING, flags, 0);
    dst.put_slice(&payload);
}

/// A HEADERS frame whose block `encode` writes straight after its head (its length filled in
/// after), moved into CONTINUATION frames when it came out larger than the peer's frame size.
pub fn put_headers_with(
    dst: &mut BytesMut,
    stream: u32,
    end_stream: bool,
    max: usize,
    encode: impl FnOnce(&mut BytesMut),
) {
    let at = dst.len();
    let flags = if end_stream { END_STREAM } else { 0 };
    put_head(dst, 0, HEADERS, flags | END_HEADERS, stream);
    encode(dst);
    let len = dst.len() - at - HEAD_LEN;
    if len <= max {
        dst[at..at + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    } else {
        let block = dst.split_off(at + HEAD_LEN);
        dst.truncate(at);
        put_headers(dst, stream, &block, end_stream, max);
    }
}

/// A HEADERS frame carrying all of `block` (no padding, no priority), split into CONTINUATION
/// frames when it is larger than the peer's frame size.
pub fn put_headers(dst: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool, max: usize) {
    let mut chunks = block.chunks(max.max(1)).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if block.is_empty() {
        put_head(dst, 0, kind, flags | END_HEADERS, stream);
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        put_head(dst, chunk.len(), kind, flags, stream);
        dst.put_slice(chunk);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// A frame that cannot be read: the connection's error code and what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub u32, pub &'static str);

/// A padded frame's content without its padding (§6.1), and without a HEADERS frame's priority
/// fields (§6.2).
pub fn content(head: &Head, payload: &[u8]) -> Result<(usize, usize), Malformed> {
    let (mut start, mut end) = (0, payload.len());
    if head.has(PADDED) {
        let pad = *payload.first().ok_or(Malformed(
            PROTOCOL_ERROR,
            "padded frame without its pad length",
        ))? as usize;
        start = 1;
        end = end
            .checked_sub(pad)
            .filter(|&end| end >= start)
            .ok_or(Malformed(PROTOCOL_ERROR, "padding longer than the frame"))?;
    }
    if head.kind == HEADERS && head.has(PRIORITY) {
        start += 5;
        if start > end {
            return Err(Malformed(
                FRAME_SIZE_ERROR,
                "HEADERS too short for its priority",
            ));
        }
    }
    Ok((start, end))
}

/// A SETTINGS frame's parameters.
pub fn settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, Malformed> {
    if !payload.len().is_multiple_of(6) {
        return Err(Malformed(
            FRAME_SIZE_ERROR,
            "SETTINGS not a multiple of 6 bytes",
        ));
    }
    Ok(payload.chunks_exact(6).map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        )
    }))
}

/// A 4-byte big-endian number (a WINDOW_UPDATE's increment, an RST_STREAM's code), its top bit
/// cleared when `reserved`.
pub fn u32_at(payload: &[u8], at: usize) -> Result<u32, Malformed> {
    let b = payload
        .get(at..at + 4)
        .ok_or(Malformed(FRAME_SIZE_ERROR, "frame too short"))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_written_reads_back() {
        let mut buf = BytesMut::new();
        put_head(
            &mut buf,
            0x01_02_03,
            HEADERS,
            END_HEADERS | END_STREAM,
            0x8000_0005,
        );
        let head = Head::parse(&buf).expect("nine bytes");
        assert_eq!(
            head,
            Head {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: END_HEADERS | END_STREAM,
                stream: 5, // the reserved bit is not part of the id
            }
        );
        assert_eq!(Head::parse(&buf[..8]), None);
    }

    #[test]
    fn a_large_header_block_goes_on_in_continuations() {
        let mut buf = BytesMut::new();
        put_headers(&mut buf, 3, &[7; 10], true, 4);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(head) = Head::parse(&buf[at..]) {
            seen.push((head.kind, head.flags, head.len));
            at += HEAD_LEN + head.len;
        }
        assert_eq!(
            seen,
            [
                (HEADERS, END_STREAM, 4),
                (CONTINUATION, 0, 4),
                (CONTINUATION, END_HEADERS, 2)
            ]
        );
    }

    #[test]
    fn a_block_encoded_in_place_is_framed_as_one_given_whole() {
        for (size, max) in [(0, 4), (3, 4), (4, 4), (10, 4), (300, 16_384)] {
            let block: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let (mut whole, mut in_place) = (
                BytesMut::from(&b"before"[..]),
                BytesMut::from(&b"before"[..]),
            );
            put_headers(&mut whole, 5, &block, false, max);
            put_headers_with(&mut in_place, 5, false, max, |dst| {
                dst.extend_from_slice(&block)
            });
            assert_eq!(whole, in_place, "{size} bytes, frames of {max}");
        }
    }

    #[test]
    fn padding_and_priority_are_cut_off() {
        let head = Head {
            len: 0,
            kind: HEADERS,
            flags: PADDED | PRIORITY,
            stream: 1,
        };
        // pad length 2, 5 bytes of priority, content "ab", 2 bytes of padding
        let payload = [2, 0, 0, 0, 1, 16, b'a', b'b', 0, 0];
        let (start, end) = content(&head, &payload).expect("well formed");
        assert_eq!(&payload[start..end], b"ab");
        assert!(content(&head, &[9, 1, 2]).is_err());
        let data = Head {
            kind: DATA,
            flags: PADDED,
            ..head
        };
        assert!(content(&data, &[]).is_err());
    }

    #[test]
    fn settings_are_read_in_sixes() {
        let mut buf = BytesMut::new();
        put_settings(
            &mut buf,
            &[
                (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20),
                (SETTINGS_ENABLE_PUSH, 0),
            ],
        );
        let read: Vec<_> = settings(&buf[HEAD_LEN..]).expect("whole").collect();
        assert_eq!(
            read,
            [
                (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20),
                (SETTINGS_ENABLE_PUSH, 0)
            ]
        );
        assert!(settings(&[0; 5]).is_err());
    }
}
