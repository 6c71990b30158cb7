//! The gateway's native data plane, and its Python boundary (`gateway._core`).
//!
//! Python → core, at control rate: `Core(config, reflection)`, `start()`, `set_routes()`,
//! `drain()`, `stop()`, `stats()`. Core → Python: `next_events()`, a bounded queue pulled by a
//! Python thread that releases the GIL while it waits. The core runs on its own tokio threads
//! and never calls Python, nor holds the GIL, while serving.

#![forbid(unsafe_code)]

// Bottom up, one group a layer: a module uses its own layer's and those listed before it
// (ARCHITECTURE.md draws the layers).

// The wire: statuses, errors, frames, messages, bodies, the client connection, reflection, TLS.
pub mod protocol;

// Spans of each RPC, exported over OTLP; a request checked against its model's signature.
mod traces;
pub mod validate;

// Histograms, flights, the clock, event queues, JSON-lines logs.
mod primitives;

// Pools of servers: endpoints, connections, balancing, resilience, DNS; and the queues in front.
mod admission;
mod upstream;

// The stages a request passes: its route and signature, the cache, micro-batching.
mod batching;
mod cache;
mod route;

// Shadow copies and their comparison; what is recorded of each RPC.
mod shadow;
mod telemetry;

// The gateway's serving status and the probes of its upstreams; what the control plane hands
// over; everything the RPCs share.
mod config;
mod health;
mod state;

// One module per RPC family, and the data port's edge.
mod edge;
mod rpc;

// The Python boundary.
mod python;

// The request path allocates and frees small buffers across tasks; mimalloc's thread-local
// free lists cost less than glibc's malloc there (identity c=16: 82 -> 77 µs of CPU a request).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
