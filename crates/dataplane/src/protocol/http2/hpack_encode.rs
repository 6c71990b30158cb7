//! HPACK (RFC 7541) encoding: heads written without touching the peer's dynamic table (every
//! field a literal "without indexing" or "never indexed", strings sent as they are), so the
//! encoder keeps no state. Sans-IO.

use bytes::{BufMut, BytesMut};
use http::HeaderMap;

/// Appends an integer with an `n`-bit prefix, the prefix's other bits set to `flags`.
pub fn put_integer(dst: &mut BytesMut, value: usize, n: u32, flags: u8) {
    let mask = (1usize << n) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// How a literal field is sent: kept out of the peer's table, or never to be kept by any
/// intermediary either (a request id, a timeout, a trace context: values that do not repeat).
#[derive(Clone, Copy)]
pub enum Literal {
    WithoutIndexing,
    NeverIndexed,
}

/// Appends a literal field whose name is static table entry `index` (0: the name follows).
pub fn put_field(dst: &mut BytesMut, how: Literal, index: usize, name: &[u8], value: &[u8]) {
    let flags = match how {
        Literal::WithoutIndexing => 0x00,
        Literal::NeverIndexed => 0x10,
    };
    put_integer(dst, index, 4, flags);
    if index == 0 {
        put_integer(dst, name.len(), 7, 0);
        dst.put_slice(name);
    }
    put_integer(dst, value.len(), 7, 0);
    dst.put_slice(value);
}

/// Appends a head's block: its `:status` (an answer's head), then its fields, each a literal
/// kept out of the peer's table (never indexed when the value is marked sensitive).
pub fn put_head(dst: &mut BytesMut, status: Option<u16>, headers: &HeaderMap) {
    match status {
        Some(200) => dst.put_u8(STATUS_200),
        Some(status) => {
            let digits = status.to_string();
            put_field(
                dst,
                Literal::WithoutIndexing,
                STATUS,
                b"",
                digits.as_bytes(),
            );
        }
        None => {}
    }
    for (name, value) in headers {
        let how = match value.is_sensitive() {
            true => Literal::NeverIndexed,
            false => Literal::WithoutIndexing,
        };
        let index = match *name == http::header::CONTENT_TYPE {
            true => CONTENT_TYPE,
            false => 0,
        };
        put_field(dst, how, index, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Static table indices a head uses.
pub const STATUS_200: u8 = 0x80 | 8;
pub const STATUS: usize = 8;
pub const METHOD_POST: u8 = 0x80 | 3;
pub const SCHEME_HTTP: u8 = 0x80 | 6;
pub const SCHEME_HTTPS: u8 = 0x80 | 7;
pub const AUTHORITY: usize = 1;
pub const PATH: usize = 4;
pub const CONTENT_TYPE: usize = 31;
