//! Streamed answers in the cache (opt-in): a route whose cache has `streams`, or a request with
//! the parameter `cache_stream: true` on a route that caches, keeps the sequence of answers of a
//! deterministic streamed request that ended well, and a later identical request gets the same
//! sequence replayed (without reaching Triton). The sequence is stored as the answers' gRPC
//! frames, each answer without an id (the caller's goes back in), in the same tiers and under
//! the same size limit as unary answers, keyed apart from them.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_router::Variant;

use super::l1::Key;
use super::{bump, in_sequence, Outcome, Policy, ResponseCache};
use crate::protocol::grpc;
use crate::protocol::messages::ModelInferRequest;
use crate::protocol::stream_answers::flag;

/// The request parameter by which a caller asks for its streamed answers to be cached.
pub const CACHE_STREAM: &str = "cache_stream";

/// A streamed request's answers on their way to being stored.
pub struct Recording {
    key: Key,
    policy: Policy,
    frames: BytesMut,
    too_large: bool,
}

impl Recording {
    /// One answer, as its caller got it but without an id.
    pub fn add(&mut self, answer: &Bytes) {
        self.too_large |= self.frames.len() + answer.len() + 5 > self.policy.max_entry_bytes;
        if !self.too_large {
            self.frames.extend_from_slice(&grpc::frame(answer));
        }
    }
}

/// The answers of a stored sequence, in order.
pub fn answers(stored: &Bytes) -> Vec<Bytes> {
    let mut buffer = BytesMut::from(&stored[..]);
    let mut out = Vec::new();
    while let Ok(Some(message)) = grpc::next_message(&mut buffer, usize::MAX) {
        out.push(message);
    }
    out
}

impl ResponseCache {
    /// The route's policy when this streamed request's answers may come from the cache, and
    /// the key they are kept under.
    pub fn stream_policy(
        &self,
        route: &str,
        variant: &Variant,
        request: &ModelInferRequest,
    ) -> Option<(Policy, Key)> {
        let policy = self.policies.load().of(route).clone();
        let asked = policy.streams || flag(&request.parameters, CACHE_STREAM);
        if !policy.enabled || !asked || in_sequence(request) {
            return None;
        }
        let model = format!("{}\x1fstream", variant.model);
        let key = self.key_of(route, variant, &model, request);
        Some((policy, key))
    }

    /// The stored sequence, from a tier; None: record it (`Recording`) as it comes.
    pub async fn stream_hit(&self, key: &Key, policy: &Policy) -> Option<(Bytes, Outcome)> {
        if policy.l1 {
            if let Some(stored) = self.l1.get(key, Instant::now()) {
                bump(&self.counters.hits_l1);
                return Some((stored, Outcome::HitL1));
            }
        }
        if let Some(stored) = self.l2_hit(key, policy).await {
            return Some((stored, Outcome::HitL2));
        }
        bump(&self.counters.misses);
        None
    }

    pub fn recording(key: Key, policy: Policy) -> Recording {
        Recording {
            key,
            policy,
            frames: BytesMut::new(),
            too_large: false,
        }
    }

    /// A sequence that ended well, stored (unless it grew past the entry limit).
    pub fn keep(&self, recording: Recording) {
        if recording.too_large {
            bump(&self.counters.too_large);
            return;
        }
        self.store(recording.key, &recording.frames.freeze(), &recording.policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_sequence_reads_back_answer_by_answer_and_a_long_one_is_not_kept() {
        let key = Key {
            model: "m".into(),
            variant: "v".into(),
            digest: Default::default(),
        };
        let policy = Policy {
            max_entry_bytes: 40,
            ..Policy::default()
        };
        let mut recording = ResponseCache::recording(key, policy);
        recording.add(&Bytes::from_static(b"first"));
        recording.add(&Bytes::from_static(b"second"));
        let stored = recording.frames.clone().freeze();
        assert_eq!(answers(&stored), [&b"first"[..], &b"second"[..]]);
        recording.add(&Bytes::from(vec![0u8; 30]));
        assert!(recording.too_large);
    }
}
