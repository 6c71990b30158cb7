//! Prefix affinity, the pool's part: which endpoint served each prompt prefix and session last
//! (`prefix_index`), and the pick that prefers it, bounded by load.
//!
//! A request goes to the endpoint its session went to, else to the one that served its longest
//! known prefix (the replica whose prefix / KV cache holds the most of its prompt), as long as
//! that endpoint's requests under way stay within `load_factor` times its fair share of the
//! pool's (consistent hashing with bounded loads, Mirrokni et al.); past it, or with nothing
//! known, P2C picks. Every key of the request is then the chosen endpoint's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::primitives::locked;
use crate::protocol::error::GatewayError;
use crate::upstream::endpoint::{Endpoint, ModelKey};
use crate::upstream::pool::Pool;

/// Where a request would like to go: its session's key, and one key per whole block of its
/// prompt, the longest prefix last (`route::affinity` reads them off the request).
#[derive(Debug, Default, PartialEq)]
pub struct Keys {
    pub session: Option<u64>,
    pub prefixes: Vec<u64>,
}

/// How a request's endpoint was chosen (the index into `PoolStats::affinity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    Session,
    Prefix,
    Spilled,
    New,
}

impl Chosen {
    pub const NAMES: [&'static str; 4] = ["session", "prefix", "spilled", "new"];
}

/// Whether `endpoint` may take one more request: at most `load_factor` times an equal share of
/// all the candidates' requests under way (this one included), rounded up.
fn within_bound(endpoint: &Endpoint, candidates: &[Arc<Endpoint>], load_factor: f64) -> bool {
    let total: u64 = candidates
        .iter()
        .map(|e| e.outstanding.load(Ordering::Relaxed))
        .sum();
    let bound = (load_factor * (total + 1) as f64 / candidates.len() as f64).ceil() as u64;
    endpoint.outstanding.load(Ordering::Relaxed) < bound.max(1)
}

impl Pool {
    /// The endpoint for a request with `keys` (see the module), and how it was chosen.
    pub fn pick_affine(
        &self,
        model: Option<&ModelKey>,
        keys: &Keys,
        load_factor: f64,
    ) -> Result<(Arc<Endpoint>, Chosen), GatewayError> {
        let candidates = self.candidates(model, &[])?;
        let mut index = locked(&self.prefixes);
        let known = |address: &str| candidates.iter().find(|e| e.address() == address);
        let mut matched = false;
        let mut found: Option<(&Arc<Endpoint>, Chosen)> = None;
        let wanted = keys
            .session
            .iter()
            .map(|key| (*key, Chosen::Session))
            .chain(keys.prefixes.iter().rev().map(|key| (*key, Chosen::Prefix)));
        for (key, how) in wanted {
            let Some(endpoint) = index.get(key).and_then(|address| known(&address)) else {
                continue;
            };
            matched = true;
            if within_bound(endpoint, &candidates, load_factor) {
                found = Some((endpoint, how));
                break;
            }
        }
        let (endpoint, how) = match found {
            Some((endpoint, how)) => (endpoint.clone(), how),
            None => {
                let how = if matched {
                    Chosen::Spilled
                } else {
                    Chosen::New
                };
                (self.choose_among(&candidates).clone(), how)
            }
        };
        let address: Arc<str> = Arc::from(endpoint.address());
        for key in keys.session.iter().chain(&keys.prefixes) {
            index.put(*key, address.clone());
        }
        self.stats.affinity[how as usize].fetch_add(1, Ordering::Relaxed);
        Ok((endpoint, how))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::pool::tests::pool;

    fn keys(session: Option<u64>, prefixes: &[u64]) -> Keys {
        Keys {
            session,
            prefixes: prefixes.to_vec(),
        }
    }

    #[test]
    fn a_prompt_goes_where_its_longest_known_prefix_went_within_the_load_bound() {
        let pool = pool("least_request");
        let (first, how) = pool.pick_affine(None, &keys(None, &[1, 2]), 1.25).unwrap();
        assert_eq!(how, Chosen::New);
        // A longer prompt sharing both blocks, then one sharing only the first: the same endpoint.
        for prefixes in [&[1, 2, 3][..], &[1, 9]] {
            let (endpoint, how) = pool.pick_affine(None, &keys(None, prefixes), 1.25).unwrap();
            assert!(Arc::ptr_eq(&endpoint, &first) && how == Chosen::Prefix);
        }
        // Loaded past its bound (4 under way of 4 in all, 3 endpoints): spilled to another.
        first.outstanding.store(4, Ordering::Relaxed);
        let (spilled, how) = pool.pick_affine(None, &keys(None, &[1, 2]), 1.25).unwrap();
        assert!(!Arc::ptr_eq(&spilled, &first) && how == Chosen::Spilled);
        // The prefix is now the spilled-to endpoint's; a session pins its conversation.
        first.outstanding.store(0, Ordering::Relaxed);
        let (again, _) = pool.pick_affine(None, &keys(None, &[1, 2]), 1.25).unwrap();
        assert!(Arc::ptr_eq(&again, &spilled));
        let (pinned, _) = pool.pick_affine(None, &keys(Some(77), &[5]), 1.25).unwrap();
        let (later, how) = pool.pick_affine(None, &keys(Some(77), &[6]), 1.25).unwrap();
        assert!(Arc::ptr_eq(&later, &pinned) && how == Chosen::Session);
        let counted: Vec<u64> = pool
            .stats
            .affinity
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counted, [1, 3, 1, 2]);
    }
}
