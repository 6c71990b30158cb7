//! What generative traffic is measured by, per model and variant: each streamed request's time to
//! its first answer, the gaps between its answers, how many answers it had, and how it ended
//! (its last answer, an error answer, its caller leaving, or its upstream stream breaking).

use std::time::Instant;

use super::{round3, unix_time, AccessEntry, Telemetry};
use crate::primitives::histogram::Histogram;
use crate::primitives::locked;
use crate::protocol::grpc::Code;

/// Upper bounds of the answers-per-request histogram.
pub const ANSWER_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// How a streamed request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Its last answer came.
    Done,
    /// Its last answer was an error.
    Failed,
    /// Its caller left (cancelled the RPC, or its deadline passed) before its last answer.
    Cancelled,
    /// Its upstream stream broke off.
    Broken,
}

impl Ending {
    /// The status the request's end reads as in the access log.
    fn code(self) -> Code {
        match self {
            Ending::Done => Code::Ok,
            Ending::Failed => Code::Unknown,
            Ending::Cancelled => Code::Cancelled,
            Ending::Broken => Code::Unavailable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ending::Done => "done",
            Ending::Failed => "failed",
            Ending::Cancelled => "cancelled",
            Ending::Broken => "broken",
        }
    }
}

/// One streamed request's measures, kept while it runs.
#[derive(Debug, Clone)]
pub struct Timing {
    pub model: String,
    pub variant: String,
    pub sent: Instant,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Answers passed to the caller (outputs or an error).
    pub answers: u64,
    pub gaps: Histogram,
}

impl Timing {
    pub fn new(model: String, variant: String, sent: Instant) -> Timing {
        Timing {
            model,
            variant,
            sent,
            first: None,
            last: None,
            answers: 0,
            gaps: Histogram::default(),
        }
    }

    /// An answer passed to the caller at `now`.
    pub fn answered(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.gaps.observe(now.duration_since(last).as_secs_f64());
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.answers += 1;
    }

    /// The time from sending to the first answer.
    pub fn first_after(&self) -> Option<std::time::Duration> {
        self.first.map(|at| at.duration_since(self.sent))
    }

    fn first_s(&self) -> Option<f64> {
        self.first_after().map(|d| d.as_secs_f64())
    }
}

/// The series of one model and variant.
#[derive(Default)]
pub struct StreamSeries {
    pub first: Histogram,
    pub gaps: Histogram,
    /// Per bound of ANSWER_BUCKETS (not cumulative); beyond the last: requests - their sum.
    pub answers: Vec<u64>,
    pub answers_sum: u64,
    /// Requests by how they ended: done, failed, cancelled, broken.
    pub ended: [u64; 4],
}

impl StreamSeries {
    fn add(&mut self, timing: &Timing, ending: Ending) {
        if let Some(first) = timing.first_s() {
            self.first.observe(first);
        }
        self.gaps.merge(&timing.gaps);
        if self.answers.is_empty() {
            self.answers = vec![0; ANSWER_BUCKETS.len()];
        }
        let answers = timing.answers as f64;
        if let Some(index) = ANSWER_BUCKETS.iter().position(|bound| answers <= *bound) {
            self.answers[index] += 1;
        }
        self.answers_sum += timing.answers;
        self.ended[ending as usize] += 1;
    }
}

/// The series as JSON-ready rows (the core's stats: `streams`).
pub fn rows<'a>(
    series: impl Iterator<Item = (&'a [String; 2], &'a StreamSeries)>,
) -> Vec<serde_json::Value> {
    series
        .map(|([model, variant], s)| {
            let ended: serde_json::Map<String, serde_json::Value> = [
                Ending::Done,
                Ending::Failed,
                Ending::Cancelled,
                Ending::Broken,
            ]
            .iter()
            .map(|e| (e.name().to_owned(), s.ended[*e as usize].into()))
            .collect();
            serde_json::json!({
                "model": model, "variant": variant, "first_response": s.first, "gaps": s.gaps,
                "answers": s.answers, "answers_sum": s.answers_sum, "ended": ended,
            })
        })
        .collect()
}

impl Telemetry {
    /// A streamed request has ended: into its variant's series and the access log.
    pub fn stream_request_ended(&self, timing: &Timing, ending: Ending) {
        locked(&self.series)
            .streams
            .update([&*timing.model, &*timing.variant], |series| {
                series.add(timing, ending)
            });
        if let Some(access) = &self.access {
            access.write(AccessEntry {
                time: unix_time(),
                method: "ModelStreamInfer/request".into(),
                model: timing.model.clone(),
                variant: timing.variant.clone(),
                code: ending.code().name(),
                latency_ms: round3(timing.sent.elapsed().as_secs_f64() * 1000.0),
                ended: Some(ending.name()),
                first_response_ms: timing.first_s().map(|s| round3(s * 1000.0)),
                responses: Some(timing.answers),
                ..AccessEntry::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_gives_its_first_answer_time_its_gaps_and_its_count() {
        let sent = Instant::now();
        let mut timing = Timing::new("m".into(), "v".into(), sent);
        for ms in [30, 40, 60] {
            timing.answered(sent + Duration::from_millis(ms));
        }
        let mut series = StreamSeries::default();
        series.add(&timing, Ending::Done);
        series.add(
            &Timing::new("m".into(), "v".into(), sent),
            Ending::Cancelled,
        );
        assert_eq!((series.first.count, series.gaps.count), (1, 2));
        assert!((series.first.sum - 0.03).abs() < 1e-9 && (series.gaps.sum - 0.03).abs() < 1e-9);
        assert_eq!(
            (series.answers[0], series.answers[2], series.answers_sum),
            (1, 1, 3)
        );
        assert_eq!(series.ended, [1, 0, 1, 0]);
    }
}
