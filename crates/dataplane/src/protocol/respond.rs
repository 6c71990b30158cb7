//! The answers the core gives itself: a gRPC response around a body, a whole message it holds,
//! a trailers-only failure with its status and trailing metadata, and the request id they carry.

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use crate::protocol::body::{self, boxed, status_trailers, BoxBody, Unary};
use crate::protocol::error::GatewayError;
use crate::protocol::grpc::Code;

pub const REQUEST_ID_KEY: &str = "x-request-id";
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_KEY);
/// Trailing metadata of RESOURCE_EXHAUSTED from a full queue: when to try again.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";

/// The caller's `x-request-id`, or a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map_or_else(|| random_id(fastrand::u128(..)), str::to_owned)
}

/// A header value that differs from one request to the next (a request id, a timeout, a trace
/// context), marked "sensitive" so HPACK sends it unindexed: inserted in the connection's header
/// table it would only evict the ones that repeat, and cost a table update each.
pub fn unindexed(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// 128 random bits as 32 lowercase hex digits (written by hand: `format!` costs more than the
/// rest of the request's bookkeeping).
fn random_id(bits: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (half, value) in [(bits >> 64) as u64, bits as u64].into_iter().enumerate() {
        for (place, digit) in digits[16 * half..16 * half + 16]
            .iter_mut()
            .rev()
            .enumerate()
        {
            *digit = HEX[((value >> (4 * place)) & 0xf) as usize];
        }
    }
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

/// An upstream answer's head as the gateway passes it on: the upstream's own metadata kept, what
/// describes the upstream's end dropped: its `content-length`, and the encodings it would accept
/// (`grpc-accept-encoding`, `accept-encoding`): the gateway takes only uncompressed requests, and
/// a client that read "gzip" there would compress its next ones.
pub fn forwarded(headers: &mut HeaderMap) {
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(GRPC_ACCEPT_ENCODING);
    headers.remove(http::header::ACCEPT_ENCODING);
}

/// A gRPC answer's head, around its body.
pub fn grpc_response(body: BoxBody) -> Response<BoxBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Trailers-only: the status and the trailing metadata in the headers, no body.
pub fn failure(error: &GatewayError, trailing: &[(HeaderName, HeaderValue)]) -> Response<BoxBody> {
    let mut response = grpc_response(body::empty());
    let headers = response.headers_mut();
    headers.extend(status_trailers(error.code(), error.message()));
    if let GatewayError::Overloaded { retry_after_ms, .. } = error {
        headers.insert(RETRY_AFTER_KEY, HeaderValue::from(*retry_after_ms));
    }
    for (name, value) in trailing {
        headers.insert(name.clone(), value.clone());
    }
    response
}

/// A whole answer the core holds (a cached one, one cut out of a merged call, its own).
pub fn answer(message: &[u8]) -> Response<BoxBody> {
    grpc_response(boxed(Unary::new(message, status_trailers(Code::Ok, ""))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_head_keeps_metadata_but_not_the_upstreams_encodings() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/grpc"),
            ("grpc-accept-encoding", "identity, deflate, gzip"),
            ("accept-encoding", "identity, gzip"),
            ("content-length", "42"),
            ("x-served-by", "triton-0"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        forwarded(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-served-by"]);
    }

    #[test]
    fn a_new_request_id_is_the_hex_of_its_bits() {
        let bits = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(random_id(bits), format!("{bits:032x}"));
        assert_eq!(random_id(1), format!("{:032x}", 1));
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn failures_travel_trailers_only_with_the_request_id() {
        let trailing = [(
            HeaderName::from_static(REQUEST_ID_KEY),
            HeaderValue::from_static("r-1"),
        )];
        let response = failure(
            &GatewayError::Internal("internal gateway error (request id r-1)".into()),
            &trailing,
        );
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "13");
        assert_eq!(
            headers["grpc-message"],
            "internal gateway error (request id r-1)"
        );
        assert_eq!(headers[REQUEST_ID_KEY], "r-1");
        assert!(http_body::Body::is_end_stream(response.body()));
    }
}
