//! HPACK (RFC 7541) decoding for both ends of a connection: header blocks decoded against the
//! connection's dynamic table (an answer's status and headers for a client, a request's
//! pseudo-headers and headers for a server). Sans-IO; the encoder is `hpack_encode`.
//!
//! The dynamic table keeps each entry parsed (`HeaderName`, `HeaderValue`): a field the server
//! sends again by its index, as gRPC servers do with nearly every field after the first answer,
//! costs two reference counts.

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::huffman::huffman_decode;

/// The dynamic table's size a decoder starts with and never lets the peer exceed (we do not send
/// SETTINGS_HEADER_TABLE_SIZE, so it stays at the default).
pub const TABLE_SIZE: usize = 4096;

/// A block that cannot be decoded: the connection is lost (COMPRESSION_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub struct CompressionError(pub &'static str);

/// A decoded header block: the `:status` of an answer's head (a client's decoder) or the
/// pseudo-headers of a request's (a server's), its other fields, and whether a field was
/// malformed (an invalid name or value, a pseudo-header unknown, repeated, out of place or of the
/// other end's kind, over the size limit), which fails the stream but not the connection.
#[derive(Debug, Default)]
pub struct Block {
    pub status: Option<u16>,
    pub method: Option<Bytes>,
    pub scheme: Option<Bytes>,
    pub authority: Option<Bytes>,
    pub path: Option<Bytes>,
    pub headers: HeaderMap,
    pub malformed: bool,
}

impl Block {
    /// The slot a request's pseudo-header goes in.
    fn pseudo(&mut self, which: Pseudo) -> &mut Option<Bytes> {
        match which {
            Pseudo::Method => &mut self.method,
            Pseudo::Scheme => &mut self.scheme,
            Pseudo::Authority => &mut self.authority,
            Pseudo::Path => &mut self.path,
        }
    }
}

/// A request's pseudo-header fields.
#[derive(Clone, Copy, Debug)]
enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
}

impl Pseudo {
    fn of(name: &[u8]) -> Option<Pseudo> {
        match name {
            b":method" => Some(Pseudo::Method),
            b":scheme" => Some(Pseudo::Scheme),
            b":authority" => Some(Pseudo::Authority),
            b":path" => Some(Pseudo::Path),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum Field {
    Status(u16),
    Request(Pseudo, Bytes),
    Header(HeaderName, HeaderValue),
    /// Decoded, kept in the table, but unusable in a head.
    Malformed,
}

struct Entry {
    field: Field,
    /// Its name's length: a literal that names it by index adds an entry of that name.
    name_len: usize,
    size: usize,
}

pub struct Decoder {
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The most a block's fields may add up to (name + value + 32 each), as advertised.
    max_list: usize,
    /// A server's decoder: blocks are requests' heads (pseudo-headers of requests, no status).
    requests: bool,
}

impl Decoder {
    /// A client's decoder: blocks are answers' heads and trailers.
    pub fn new(max_list: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
            max_list,
            requests: false,
        }
    }

    /// A server's decoder: blocks are requests' heads and trailers.
    pub fn for_requests(max_list: usize) -> Decoder {
        Decoder {
            requests: true,
            ..Decoder::new(max_list)
        }
    }

    /// Decodes a whole header block (its CONTINUATIONs joined).
    pub fn decode(&mut self, block: &Bytes) -> Result<Block, CompressionError> {
        let mut out = Block::default();
        let mut list = 0;
        let mut at = 0;
        let mut fields_seen = false;
        while at < block.len() {
            let first = block[at];
            let field = if first & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                self.indexed(index)?
            } else if first & 0xe0 == 0x20 {
                // A dynamic table size update: only before the block's first field.
                let size = integer(block, &mut at, 5)?;
                if fields_seen || size > TABLE_SIZE {
                    return Err(CompressionError("misplaced or oversized table size update"));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                let indexing = first & 0x40 != 0;
                let index = integer(block, &mut at, if indexing { 6 } else { 4 })?;
                let name = match index {
                    0 => Name::Literal(string(block, &mut at)?),
                    n => Name::Indexed(n),
                };
                let value = string(block, &mut at)?;
                let (field, name_len) = self.literal(name, value.clone())?;
                if indexing {
                    self.insert(field.clone(), name_len, name_len + value.len() + 32);
                }
                field
            };
            fields_seen = true;
            match field {
                Field::Status(status)
                    if !self.requests && out.status.is_none() && out.headers.is_empty() =>
                {
                    out.status = Some(status);
                    list += 32 + 10;
                }
                Field::Request(which, value) if self.requests && out.headers.is_empty() => {
                    list += 42 + value.len();
                    let slot = out.pseudo(which);
                    match slot {
                        None => *slot = Some(value),
                        Some(_) => out.malformed = true, // repeated
                    }
                }
                Field::Header(name, value) => {
                    list += 32 + name.as_str().len() + value.len();
                    out.headers.append(name, value);
                }
                Field::Status(_) | Field::Request(..) | Field::Malformed => out.malformed = true,
            }
        }
        if list > self.max_list {
            out.malformed = true;
        }
        Ok(out)
    }

    fn indexed(&self, index: usize) -> Result<Field, CompressionError> {
        match index {
            0 => Err(CompressionError("index 0")),
            1..=61 => Ok(static_field(index)),
            n => self
                .table
                .get(n - 62)
                .map(|e| e.field.clone())
                .ok_or(CompressionError("index past the dynamic table")),
        }
    }

    /// A literal field, and its name's length.
    fn literal(&self, name: Name, value: Bytes) -> Result<(Field, usize), CompressionError> {
        let (field, name_len) = match name {
            Name::Indexed(index) => {
                let name_len = match index {
                    1..=61 => STATIC[index - 1].0.len(),
                    n => match self.table.get(n - 62) {
                        Some(entry) => entry.name_len,
                        None => return Err(CompressionError("name index past the table")),
                    },
                };
                let field = match self.indexed(index)? {
                    Field::Status(_) => status_field(&value),
                    Field::Request(which, _) => Field::Request(which, value.clone()),
                    Field::Header(name, _) => header_field(name, value.clone()),
                    Field::Malformed => Field::Malformed,
                };
                (field, name_len)
            }
            Name::Literal(name) => {
                let field = if name.first() == Some(&b':') {
                    match (&name[..], Pseudo::of(&name)) {
                        (b":status", _) => status_field(&value),
                        (_, Some(which)) => Field::Request(which, value.clone()),
                        _ => Field::Malformed,
                    }
                } else {
                    match HeaderName::from_bytes(&name) {
                        Ok(header) if header.as_str().as_bytes() == &name[..] => {
                            header_field(header, value.clone())
                        }
                        _ => Field::Malformed, // uppercase or invalid characters
                    }
                };
                (field, name.len())
            }
        };
        Ok((field, name_len))
    }

    fn insert(&mut self, field: Field, name_len: usize, size: usize) {
        if size > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(Entry {
            field,
            name_len,
            size,
        });
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some(entry) => self.size -= entry.size,
                None => break,
            }
        }
    }
}

enum Name {
    Indexed(usize),
    Literal(Bytes),
}

fn status_field(value: &[u8]) -> Field {
    match value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => Field::Status(
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
        ),
        _ => Field::Malformed,
    }
}

fn header_field(name: HeaderName, value: Bytes) -> Field {
    match HeaderValue::from_maybe_shared(value) {
        Ok(value) => Field::Header(name, value),
        Err(_) => Field::Malformed,
    }
}

/// Static table entries are parsed once.
fn static_field(index: usize) -> Field {
    static PARSED: OnceLock<Vec<Field>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        STATIC
            .iter()
            .map(|&(name, value)| match name {
                ":status" => status_field(value.as_bytes()),
                _ if name.starts_with(':') => match Pseudo::of(name.as_bytes()) {
                    Some(which) => Field::Request(which, Bytes::from_static(value.as_bytes())),
                    None => Field::Malformed,
                },
                _ => Field::Header(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                ),
            })
            .collect()
    });
    parsed[index - 1].clone()
}

/// An integer with an `n`-bit prefix (§5.1), starting at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, n: u32) -> Result<usize, CompressionError> {
    const TRUNCATED: CompressionError = CompressionError("integer cut off");
    let mask = (1usize << n) - 1;
    let mut value = usize::from(*block.get(*at).ok_or(TRUNCATED)?) & mask;
    *at += 1;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or(TRUNCATED)?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        if shift > 28 {
            return Err(CompressionError("integer too large"));
        }
    }
}

/// A string literal (§5.2): the block's own bytes, or its Huffman code decoded.
fn string(block: &Bytes, at: &mut usize) -> Result<Bytes, CompressionError> {
    let huffman = block.get(*at).is_some_and(|b| b & 0x80 != 0);
    let len = integer(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|&end| end <= block.len())
        .ok_or(CompressionError("string past the block"))?;
    let raw = block.slice(*at..end);
    *at = end;
    if huffman {
        return huffman_decode(&raw)
            .map(Bytes::from)
            .map_err(CompressionError);
    }
    Ok(raw)
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
