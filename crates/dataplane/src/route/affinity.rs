//! Prefix affinity, the route's part (pure): what a request's prompt says about where it should
//! go, without a tokenizer. The input a route names (token ids, or BYTES) is cut in blocks of
//! `block_size` elements (bytes for BYTES); each whole block gets a hash chained over the ones
//! before it, so the i-th key stands for the prompt's first i + 1 blocks and two prompts share a
//! key exactly as far as they share a prefix. A session header (`x-session-id`) gives a key of
//! its own that pins a conversation the same way. The pool keeps where each key was last sent
//! (`upstream::affine`).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::protocol::messages::{InferTensorContents, ModelInferRequest};
use crate::upstream::affine::Keys;

/// A route's `affinity`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AffinityPolicy {
    /// The input holding the prompt: token ids (an integer datatype) or BYTES.
    pub input: String,
    pub block_size: usize,
    /// A header that names a conversation; its requests go where it went before.
    #[serde(default)]
    pub session_header: Option<String>,
    /// An endpoint is preferred only while its requests under way stay within this factor of
    /// its fair share (consistent hashing with bounded loads); past it, P2C picks.
    pub load_factor: f64,
    /// Blocks hashed at most (a longer prompt's tail is not looked at).
    pub max_blocks: usize,
}

/// The policies of the routes that have one, by route.
pub type AffinityPolicies = HashMap<String, AffinityPolicy>;

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The width of one element of an integer datatype, in bytes (BYTES: its bytes, one by one).
fn width(datatype: &str) -> Option<usize> {
    match datatype {
        "BYTES" | "INT8" | "UINT8" => Some(1),
        "INT16" | "UINT16" => Some(2),
        "INT32" | "UINT32" => Some(4),
        "INT64" | "UINT64" => Some(8),
        _ => None,
    }
}

/// BYTES elements as they come in a raw input: each a 4-byte little-endian length, then itself.
fn bytes_elements(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while rest.len() >= 4 {
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let end = (4 + length).min(rest.len());
        out.extend_from_slice(&rest[4..end]);
        rest = &rest[end..];
    }
    out
}

fn typed_contents(contents: &InferTensorContents, datatype: &str) -> Vec<u8> {
    match datatype {
        "BYTES" => contents.bytes_contents.concat(),
        "INT64" => contents
            .int64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "UINT64" => contents
            .uint64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "UINT8" | "UINT16" | "UINT32" => contents
            .uint_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => contents
            .int_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    }
}

/// The prompt as bytes, and the width of one of its elements; None when the request does not
/// carry the input (or it is not of a datatype a prefix can be read from).
fn prompt(request: &ModelInferRequest, input: &str) -> Option<(Vec<u8>, usize)> {
    let index = request.inputs.iter().position(|i| i.name == input)?;
    let tensor = &request.inputs[index];
    let width = width(&tensor.datatype)?;
    let bytes = match request.raw_input_contents.get(index) {
        Some(raw) if tensor.datatype == "BYTES" => bytes_elements(raw),
        Some(raw) => raw.to_vec(),
        None => typed_contents(tensor.contents.as_ref()?, &tensor.datatype),
    };
    Some((bytes, width))
}

/// The request's keys under `policy`, for `model` (keys of different models never meet).
pub fn keys(
    policy: &AffinityPolicy,
    model: &str,
    request: &ModelInferRequest,
    session: Option<&str>,
) -> Keys {
    let session = session
        .filter(|s| !s.is_empty())
        .map(|s| hash_of(("session", model, s)));
    let mut prefixes = Vec::new();
    if let Some((bytes, width)) = prompt(request, &policy.input) {
        let mut chained = hash_of(("prefix", model));
        let block = policy.block_size.max(1) * width;
        for chunk in bytes.chunks_exact(block).take(policy.max_blocks) {
            chained = hash_of((chained, chunk));
            prefixes.push(chained);
        }
    }
    Keys { session, prefixes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::InferInputTensor;

    fn policy(block_size: usize) -> AffinityPolicy {
        AffinityPolicy {
            input: "PROMPT".into(),
            block_size,
            session_header: Some("x-session-id".into()),
            load_factor: 1.25,
            max_blocks: 8,
        }
    }

    fn tokens(ids: &[i32]) -> ModelInferRequest {
        ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "PROMPT".into(),
                datatype: "INT32".into(),
                shape: vec![ids.len() as i64],
                ..Default::default()
            }],
            raw_input_contents: vec![ids
                .iter()
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<u8>>()
                .into()],
            ..Default::default()
        }
    }

    #[test]
    fn prompts_share_keys_as_far_as_they_share_whole_blocks() {
        let first: Vec<i32> = (0..10).collect();
        let mut second = first[..8].to_vec();
        second.extend([99, 98, 97]);
        let (a, b) = (
            keys(&policy(4), "m", &tokens(&first), None),
            keys(&policy(4), "m", &tokens(&second), None),
        );
        assert_eq!((a.prefixes.len(), b.prefixes.len()), (2, 2)); // whole blocks only
        assert_eq!(a.prefixes, b.prefixes); // the first 8 tokens are the same
        let third: Vec<i32> = (1..11).collect();
        let c = keys(&policy(4), "m", &tokens(&third), None);
        assert!(c.prefixes.iter().all(|k| !a.prefixes.contains(k)));
        let other_model = keys(&policy(4), "n", &tokens(&first), None);
        assert_ne!(other_model.prefixes[0], a.prefixes[0]);
        assert_eq!(
            keys(&policy(1), "m", &tokens(&first), None).prefixes.len(),
            8
        ); // max_blocks
    }

    #[test]
    fn bytes_prompts_typed_contents_and_sessions_give_keys() {
        let text = b"You are a helpful assistant. Hello";
        let mut raw = (text.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(text);
        let mut request = tokens(&[]);
        request.inputs[0].datatype = "BYTES".into();
        request.raw_input_contents = vec![raw.into()];
        let from_raw = keys(&policy(16), "m", &request, None);
        assert_eq!(from_raw.prefixes.len(), 2);
        request.raw_input_contents.clear();
        request.inputs[0].contents = Some(InferTensorContents {
            bytes_contents: vec![text.to_vec().into()],
            ..Default::default()
        });
        assert_eq!(keys(&policy(16), "m", &request, None), from_raw);
        let pinned = keys(&policy(16), "m", &tokens(&[1]), Some("conversation-7"));
        assert!(pinned.session.is_some() && pinned.prefixes.is_empty());
        assert_eq!(
            keys(&policy(16), "m", &tokens(&[1]), Some("")),
            Keys::default()
        );
    }
}
