//! gRPC over HTTP/2, the parts a proxy needs: message framing, status codes, `grpc-timeout`,
//! `grpc-message` percent-encoding. Pure functions; the server and the upstream client use them.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderName;

/// The v2 inference service every model RPC belongs to.
pub const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// gRPC's header names, parsed once: a lookup by `&str` parses the name again each time.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes (the numbers are the protocol's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// An unknown number is UNKNOWN, as gRPC's own clients read it.
    pub fn from_number(number: u32) -> Code {
        Code::ALL
            .get(number as usize)
            .copied()
            .unwrap_or(Code::Unknown)
    }

    /// From a `grpc-status` header value.
    pub fn parse(value: &[u8]) -> Code {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map_or(Code::Unknown, Code::from_number)
    }

    /// The name grpcio gives it (`StatusCode.NOT_FOUND.name`): the label of metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// What outlier detection counts against an endpoint (Envoy's "consecutive gateway failure"):
    /// UNAVAILABLE, DATA_LOSS, and UNKNOWN (how a stream that broke off without a status reads).
    /// A model's own errors (INTERNAL, INVALID_ARGUMENT, ...) say nothing about the endpoint.
    pub fn is_gateway_failure(self) -> bool {
        matches!(self, Code::Unavailable | Code::DataLoss | Code::Unknown)
    }

    pub fn header_value(self) -> http::HeaderValue {
        http::HeaderValue::from(self as u8 as u16)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Truncated,
    Compressed,
    Trailing,
    TooLarge(usize),
}

/// One length-prefixed message (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The length a message's 5-byte prefix (at the start of `bytes`, at least 5 long) announces.
pub fn announced_len(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize
}

/// The 5-byte prefix of an uncompressed message of `len` bytes.
pub fn prefix(len: usize) -> Bytes {
    let mut out = [0u8; 5];
    out[1..].copy_from_slice(&(len as u32).to_be_bytes());
    Bytes::copy_from_slice(&out)
}

/// Split complete messages off the front of `buffer`; a partial one stays for more bytes. A
/// message announced longer than `limit` is refused before its bytes are buffered.
pub fn next_message(buffer: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, FrameError> {
    if buffer.len() < 5 {
        return Ok(None);
    }
    if buffer[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = announced_len(buffer);
    if len > limit {
        return Err(FrameError::TooLarge(len));
    }
    if buffer.len() < 5 + len {
        return Ok(None);
    }
    let mut message = buffer.split_to(5 + len);
    let _ = message.split_to(5);
    Ok(Some(message.freeze()))
}

/// The one message of a unary call's body.
pub fn unary_message(body: Bytes) -> Result<Bytes, FrameError> {
    if body.len() < 5 {
        return Err(FrameError::Truncated);
    }
    if body[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = announced_len(&body);
    match body.len().cmp(&(5 + len)) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Greater => Err(FrameError::Trailing),
        std::cmp::Ordering::Equal => Ok(body.slice(5..)),
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H M S m u n). None when malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The shortest exact-enough `grpc-timeout` for a remaining duration (rounded up, 8 digits max),
/// written by hand: `format!` and 128-bit division were most of a forwarded request's cost of it.
pub fn format_timeout(remaining: Duration) -> String {
    let nanos = u64::try_from(remaining.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let units: [(u64, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let (mut amount, unit) = units
        .into_iter()
        .map(|(scale, unit)| (nanos.div_ceil(scale), unit))
        .find(|(amount, _)| *amount < 100_000_000)
        .unwrap_or((99_999_999, b'H'));
    let mut text = [0u8; 9];
    let mut start = text.len() - 1;
    text[start] = unit;
    loop {
        start -= 1;
        text[start] = b'0' + (amount % 10) as u8;
        amount /= 10;
        if amount == 0 {
            break;
        }
    }
    String::from_utf8(text[start..].to_vec()).expect("digits and a unit are ASCII")
}

/// `grpc-message` is percent-encoded UTF-8 (outside printable ASCII, and `%` itself).
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn decode_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            let hex = std::str::from_utf8(&value[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit() {
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "1.5S", "5 S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatted_timeouts_round_trip_rounded_up() {
        for nanos in [
            1u64,
            999,
            1_000,
            1_234_567,
            5_000_000_000,
            86_400_000_000_000,
        ] {
            let given = Duration::from_nanos(nanos);
            let back = parse_timeout(&format_timeout(given)).unwrap();
            assert!(back >= given, "{nanos}: {back:?}");
            assert!(
                back.as_nanos() <= given.as_nanos() * 101 / 100 + 1,
                "{nanos}: {back:?}"
            );
        }
    }

    #[test]
    fn timeouts_are_written_in_the_largest_exact_unit() {
        assert_eq!(format_timeout(Duration::ZERO), "1n");
        assert_eq!(
            format_timeout(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(format_timeout(Duration::from_secs(600)), "600000m");
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(format_timeout(Duration::MAX), "5124096H");
    }

    #[test]
    fn messages_percent_encode_and_back() {
        let text = "model 'x': 100% wrong – ünïcode\nline";
        let encoded = encode_message(text);
        assert!(encoded.is_ascii());
        assert_eq!(decode_message(encoded.as_bytes()), text);
        assert_eq!(decode_message(b"50%"), "50%");
    }

    #[test]
    fn frames_split_across_reads() {
        let mut buffer = BytesMut::new();
        let framed = frame(b"hello");
        buffer.extend_from_slice(&framed[..3]);
        assert_eq!(next_message(&mut buffer, 100), Ok(None));
        buffer.extend_from_slice(&framed[3..]);
        buffer.extend_from_slice(&frame(b"")[..]);
        assert_eq!(
            next_message(&mut buffer, 100),
            Ok(Some(Bytes::from_static(b"hello")))
        );
        assert_eq!(next_message(&mut buffer, 100), Ok(Some(Bytes::new())));
        assert_eq!(next_message(&mut buffer, 100), Ok(None));
        buffer.extend_from_slice(&frame(b"too long")[..]);
        assert_eq!(next_message(&mut buffer, 4), Err(FrameError::TooLarge(8)));
        assert_eq!(unary_message(frame(b"abc")), Ok(Bytes::from_static(b"abc")));
        assert_eq!(
            unary_message(Bytes::from_static(b"\0\0\0\0\x09abc")),
            Err(FrameError::Truncated)
        );
    }
}
