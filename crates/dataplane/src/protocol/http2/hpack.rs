//! HPACK (RFC 7541) for a client: header blocks decoded against the connection's dynamic table
//! into an answer's status and headers, and request heads encoded without touching the peer's
//! table (every field a literal "without indexing" or "never indexed", strings sent as they
//! are), so the encoder keeps no state. Sans-IO.
//!
//! The dynamic table keeps each entry parsed (`HeaderName`, `HeaderValue`): a field the server
//! sends again by its index, as gRPC servers do with nearly every field after the first answer,
//! costs two reference counts.

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::huffman_codes::CODES;

/// The dynamic table's size a decoder starts with and never lets the peer exceed (we do not send
/// SETTINGS_HEADER_TABLE_SIZE, so it stays at the default).
pub const TABLE_SIZE: usize = 4096;

/// A block that cannot be decoded: the connection is lost (COMPRESSION_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub struct CompressionError(pub &'static str);

/// A decoded header block: the `:status` of an answer's head, its other fields, and whether a
/// field was malformed (an invalid name or value, an unknown pseudo-header, over the size
/// limit), which fails the stream but not the connection.
#[derive(Debug, Default)]
pub struct Block {
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub malformed: bool,
}

#[derive(Clone)]
enum Field {
    Status(u16),
    Header(HeaderName, HeaderValue),
    /// Decoded, kept in the table, but unusable in an answer.
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
}

impl Decoder {
    pub fn new(max_list: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
            max_list,
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
                Field::Status(status) if out.status.is_none() && out.headers.is_empty() => {
                    out.status = Some(status);
                    list += 32 + 10;
                }
                Field::Header(name, value) => {
                    list += 32 + name.as_str().len() + value.len();
                    out.headers.append(name, value);
                }
                Field::Status(_) | Field::Malformed => out.malformed = true,
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
                    Field::Header(name, _) => header_field(name, value.clone()),
                    Field::Malformed => Field::Malformed,
                };
                (field, name_len)
            }
            Name::Literal(name) => {
                let field = if name.first() == Some(&b':') {
                    match &name[..] {
                        b":status" => status_field(&value),
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
                _ if name.starts_with(':') => Field::Malformed, // a request's, not an answer's
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
        return huffman_decode(&raw).map(Bytes::from);
    }
    Ok(raw)
}

/// The Huffman code as a binary tree: node `i`'s children at `tree[i]`, a leaf marked by LEAF.
const LEAF: u16 = 0x8000;

fn tree() -> &'static [[u16; 2]] {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut tree = vec![[0u16; 2]];
        for (symbol, &(code, len)) in CODES.iter().enumerate() {
            let mut node = 0;
            for bit in (0..len).rev() {
                let side = ((code >> bit) & 1) as usize;
                if bit == 0 {
                    tree[node][side] = LEAF | symbol as u16;
                } else {
                    if tree[node][side] == 0 {
                        tree.push([0, 0]);
                        tree[node][side] = (tree.len() - 1) as u16;
                    }
                    node = tree[node][side] as usize;
                }
            }
        }
        tree
    })
}

pub fn huffman_decode(code: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let tree = tree();
    let mut out = Vec::with_capacity(code.len() * 8 / 5);
    let (mut node, mut pending_bits, mut all_ones) = (0usize, 0u32, true);
    for byte in code {
        for shift in (0..8).rev() {
            let bit = usize::from((byte >> shift) & 1);
            let next = tree[node][bit];
            pending_bits += 1;
            all_ones &= bit == 1;
            if next & LEAF != 0 {
                let symbol = next & !LEAF;
                if symbol == 256 {
                    return Err(CompressionError("EOS in a Huffman string"));
                }
                out.push(symbol as u8);
                (node, pending_bits, all_ones) = (0, 0, true);
            } else {
                node = usize::from(next);
            }
        }
    }
    if pending_bits > 7 || !all_ones {
        return Err(CompressionError("bad Huffman padding"));
    }
    Ok(out)
}

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

/// Static table indices a request head uses.
pub const METHOD_POST: u8 = 0x80 | 3;
pub const SCHEME_HTTP: u8 = 0x80 | 6;
pub const SCHEME_HTTPS: u8 = 0x80 | 7;
pub const AUTHORITY: usize = 1;
pub const PATH: usize = 4;
pub const CONTENT_TYPE: usize = 31;

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
mod tests {
    use super::*;

    fn hex(text: &str) -> Bytes {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn fields(block: &Block) -> Vec<(String, String)> {
        block
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn the_rfc_s_huffman_answers_decode_against_one_table() {
        // RFC 7541 C.6: three responses with Huffman coding, table size 256.
        let mut decoder = Decoder::new(16 << 10);
        decoder.max_size = 256;
        let first = decoder
            .decode(&hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ))
            .expect("decodes");
        assert_eq!(first.status, Some(302));
        assert_eq!(
            fields(&first),
            [
                ("cache-control".into(), "private".into()),
                ("date".into(), "Mon, 21 Oct 2013 20:13:21 GMT".into()),
                ("location".into(), "https://www.example.com".into()),
            ]
        );
        let second = decoder
            .decode(&hex("4883 640e ffc1 c0bf"))
            .expect("decodes");
        assert_eq!(second.status, Some(307));
        assert_eq!(fields(&second), fields(&first));
        let third = decoder
            .decode(&hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ))
            .expect("decodes");
        assert_eq!(third.status, Some(200));
        assert_eq!(third.headers["content-encoding"], "gzip");
        assert_eq!(
            third.headers["set-cookie"],
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        );
        assert_eq!(decoder.size, 215);
        assert!(!third.malformed);
    }

    #[test]
    fn bad_blocks_are_compression_errors_and_bad_fields_malformed() {
        let mut decoder = Decoder::new(16 << 10);
        assert!(decoder.decode(&Bytes::from_static(&[0x80])).is_err()); // index 0
        assert!(decoder.decode(&Bytes::from_static(&[0xbe])).is_err()); // past the table
        assert!(decoder
            .decode(&Bytes::from_static(&[0x00, 0x05, b'a']))
            .is_err()); // cut off
        assert!(decoder
            .decode(&Bytes::from_static(&[0x88, 0x3f, 0xe1, 0x1f]))
            .is_err()); // late resize
                        // An uppercase name is malformed, the block still decoded.
        let block = decoder
            .decode(&Bytes::from_static(b"\x88\x00\x01X\x01y"))
            .expect("decodes");
        assert!(block.malformed);
        // A request's pseudo-header in an answer is malformed too.
        assert!(
            decoder
                .decode(&Bytes::from_static(&[0x82]))
                .unwrap()
                .malformed
        );
    }

    #[test]
    fn a_small_header_list_limit_marks_the_block() {
        let mut decoder = Decoder::new(40);
        let mut block = BytesMut::new();
        put_field(
            &mut block,
            Literal::WithoutIndexing,
            0,
            b"grpc-message",
            &[b'x'; 20],
        );
        assert!(decoder.decode(&block.freeze()).unwrap().malformed);
    }

    #[test]
    fn what_the_encoder_writes_the_decoder_reads() {
        let mut block = BytesMut::new();
        put_field(
            &mut block,
            Literal::WithoutIndexing,
            0,
            b"grpc-status",
            b"0",
        );
        put_field(
            &mut block,
            Literal::NeverIndexed,
            CONTENT_TYPE,
            b"",
            &[b'a'; 300],
        );
        let block = Decoder::new(16 << 10).decode(&block.freeze()).unwrap();
        assert_eq!(block.headers["grpc-status"], "0");
        assert_eq!(block.headers["content-type"].len(), 300);
        let mut wide = BytesMut::new();
        put_integer(&mut wide, 1337, 5, 0);
        assert_eq!(&wide[..], [31, 154, 10]); // RFC 7541 C.1.2
    }

    #[test]
    fn every_octet_s_huffman_code_decodes_to_it() {
        for (symbol, &(code, len)) in CODES.iter().enumerate().take(256) {
            // The code, then padding with ones to the byte's end.
            let pad = (8 - len % 8) % 8;
            let bits = (u64::from(code) << pad) | ((1 << pad) - 1);
            let bytes = usize::from(len + pad) / 8;
            let encoded: Vec<u8> = (0..bytes).rev().map(|i| (bits >> (8 * i)) as u8).collect();
            assert_eq!(huffman_decode(&encoded), Ok(vec![symbol as u8]), "{symbol}");
        }
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff]).is_err()); // EOS
        assert!(huffman_decode(&[0x00]).is_err()); // '0' then zeros as padding
    }
}
