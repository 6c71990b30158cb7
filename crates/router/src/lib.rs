//! Routing policy, sans-IO: no sockets, no runtime. Routes in, decisions out.
//!
//! - [`route`]: `Variant`, `MatchRule`, `ShadowPolicy`, `Route` (values, deserialized from the
//!   control plane's route table)
//! - [`decide`]: `decide(route, metadata, requested version, draw) -> Decision`
//! - [`check`]: what a route needs before it may serve

#![forbid(unsafe_code)]

pub mod check;
pub mod decide;
pub mod route;

pub use check::{check_route, RouteError};
pub use decide::{blake2b_64, decide, requested, sticky_variant, weighted, Decision, Reason};
pub use route::{MatchOp, MatchRule, Name, Route, ShadowPolicy, Variant};
