//! HPACK against RFC 7541's examples, and what our encoder writes read back.

use super::*;
use bytes::BytesMut;

use crate::protocol::http2::hpack_encode::*;
use crate::protocol::http2::huffman::{huffman_decode, CODES};

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
fn a_servers_decoder_reads_a_requests_pseudo_headers_and_no_status() {
    let mut decoder = Decoder::for_requests(16 << 10);
    let mut block = BytesMut::from(&[METHOD_POST, SCHEME_HTTP][..]);
    put_field(&mut block, Literal::WithoutIndexing, PATH, b"", b"/a.B/C");
    put_field(
        &mut block,
        Literal::WithoutIndexing,
        0,
        b":authority",
        b"h:1",
    );
    put_field(&mut block, Literal::WithoutIndexing, 0, b"te", b"trailers");
    let head = decoder.decode(&block.freeze()).unwrap();
    assert!(!head.malformed);
    assert_eq!(head.method.as_deref(), Some(&b"POST"[..]));
    assert_eq!(head.scheme.as_deref(), Some(&b"http"[..]));
    assert_eq!(head.path.as_deref(), Some(&b"/a.B/C"[..]));
    assert_eq!(head.authority.as_deref(), Some(&b"h:1"[..]));
    assert_eq!(head.headers["te"], "trailers");
    for bad in [
        &[0x88][..],                 // a status in a request
        &[0x83, 0x83],               // a repeated pseudo-header
        &[0x40 | 31, 1, b'x', 0x83], // a pseudo-header after a field
    ] {
        let block = decoder.decode(&Bytes::copy_from_slice(bad)).unwrap();
        assert!(block.malformed, "{bad:?}");
    }
}

#[test]
fn an_answers_head_encodes_its_status_and_fields() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    let mut id = HeaderValue::from_static("r-1");
    id.set_sensitive(true);
    headers.insert("x-request-id", id);
    for status in [200, 503] {
        let mut block = BytesMut::new();
        put_head(&mut block, Some(status), &headers);
        let decoded = Decoder::new(16 << 10).decode(&block.freeze()).unwrap();
        assert_eq!(decoded.status, Some(status));
        assert_eq!(decoded.headers, headers);
    }
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
