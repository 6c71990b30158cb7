//! What a route is: variants with weights, match rules, a sticky key and shadow policies.
//!
//! Values are immutable once built: a route table swap installs new `Arc<Route>`s, so a request
//! that picked its variant from one route finishes on it whatever happens to the table meanwhile.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A name from the route table (a model, a variant, a pool, a version): shared, not copied, by
/// every request routed by it and every record of one.
pub type Name = Arc<str>;

/// One way to serve a route: a pool and the upstream model name/version to ask it for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: Name,
    pub pool: Name,
    pub model: Name,
    #[serde(default = "unversioned")]
    pub version: Name,
    #[serde(default)]
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchOp {
    Equals,
    OneOf,
    Prefix,
}

/// Requests whose metadata `header` matches go to `variant`, whatever the weights say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRule {
    pub header: String,
    pub op: MatchOp,
    pub values: Vec<String>,
    pub variant: String,
}

impl MatchRule {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        match self.op {
            MatchOp::Prefix => self.values.iter().any(|p| value.starts_with(p.as_str())),
            // EQUALS holds one value, ONE_OF several.
            MatchOp::Equals | MatchOp::OneOf => self.values.iter().any(|v| v == value),
        }
    }
}

/// Copy a sampled `fraction` of the route's requests to `variant`, at most `max_inflight` at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowPolicy {
    pub variant: String,
    #[serde(default)]
    pub fraction: f64,
    #[serde(default = "default_shadow_inflight")]
    pub max_inflight: u32,
}

fn default_shadow_inflight() -> u32 {
    16
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub model: Name,
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub rules: Vec<MatchRule>,
    #[serde(default)]
    pub sticky_header: Option<String>,
    #[serde(default)]
    pub shadows: Vec<ShadowPolicy>,
    /// Built by the gateway from the upstream's versions rather than written by an operator.
    #[serde(default)]
    pub discovered: bool,
}

/// No version pinned: the upstream's choice.
fn unversioned() -> Name {
    Name::from("")
}

impl Route {
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| &*v.name == name)
    }

    /// The variant with the most weight (the first of equals): metadata RPCs go to its pool.
    pub fn heaviest(&self) -> &Variant {
        let mut best = &self.variants[0];
        for variant in &self.variants[1..] {
            if variant.weight > best.weight {
                best = variant;
            }
        }
        best
    }
}
