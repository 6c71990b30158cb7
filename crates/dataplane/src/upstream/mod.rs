//! Upstream pools: v2 servers behind one name, called over HTTP/2 with raw bytes.
//!
//! Each endpoint keeps one HTTP/2 connection (`protocol::channel`, reopened on demand after it
//! breaks). A
//! call picks an endpoint (`pool`: power of two choices, or round robin) among the eligible ones
//! (ready by the active probe, not ejected, ready for the model); a connection failure counts
//! towards outlier ejection (`resilience`) and is retried on another endpoint while the retry
//! budget and the deadline allow (`call`). Answers come back as bodies to forward; `call`
//! collects one for the core's own use (metadata, probes). `dns:` endpoints are found and
//! followed by `dns`.

pub mod affine;
pub mod call;
pub mod dns;
pub mod endpoint;
pub mod pool;
pub mod prefix_index;
pub mod resilience;

pub use call::{Attempt, CallInfo};
pub use endpoint::{Endpoint, ModelKey};
pub use pool::{discover, Pool, PoolConfig};
