//! ModelStreamInfer's requests and answers as the gateway reads and edits them (pure).
//!
//! A request goes up with an id of the gateway's own and `triton_enable_empty_final_response`, so
//! that every answer names its request and the last one says so (`triton_final_response`:
//! Triton sends nothing at a decoupled request's end otherwise). Triton answers a
//! ModelStreamInferResponse (an error message and the ModelInferResponse); some servers
//! (MLServer) answer the bare ModelInferResponse. Either way an answer goes back to its caller
//! with the caller's id where the server put the gateway's.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::protocol::messages::{InferParameter, ParameterChoice, StreamAnswer, StreamAnswerHead};
use crate::protocol::wire;

pub const FINAL: &str = "triton_final_response";
pub const EMPTY_FINAL: &str = "triton_enable_empty_final_response";

pub fn flag(parameters: &HashMap<String, InferParameter>, name: &str) -> bool {
    matches!(
        parameters.get(name).and_then(|p| p.choice.as_ref()),
        Some(ParameterChoice::Bool(true))
    )
}

/// The request's bytes as they go upstream: the gateway's id, and the empty final answer asked
/// for (both appended after what re-addressing appended: later fields win), in one copy.
pub fn upstream_request(payload: &wire::Message, upstream_id: u64) -> Bytes {
    let mut suffix = BytesMut::from(&payload.appended[..]);
    suffix.extend_from_slice(&wire::string_field(3, upstream_id.to_string().as_bytes()));
    suffix.extend_from_slice(&parameter(4, EMPTY_FINAL, Value::Bool(true)));
    wire::append(&payload.bytes, &suffix)
}

/// An InferParameter's value.
pub enum Value<'a> {
    Bool(bool),
    Int64(u64),
    String(&'a str),
}

/// An entry of a message's `parameters` map (field `number`), to append to the message.
pub fn parameter(number: u32, name: &str, value: Value<'_>) -> BytesMut {
    let mut entry = wire::string_field(1, name.as_bytes());
    let mut choice = BytesMut::new();
    match value {
        Value::Bool(value) => wire::uint_field(&mut choice, 1, u64::from(value)),
        Value::Int64(value) => wire::uint_field(&mut choice, 2, value),
        Value::String(value) => choice = wire::string_field(3, value.as_bytes()),
    }
    wire::message_field(&mut entry, 2, &choice);
    let mut out = BytesMut::new();
    wire::message_field(&mut out, number, &entry);
    out
}

/// The empty final answer of a request (`triton_final_response`), for a caller that asked for it.
pub fn final_answer(caller_id: &str) -> Bytes {
    let mut inner = wire::string_field(3, caller_id.as_bytes());
    inner.extend_from_slice(&parameter(4, FINAL, Value::Bool(true)));
    let mut out = BytesMut::new();
    wire::message_field(&mut out, 2, &inner);
    out.freeze()
}

/// One answer, read.
pub struct Answer {
    /// The whole message as the server sent it.
    pub message: Bytes,
    /// The server answered the bare ModelInferResponse (not Triton's stream message).
    pub bare: bool,
    pub error_message: String,
    /// The ModelInferResponse.
    pub infer_response: Bytes,
    /// The id it names.
    pub id: String,
    /// It says it is its request's last.
    pub final_flag: bool,
    pub outputs: usize,
}

impl Answer {
    pub fn read(message: Bytes) -> Result<Answer, wire::WireError> {
        let malformed = |e: prost::DecodeError| wire::WireError(e.to_string());
        let bare = wire::fields(&message)?.iter().any(|field| field.number > 2);
        let answer = match bare {
            true => StreamAnswer {
                error_message: String::new(),
                infer_response: message.clone(),
            },
            false => StreamAnswer::decode(message.clone()).map_err(malformed)?,
        };
        let head = StreamAnswerHead::decode(answer.infer_response.clone()).map_err(malformed)?;
        Ok(Answer {
            message,
            bare,
            final_flag: flag(&head.parameters, FINAL),
            outputs: head.outputs.len(),
            id: head.id,
            error_message: answer.error_message,
            infer_response: answer.infer_response,
        })
    }

    pub fn failed(&self) -> bool {
        !self.error_message.is_empty()
    }

    /// An answer with nothing in it: the empty final answer.
    pub fn empty(&self) -> bool {
        !self.failed() && self.outputs == 0
    }

    /// The answer as its caller gets it: with the caller's id where the server put the
    /// gateway's (so that it reads byte for byte as the server's answer to the caller would).
    pub fn for_caller(&self, caller_id: &str) -> Result<Bytes, wire::WireError> {
        self.for_caller_with(caller_id, &[])
    }

    /// The same, with `extra` fields appended to the ModelInferResponse (a parameter).
    pub fn for_caller_with(&self, caller_id: &str, extra: &[u8]) -> Result<Bytes, wire::WireError> {
        let mut inner = wire::replace_string(&self.infer_response, 3, caller_id.as_bytes())?;
        inner.extend_from_slice(extra);
        if self.bare {
            return Ok(inner.freeze());
        }
        let mut out = BytesMut::with_capacity(inner.len() + self.error_message.len() + 12);
        if !self.error_message.is_empty() {
            wire::message_field(&mut out, 1, self.error_message.as_bytes());
        }
        wire::message_field(&mut out, 2, &inner);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{ModelInferAnswer, ModelInferRequest};

    #[test]
    fn the_upstream_request_carries_the_gateways_id_and_asks_for_the_final_answer() {
        let request = ModelInferRequest {
            id: "mine".into(),
            model_name: "m".into(),
            ..Default::default()
        };
        let sent = upstream_request(&request.encode_to_vec().into(), 17);
        let readdressed = wire::Message {
            bytes: request.encode_to_vec().into(),
            appended: wire::string_field(1, b"upstream").freeze(),
        };
        let moved = ModelInferRequest::decode(upstream_request(&readdressed, 18)).unwrap();
        assert_eq!(
            (moved.id.as_str(), moved.model_name.as_str()),
            ("18", "upstream")
        );
        let decoded = ModelInferRequest::decode(sent).unwrap();
        assert_eq!(
            (decoded.id.as_str(), decoded.model_name.as_str()),
            ("17", "m")
        );
        assert!(flag(&decoded.parameters, EMPTY_FINAL));
    }

    #[test]
    fn a_bare_model_infer_response_is_read_as_the_answer_and_keeps_its_shape() {
        let bare = ModelInferAnswer {
            model_name: "m".into(),
            id: "1".into(),
            outputs: vec![Default::default()],
            ..Default::default()
        };
        let answer = Answer::read(bare.encode_to_vec().into()).unwrap();
        assert!(answer.bare && !answer.empty() && answer.id == "1");
        let forwarded = ModelInferAnswer::decode(answer.for_caller("").unwrap()).unwrap();
        assert_eq!(
            (forwarded.id.as_str(), forwarded.model_name.as_str()),
            ("", "m")
        );
    }
}
