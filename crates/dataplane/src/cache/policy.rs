//! The cache policy of each route, the per-request `cache-control` directives and the `x-cache`
//! outcomes (pure).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub const CACHE_CONTROL: &str = "cache-control"; // request metadata
pub const CACHE_KEY: &str = "x-cache"; // trailing metadata: hit-l1 | hit-l2 | miss | bypass

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    HitL1,
    HitL2,
    Miss,
    Bypass,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::HitL1 => "hit-l1",
            Outcome::HitL2 => "hit-l2",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// What `gateway.caching.policies` decides for a route: the route's own section over the defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    pub ttl_s: f64,
    pub max_entry_bytes: usize,
    pub l1: bool,
    pub l2: bool,
    /// Streamed answers are cached too (else only for requests that ask: `cache_stream`).
    #[serde(default)]
    pub streams: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: false,
            ttl_s: 300.0,
            max_entry_bytes: 1 << 20,
            l1: true,
            l2: true,
            streams: false,
        }
    }
}

/// The default policy and each configured route's own (`Core.set_cache_policies`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Policies {
    pub default: Policy,
    #[serde(default)]
    pub routes: HashMap<String, Policy>,
}

impl Policies {
    pub fn of(&self, route: &str) -> &Policy {
        self.routes.get(route).unwrap_or(&self.default)
    }
}

/// `no-cache`: skip the lookup, still store. `no-store`: look up, never store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_cache: bool,
    pub no_store: bool,
}

impl Directives {
    pub fn parse(header: Option<&str>) -> Directives {
        let mut directives = Directives::default();
        for token in header.unwrap_or("").split(',') {
            let token = token.trim();
            directives.no_cache |= token.eq_ignore_ascii_case("no-cache");
            directives.no_store |= token.eq_ignore_ascii_case("no-store");
        }
        directives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_tokens_in_any_case_and_order() {
        let parsed = Directives::parse(Some(" No-Store , no-cache"));
        assert!(parsed.no_cache && parsed.no_store);
        assert_eq!(Directives::parse(None), Directives::default());
        assert_eq!(Directives::parse(Some("no-cachex")), Directives::default());
    }
}
