//! The data port: the listener (`listener`) and the edge of each request (`request`), where
//! it is dispatched to its RPC and where every failure becomes a gRPC status.

mod listener;
mod request;

pub use listener::serve;
