//! Per-request routing: a pure function of the route, the request's metadata and random draws.
//!
//! Precedence: a version the caller named > the first matching rule > the sticky key > the weights.
//! Sticky keys use weighted rendezvous hashing: every replica computes the same variant for the
//! same key with no shared state, and a weight change moves only the keys that must move (those
//! whose best-scoring variant changed: the minimum share). The hash (BLAKE2b, 8 bytes,
//! big-endian, over `model \0 variant \0 key`) is the one earlier releases used, so replicas of
//! old and new versions agree on every key during an upgrade.

use std::borrow::Cow;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::route::{Route, ShadowPolicy, Variant};

/// Why the primary variant was chosen (`x-gateway-variant` names the variant, this the rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    RequestedVersion,
    Match(String),
    Sticky(String),
    Weighted,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::RequestedVersion => f.write_str("requested-version"),
            Reason::Match(header) => write!(f, "match:{header}"),
            Reason::Sticky(header) => write!(f, "sticky:{header}"),
            Reason::Weighted => f.write_str("weighted"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision<'r> {
    /// Borrowed from the route, except for a version the caller asked for that no variant names.
    pub primary: Cow<'r, Variant>,
    pub shadows: Vec<(&'r Variant, &'r ShadowPolicy)>,
    pub reason: Reason,
}

/// BLAKE2b with an 8-byte digest, read big-endian.
pub fn blake2b_64(data: &[u8]) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    hasher.update(data);
    let mut out = [0u8; 8];
    hasher
        .finalize_variable(&mut out)
        .expect("the buffer has the digest's size");
    u64::from_be_bytes(out)
}

/// Route one request. `header(name)` reads the caller's metadata; `draw()` is uniform in [0, 1).
pub fn decide<'r, 'm>(
    route: &'r Route,
    header: impl Fn(&str) -> Option<&'m str>,
    requested_version: &str,
    mut draw: impl FnMut() -> f64,
) -> Decision<'r> {
    let (primary, reason) = primary(route, &header, requested_version, &mut draw);
    let shadows = route
        .shadows
        .iter()
        .filter(|policy| *policy.variant != *primary.name)
        .filter_map(|policy| route.variant(&policy.variant).map(|v| (v, policy)))
        .filter(|(_, policy)| draw() < policy.fraction)
        .collect();
    Decision {
        primary,
        shadows,
        reason,
    }
}

fn primary<'r, 'm>(
    route: &'r Route,
    header: &impl Fn(&str) -> Option<&'m str>,
    requested_version: &str,
    draw: &mut impl FnMut() -> f64,
) -> (Cow<'r, Variant>, Reason) {
    if !requested_version.is_empty() {
        return (
            requested(route, requested_version),
            Reason::RequestedVersion,
        );
    }
    for rule in &route.rules {
        if rule.matches(header(&rule.header)) {
            if let Some(variant) = route.variant(&rule.variant) {
                return (Cow::Borrowed(variant), Reason::Match(rule.header.clone()));
            }
        }
    }
    if let Some(sticky) = &route.sticky_header {
        if let Some(key) = header(sticky).filter(|k| !k.is_empty()) {
            return (
                Cow::Borrowed(sticky_variant(route, key)),
                Reason::Sticky(sticky.clone()),
            );
        }
    }
    (Cow::Borrowed(weighted(route, draw())), Reason::Weighted)
}

/// The variant named (or pinned to) that version; otherwise that version of the heaviest one.
pub fn requested<'r>(route: &'r Route, version: &str) -> Cow<'r, Variant> {
    if let Some(variant) = route
        .variants
        .iter()
        .find(|v| &*v.name == version || &*v.version == version)
    {
        return Cow::Borrowed(variant);
    }
    let heaviest = route.heaviest();
    Cow::Owned(Variant {
        name: version.into(),
        pool: heaviest.pool.clone(),
        model: heaviest.model.clone(),
        version: version.into(),
        weight: 0,
    })
}

/// `point` uniform in [0, 1) picks a variant in proportion to the weights.
pub fn weighted(route: &Route, point: f64) -> &Variant {
    let total: f64 = route.variants.iter().map(|v| f64::from(v.weight)).sum();
    let mut point = point * total;
    for variant in &route.variants {
        point -= f64::from(variant.weight);
        if point < 0.0 && variant.weight > 0 {
            return variant;
        }
    }
    // Float rounding at the top end.
    route
        .variants
        .iter()
        .rev()
        .find(|v| v.weight > 0)
        .unwrap_or(&route.variants[0])
}

/// Weighted rendezvous hashing: the variant whose score for this key is highest.
pub fn sticky_variant<'r>(route: &'r Route, key: &str) -> &'r Variant {
    let score = |variant: &Variant| -> f64 {
        let material = format!("{}\0{}\0{}", route.model, variant.name, key);
        let digest = blake2b_64(material.as_bytes());
        let uniform = (digest as f64 + 0.5) / 2f64.powi(64); // in (0, 1)
        f64::from(variant.weight) / -uniform.ln()
    };
    let mut best: Option<(&Variant, f64)> = None;
    for variant in route.variants.iter().filter(|v| v.weight > 0) {
        let s = score(variant);
        if best.is_none_or(|(_, top)| s > top) {
            best = Some((variant, s));
        }
    }
    best.map_or(&route.variants[0], |(v, _)| v)
}
