//! The gateway's cache hits, shown to callers as Triton's own response cache would show them
//! (pure, at the wire level: the rest of Triton's answers is passed through as it came).
//!
//! A request answered from the gateway's cache never reaches Triton, so Triton's ModelStatistics
//! do not see it; clients that read them (perf_analyzer finds the version it measured by the
//! queue count that grew) would see a model doing nothing. Triton's own cache counts a hit as a
//! successful inference that passed its queue and hit the cache, without an execution: so do
//! these. And ModelConfig says `response_cache { enable: true }` for a route the gateway caches.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::protocol::wire::{self, WireError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitCounter {
    pub requests: u64,
    /// Rows: Triton counts each row of a batched request as an inference.
    pub inferences: u64,
    pub ns: u64,
}

/// Hits per upstream (model, version); version "" when the route let Triton choose.
#[derive(Default)]
pub struct ModelHits(Mutex<HashMap<(String, String), HitCounter>>);

impl ModelHits {
    pub fn record(&self, model: &str, version: &str, rows: u64, ns: u64) {
        let mut hits = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let counter = hits
            .entry((model.to_owned(), version.to_owned()))
            .or_default();
        counter.requests += 1;
        counter.inferences += rows;
        counter.ns += ns;
    }

    pub fn snapshot(&self) -> HashMap<(String, String), HitCounter> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn version_number(version: &[u8]) -> i64 {
    std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

// ModelStatistics: name 1, version 2, inference_count 4, inference_stats 6; InferStatistics:
// success 1, queue 3, cache_hit 7; StatisticDuration: count 1, ns 2.
const ENTRY: u32 = 1;
const INFERENCE_COUNT: u32 = 4;
const INFERENCE_STATS: u32 = 6;
const DURATIONS: [u32; 3] = [1, 3, 7];

/// `entry` (a ModelStatistics) with `counter` added: new values appended, which override.
fn add_hits(entry: &[u8], counter: HitCounter) -> Result<Bytes, WireError> {
    let mut suffix = BytesMut::new();
    let count = wire::uint_of(entry, INFERENCE_COUNT)?;
    wire::uint_field(&mut suffix, INFERENCE_COUNT, count + counter.inferences);
    let stats = wire::message_of(entry, INFERENCE_STATS)?;
    let mut edited = BytesMut::new();
    for number in DURATIONS {
        let duration = wire::message_of(&stats, number)?;
        let mut value = BytesMut::new();
        wire::uint_field(
            &mut value,
            1,
            wire::uint_of(&duration, 1)? + counter.requests,
        );
        wire::uint_field(&mut value, 2, wire::uint_of(&duration, 2)? + counter.ns);
        wire::message_field(&mut edited, number, &value);
    }
    wire::message_field(&mut suffix, INFERENCE_STATS, &edited);
    Ok(wire::append(entry, &suffix))
}

/// A ModelStatisticsResponse with the hits added to the matching entries; hits without a
/// version go to the highest version listed for their model. None: nothing to change.
pub fn fold_hits(
    answer: &[u8],
    hits: &HashMap<(String, String), HitCounter>,
) -> Result<Option<Bytes>, WireError> {
    if hits.values().all(|h| h.requests == 0) {
        return Ok(None);
    }
    let all = wire::fields(answer)?;
    let mut entries = Vec::with_capacity(all.len());
    let mut latest: HashMap<Vec<u8>, (i64, usize)> = HashMap::new();
    for (index, field) in all.iter().enumerate() {
        if let (ENTRY, Some((start, end))) = (field.number, field.payload) {
            let entry = &answer[start..end];
            let (name, version) = (wire::string_of(entry, 1)?, wire::string_of(entry, 2)?);
            let number = version_number(version);
            let best = latest.entry(name.to_vec()).or_insert((number, index));
            if number > best.0 {
                *best = (number, index);
            }
            entries.push((index, name.to_vec(), version.to_vec()));
        }
    }
    let mut added: HashMap<usize, HitCounter> = HashMap::new();
    for ((model, version), counter) in hits {
        let target = if version.is_empty() {
            latest.get(model.as_bytes()).map(|(_, index)| *index)
        } else {
            entries
                .iter()
                .find(|(_, n, v)| n == model.as_bytes() && v == version.as_bytes())
                .map(|(index, _, _)| *index)
        };
        if let (Some(index), true) = (target, counter.requests > 0) {
            let sum = added.entry(index).or_default();
            sum.requests += counter.requests;
            sum.inferences += counter.inferences;
            sum.ns += counter.ns;
        }
    }
    if added.is_empty() {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(answer.len() + 64 * added.len());
    for (index, field) in all.iter().enumerate() {
        match (added.get(&index), field.payload) {
            (Some(counter), Some((start, end))) => {
                let entry = add_hits(&answer[start..end], *counter)?;
                wire::message_field(&mut out, ENTRY, &entry);
            }
            _ => out.extend_from_slice(&answer[field.start..field.end]),
        }
    }
    Ok(Some(out.freeze()))
}

/// A ModelConfigResponse saying `config { response_cache { enable: true } }` (merged in).
pub fn show_cached(answer: &[u8]) -> Bytes {
    let mut enable = BytesMut::new();
    wire::uint_field(&mut enable, 1, 1);
    let mut cache = BytesMut::new();
    wire::message_field(&mut cache, 24, &enable); // ModelConfig.response_cache
    let mut config = BytesMut::new();
    wire::message_field(&mut config, 1, &cache); // ModelConfigResponse.config
    wire::append(answer, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(count: u64, ns: u64) -> BytesMut {
        let mut out = BytesMut::new();
        wire::uint_field(&mut out, 1, count);
        wire::uint_field(&mut out, 2, ns);
        out
    }

    fn entry(version: &str, count: u64) -> BytesMut {
        let mut entry = wire::string_field(1, b"m");
        entry.extend_from_slice(&wire::string_field(2, version.as_bytes()));
        wire::uint_field(&mut entry, INFERENCE_COUNT, count);
        wire::uint_field(&mut entry, 5, 9); // execution_count, left alone
        let mut stats = BytesMut::new();
        wire::message_field(&mut stats, 1, &duration(count, 100));
        wire::message_field(&mut stats, 2, &duration(1, 7)); // fail, left alone
        wire::message_field(&mut entry, INFERENCE_STATS, &stats);
        entry
    }

    fn read(answer: &[u8], index: usize) -> (u64, u64, u64, u64, u64) {
        let fields = wire::fields(answer).unwrap();
        let (start, end) = fields[index].payload.unwrap();
        let entry = &answer[start..end];
        let stats = wire::message_of(entry, INFERENCE_STATS).unwrap();
        let count = |n| wire::uint_of(&wire::message_of(&stats, n).unwrap(), 1).unwrap();
        (
            wire::uint_of(entry, INFERENCE_COUNT).unwrap(),
            count(1),
            count(7),
            count(2),
            wire::uint_of(entry, 5).unwrap(),
        )
    }

    #[test]
    fn hits_count_as_cached_successes_of_their_version_or_the_latest() {
        let mut answer = BytesMut::new();
        wire::message_field(&mut answer, ENTRY, &entry("1", 4));
        wire::message_field(&mut answer, ENTRY, &entry("2", 6));
        let hits = HashMap::from([
            (
                ("m".into(), "1".into()),
                HitCounter {
                    requests: 2,
                    inferences: 3,
                    ns: 10,
                },
            ),
            (
                ("m".into(), String::new()),
                HitCounter {
                    requests: 5,
                    inferences: 5,
                    ns: 10,
                },
            ),
        ]);
        let folded = fold_hits(&answer, &hits).unwrap().unwrap();
        assert_eq!(read(&folded, 0), (7, 6, 2, 1, 9));
        assert_eq!(read(&folded, 1), (11, 11, 5, 1, 9));
        assert_eq!(fold_hits(&answer, &HashMap::new()).unwrap(), None);
    }

    #[test]
    fn the_config_says_responses_are_cached() {
        let answer = show_cached(&[]);
        let config = wire::message_of(&answer, 1).unwrap();
        let cache = wire::message_of(&config, 24).unwrap();
        assert_eq!(wire::uint_of(&cache, 1).unwrap(), 1);
    }
}
