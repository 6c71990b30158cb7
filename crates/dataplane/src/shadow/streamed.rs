//! Shadows of streamed requests: a sampled request's answers are kept while its primary streams
//! them; once the primary's last answer has gone to the caller, the request is sent to each
//! shadow variant on a stream of its own, its answers drained, and the two sequences compared:
//! their outputs concatenated (the counters and the rollout's shadow gate read them as one
//! answer's), the first `FIRST_K` answers apart, and the time to the first answer against the
//! primary's. The caller never waits for a shadow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway_router::Variant;
use prost::Message;

use crate::protocol::body;
use crate::protocol::error::GatewayError;
use crate::protocol::grpc;
use crate::protocol::messages::ModelInferAnswer;
use crate::protocol::stream_answers::{upstream_request, Answer};
use crate::protocol::streams::{Messages, Read, ReadError};
use crate::shadow::compare::compare_responses;
use crate::shadow::{Copy, Gateway, Job, Shadows, Slot};

/// Answers compared apart at the start of a sequence.
pub const FIRST_K: usize = 4;
/// A sequence longer than this (in answers or bytes) is not kept: no comparison.
const MAX_ANSWERS: usize = 4096;
const MAX_BYTES: usize = 16 << 20;

/// A primary's answers (their ModelInferResponses), kept for its shadows.
pub struct Capture {
    pub job: Job,
    answers: Vec<Bytes>,
    bytes: usize,
    overflowed: bool,
}

impl Capture {
    pub fn new(job: Job) -> Capture {
        Capture {
            job,
            answers: Vec::new(),
            bytes: 0,
            overflowed: false,
        }
    }

    pub fn add(&mut self, answer: &Bytes) {
        self.bytes += answer.len();
        self.overflowed |= self.answers.len() >= MAX_ANSWERS || self.bytes > MAX_BYTES;
        if !self.overflowed {
            self.answers.push(answer.clone());
        }
    }
}

/// A sequence of answers as one: each output's contents concatenated in order (flat: its shape
/// the number of elements, whatever each answer's), so that two sequences agree exactly when
/// their concatenated outputs do.
pub fn merge(answers: &[Bytes]) -> Bytes {
    let mut merged = ModelInferAnswer::default();
    let mut contents: Vec<BytesMut> = Vec::new();
    for answer in answers {
        let Ok(decoded) = ModelInferAnswer::decode(answer.clone()) else {
            continue;
        };
        for (tensor, raw) in decoded.outputs.iter().zip(&decoded.raw_output_contents) {
            let elements: i64 = tensor.shape.iter().product();
            let index = match merged.outputs.iter().position(|o| o.name == tensor.name) {
                Some(index) => index,
                None => {
                    let mut output = tensor.clone();
                    output.shape = vec![0];
                    merged.outputs.push(output);
                    contents.push(BytesMut::new());
                    merged.outputs.len() - 1
                }
            };
            merged.outputs[index].shape[0] += elements;
            contents[index].extend_from_slice(raw);
        }
    }
    merged.raw_output_contents = contents.into_iter().map(BytesMut::freeze).collect();
    merged.encode_to_vec().into()
}

/// The shadow's answers to `job` and its time to the first one.
async fn copy_stream<G: Gateway>(
    state: &G,
    job: &Job,
    variant: &Variant,
) -> Result<(Vec<Bytes>, Option<Duration>), GatewayError> {
    let Copy {
        pool,
        payload,
        deadline,
        decoupled,
    } = Copy::of(state, job, variant).await?;
    let payload = upstream_request(&payload, 1);
    let model = (variant.model.clone(), variant.version.clone());
    let endpoint = pool.pick(Some(&model), &[])?;
    let sent = Instant::now();
    let request = body::message(&payload);
    let response = endpoint
        .channel
        .send("ModelStreamInfer", request, deadline, None)
        .await
        .map_err(|e| pool.unreachable(&endpoint, &e))?;
    let malformed = |e: String| GatewayError::Internal(format!("shadow stream: {e}"));
    let (mut answers, mut first) = (Vec::new(), None);
    let mut messages = Messages::new(response.into_body(), usize::MAX);
    loop {
        let message = match messages.next().await {
            Ok(Read::Message(message)) => message,
            Ok(Read::Trailers(_) | Read::End) => return Ok((answers, first)),
            Err(ReadError::Body(e)) => return Err(malformed(e)),
            Err(ReadError::Frame(e)) => return Err(malformed(format!("{e:?}"))),
        };
        let answer = Answer::read(message).map_err(|e| malformed(e.0))?;
        if answer.failed() {
            return Err(GatewayError::Upstream {
                code: grpc::Code::Unknown,
                message: answer.error_message,
            });
        }
        if !answer.empty() {
            first.get_or_insert_with(|| sent.elapsed());
            answers.push(answer.infer_response);
        }
        if answer.final_flag || !decoupled {
            return Ok((answers, first));
        }
    }
}

impl Shadows {
    /// Start the copies of a streamed request that has had all its answers (`primary_first`:
    /// the primary's time to its first).
    pub fn submit_stream<G: Gateway>(
        state: &Arc<G>,
        capture: Capture,
        primary_first: Option<Duration>,
    ) {
        if capture.overflowed {
            return;
        }
        let primary = merge(&capture.answers);
        let primary_first_k = merge(&capture.answers[..capture.answers.len().min(FIRST_K)]);
        let job = Arc::new(capture.job);
        for (variant, max_inflight) in &job.shadows {
            let Some((key, slot)) = state.shadows().admit(&job, variant, *max_inflight) else {
                continue;
            };
            let (state, job, variant) = (state.clone(), job.clone(), variant.clone());
            let (primary, primary_first_k) = (primary.clone(), primary_first_k.clone());
            tokio::spawn(async move {
                let shadows = state.shadows();
                let _slot = Slot { shadows, key: slot };
                match copy_stream(&*state, &job, &variant).await {
                    Ok((answers, first)) => {
                        let shadow = merge(&answers);
                        let comparison = compare_responses(&primary, &shadow);
                        let first_k = merge(&answers[..answers.len().min(FIRST_K)]);
                        shadows.with_counters(&key, |c| {
                            c.record(&comparison);
                            c.streams += 1;
                            c.first_k_agreements += u64::from(first_k == primary_first_k);
                            if let (Some(shadow), Some(primary)) = (first, primary_first) {
                                c.first_response_pairs += 1;
                                c.shadow_first_response_s += shadow.as_secs_f64();
                                c.primary_first_response_s += primary.as_secs_f64();
                            }
                        });
                        shadows.log(&job, &variant, &comparison, &primary, &shadow);
                    }
                    Err(_) => shadows.with_counters(&key, |c| c.failed += 1),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::InferOutputTensor;

    fn token(value: i32) -> Bytes {
        ModelInferAnswer {
            outputs: vec![InferOutputTensor {
                name: "TOKEN".into(),
                datatype: "INT32".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_output_contents: vec![value.to_le_bytes().to_vec().into()],
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn sequences_merge_into_one_answer_that_agrees_only_when_they_do() {
        let tokens: Vec<Bytes> = (0..3).map(token).collect();
        let merged = ModelInferAnswer::decode(merge(&tokens)).unwrap();
        assert_eq!(merged.outputs[0].shape, [3]);
        assert_eq!(merged.raw_output_contents[0].len(), 12);
        assert_eq!(
            merge(&tokens),
            merge(&(0..3).map(token).collect::<Vec<_>>())
        );
        let other = [token(0), token(1), token(7)];
        let comparison = compare_responses(&merge(&tokens), &merge(&other));
        assert!(!comparison.exact());
        let shorter = compare_responses(&merge(&tokens), &merge(&tokens[..2]));
        assert!(!shorter.exact() && shorter.mismatched());
    }
}
