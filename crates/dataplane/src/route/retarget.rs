//! A request re-addressed to the variant a route chose, on its own bytes: the upstream model
//! name and version appended (later fields win), so the body is not decoded and encoded again.

use bytes::Bytes;
use gateway_router::Variant;

use crate::protocol::error::GatewayError;
use crate::protocol::messages::ModelInferRequest;
use crate::protocol::wire::{self, Message};

/// The caller's bytes re-addressed to the variant: appended fields override (sent after the
/// caller's bytes, not copied with them), and only clearing a pinned version (which appending
/// cannot do) walks the message once.
pub fn retarget(
    payload: &Bytes,
    request: &ModelInferRequest,
    variant: &Variant,
) -> Result<Message, GatewayError> {
    let malformed = |e: wire::WireError| {
        GatewayError::InvalidRequest(format!("malformed ModelInferRequest: {}", e.0))
    };
    if variant.version.is_empty() && !request.model_version.is_empty() {
        let mut stripped = wire::strip(payload, 2).map_err(malformed)?;
        if *variant.model != *request.model_name {
            stripped.extend_from_slice(&wire::string_field(1, variant.model.as_bytes()));
        }
        return Ok(stripped.freeze().into());
    }
    let mut suffix = bytes::BytesMut::new();
    if *variant.model != *request.model_name {
        suffix.extend_from_slice(&wire::string_field(1, variant.model.as_bytes()));
    }
    if *variant.version != *request.model_version {
        suffix.extend_from_slice(&wire::string_field(2, variant.version.as_bytes()));
    }
    Ok(Message {
        bytes: payload.clone(),
        appended: suffix.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn variant(model: &str, version: &str) -> Variant {
        Variant {
            name: "v".into(),
            pool: "p".into(),
            model: model.into(),
            version: version.into(),
            weight: 1,
        }
    }

    #[test]
    fn retargeted_requests_name_the_variants_model_and_version() {
        let request = ModelInferRequest {
            model_name: "public".into(),
            model_version: "3".into(),
            ..Default::default()
        };
        let payload = Bytes::from(request.encode_to_vec());
        let decoded = |m: wire::Message| ModelInferRequest::decode(m.to_bytes()).unwrap();
        let same = retarget(&payload, &request, &variant("public", "3")).unwrap();
        assert_eq!(same, wire::Message::from(payload.clone()));
        let moved = retarget(&payload, &request, &variant("upstream", "5")).unwrap();
        assert_eq!(
            moved.bytes.as_ptr(),
            payload.as_ptr(),
            "the caller's bytes, not a copy"
        );
        let moved = decoded(moved);
        assert_eq!(
            (moved.model_name.as_str(), moved.model_version.as_str()),
            ("upstream", "5")
        );
        let cleared = decoded(retarget(&payload, &request, &variant("upstream", "")).unwrap());
        assert_eq!(
            (cleared.model_name.as_str(), cleared.model_version.as_str()),
            ("upstream", "")
        );
    }
}
