//! The requests under way on one upstream stream, and what each answer means for them (pure).
//!
//! Every answer names its request (`protocol::stream_answers`); an error answer, and any answer
//! of a model that is not decoupled, is its request's last; the empty final answer goes back only
//! to a caller that asked for it itself. What each request holds (its admission slot, its share
//! of the endpoint's load) is handed back with it when it ends, and the answers of a request
//! sampled for shadows are kept (up to a bound) for the comparison.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use crate::cache::streamed::Recording;
use crate::protocol::messages::ModelInferRequest;
use crate::protocol::stream_answers::{flag, Answer, EMPTY_FINAL};
use crate::protocol::wire;
use crate::shadow::streamed::Capture;
use crate::telemetry::streamed::{Ending, Timing};

/// A request under way, and what it holds until it ends.
pub struct Pending<T> {
    pub caller_id: String,
    /// Whether its model streams many answers; if not, its first answer is its last.
    pub decoupled: bool,
    /// The caller asked for the empty final answer itself.
    pub wants_empty_final: bool,
    pub timing: Timing,
    pub held: T,
    /// Its answers, kept for its shadow copies' comparison.
    pub capture: Option<Capture>,
    /// Its answers, on their way to the cache.
    pub recording: Option<Recording>,
}

impl<T> Pending<T> {
    pub fn new(
        request: &ModelInferRequest,
        decoupled: bool,
        timing: Timing,
        held: T,
    ) -> Pending<T> {
        Pending {
            caller_id: request.id.clone(),
            decoupled,
            wants_empty_final: flag(&request.parameters, EMPTY_FINAL),
            timing,
            held,
            capture: None,
            recording: None,
        }
    }
}

/// A request that has ended, and how.
pub struct Ended<T> {
    pub request: Pending<T>,
    pub ending: Ending,
}

/// What to do with one answer: the bytes for the caller (none for an empty final answer it did
/// not ask for), and its request when this was its last.
pub struct Routed<T> {
    pub forward: Option<Bytes>,
    pub ended: Option<Ended<T>>,
}

/// By the gateway's id, which counts up: the first entry is the oldest request.
pub struct InFlight<T> {
    requests: BTreeMap<u64, Pending<T>>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            requests: BTreeMap::new(),
        }
    }
}

impl<T> InFlight<T> {
    pub fn add(&mut self, upstream_id: u64, request: Pending<T>) {
        self.requests.insert(upstream_id, request);
    }

    pub fn remove(&mut self, upstream_id: u64) -> Option<Pending<T>> {
        self.requests.remove(&upstream_id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Every request still under way (the stream broke off, or the caller left).
    pub fn drain(&mut self) -> impl Iterator<Item = Pending<T>> {
        std::mem::take(&mut self.requests).into_values()
    }

    /// One answer from upstream, at `now`. An answer naming no request under way is taken as
    /// the oldest one's (a server that does not echo ids answers in order: MLServer names every
    /// answer of a stream after its first request); with none under way it passes untouched.
    pub fn route(&mut self, message: Bytes, now: Instant) -> Result<Routed<T>, wire::WireError> {
        let answer = Answer::read(message)?;
        let named = answer.id.parse::<u64>().ok();
        let key = named
            .filter(|key| self.requests.contains_key(key))
            .or_else(|| self.requests.keys().next().copied());
        let Some(request) = key.and_then(|key| self.requests.get_mut(&key)) else {
            return Ok(Routed {
                forward: Some(answer.message),
                ended: None,
            });
        };
        let last = answer.failed() || !request.decoupled || answer.final_flag;
        let empty = answer.empty();
        let forward = match empty && last && !request.wants_empty_final {
            true => None,
            false => Some(answer.for_caller(&request.caller_id)?),
        };
        if !empty {
            request.timing.answered(now);
            if let Some(capture) = &mut request.capture {
                capture.add(&answer.infer_response);
            }
            if let Some(recording) = &mut request.recording {
                recording.add(&answer.for_caller("")?);
            }
        }
        let ending = if answer.failed() {
            Ending::Failed
        } else {
            Ending::Done
        };
        let ended = match last {
            true => key
                .and_then(|key| self.requests.remove(&key))
                .map(|request| Ended { request, ending }),
            false => None,
        };
        Ok(Routed { forward, ended })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{
        InferParameter, ModelInferAnswer, ModelStreamInferResponse, ParameterChoice,
    };
    use crate::protocol::stream_answers::FINAL;
    use bytes::BytesMut;
    use prost::Message;
    use std::collections::HashMap;

    fn answer(id: &str, final_flag: Option<bool>, outputs: usize, error: &str) -> Bytes {
        let mut parameters = HashMap::new();
        if let Some(value) = final_flag {
            let choice = Some(ParameterChoice::Bool(value));
            parameters.insert(FINAL.to_owned(), InferParameter { choice });
        }
        let inner = ModelInferAnswer {
            id: id.into(),
            parameters,
            outputs: (0..outputs).map(|_| Default::default()).collect(),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        if !error.is_empty() {
            wire::message_field(&mut out, 1, error.as_bytes());
        }
        wire::message_field(&mut out, 2, &inner.encode_to_vec());
        out.freeze()
    }

    fn pending(caller_id: &str, decoupled: bool, wants_empty_final: bool) -> Pending<u32> {
        let mut request = ModelInferRequest {
            id: caller_id.into(),
            ..Default::default()
        };
        if wants_empty_final {
            let choice = Some(ParameterChoice::Bool(true));
            request
                .parameters
                .insert(EMPTY_FINAL.into(), InferParameter { choice });
        }
        let timing = Timing::new("m".into(), "v".into(), Instant::now());
        Pending::new(&request, decoupled, timing, 7)
    }

    fn caller_id(forwarded: &Bytes) -> String {
        let response = ModelStreamInferResponse::decode(forwarded.clone()).unwrap();
        response.infer_response.unwrap().id
    }

    #[test]
    fn answers_go_back_with_the_callers_id_and_the_empty_final_one_ends_the_request_unseen() {
        let mut inflight = InFlight::default();
        inflight.add(1, pending("caller-a", true, false));
        let now = Instant::now();
        let first = inflight
            .route(answer("1", Some(false), 1, ""), now)
            .unwrap();
        assert_eq!(caller_id(&first.forward.unwrap()), "caller-a");
        assert!(first.ended.is_none());
        let last = inflight.route(answer("1", Some(true), 0, ""), now).unwrap();
        assert!(last.forward.is_none());
        let ended = last.ended.unwrap();
        assert_eq!((ended.request.timing.answers, ended.request.held), (1, 7));
        assert_eq!(ended.ending, Ending::Done);
        assert_eq!(inflight.len(), 0);
    }

    #[test]
    fn a_caller_that_asked_for_the_empty_final_answer_gets_it() {
        let mut inflight = InFlight::default();
        inflight.add(1, pending("", true, true));
        let last = inflight
            .route(answer("1", Some(true), 0, ""), Instant::now())
            .unwrap();
        assert_eq!(caller_id(&last.forward.unwrap()), "");
        assert_eq!(last.ended.unwrap().request.timing.answers, 0);
    }

    #[test]
    fn errors_and_answers_of_models_that_are_not_decoupled_are_last() {
        let mut inflight = InFlight::default();
        inflight.add(1, pending("a", true, false));
        inflight.add(2, pending("b", false, false));
        let failed = inflight
            .route(answer("1", None, 0, "boom"), Instant::now())
            .unwrap();
        let forwarded = ModelStreamInferResponse::decode(failed.forward.unwrap()).unwrap();
        assert_eq!(forwarded.error_message, "boom");
        assert_eq!(forwarded.infer_response.unwrap().id, "a");
        assert_eq!(failed.ended.unwrap().ending, Ending::Failed);
        let unary = inflight
            .route(answer("2", None, 1, ""), Instant::now())
            .unwrap();
        assert!(unary.forward.is_some() && unary.ended.is_some());
    }

    #[test]
    fn an_answer_naming_no_request_is_the_oldest_ones_and_with_none_passes_untouched() {
        let mut inflight: InFlight<u32> = InFlight::default();
        inflight.add(4, pending("first", false, false));
        inflight.add(5, pending("second", false, false));
        let misnamed = inflight
            .route(answer("4", None, 1, ""), Instant::now())
            .unwrap();
        assert_eq!(caller_id(&misnamed.forward.unwrap()), "first");
        let misnamed = inflight
            .route(answer("4", None, 1, ""), Instant::now())
            .unwrap();
        assert_eq!(caller_id(&misnamed.forward.unwrap()), "second");
        let message = answer("elsewhere", Some(false), 1, "");
        let routed = inflight.route(message.clone(), Instant::now()).unwrap();
        assert_eq!(routed.forward, Some(message));
    }
}
