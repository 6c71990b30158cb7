//! The leaves: what travels on the wire and how failures become statuses. gRPC's status codes,
//! framing and timeouts (`grpc`), the core's errors and their mapping to statuses (`error`), the
//! v2 protocol's messages (`messages`) and their encoding worked on without decoding (`wire`),
//! HTTP/2 bodies (`body`), the client connections to a gRPC server (`channel`, over
//! `connections`: sockets, keepalive pings, the unary calls' connections spread by load), the answers the
//! core builds itself (`respond`), ModelStreamInfer's requests and answers (`stream_answers`), the reflection
//! service's answers from descriptors (`reflection`), and TLS (`tls`).
//! Nothing here knows of routes, pools or the core's state.

pub mod body;
pub mod channel;
mod connections;
pub mod error;
pub mod grpc;
pub mod http2;
pub mod messages;
pub mod reflection;
pub mod respond;
pub mod stream_answers;
pub mod streams;
pub mod tls;
pub mod wire;
