//! The core's own HTTP/2, both ends: the server every caller's connection is served by, and a
//! client for upstream calls whose request is one whole message (every unary RPC, all of
//! ModelInfer). Frames (`frame`) and header compression (`hpack` decoding, `hpack_encode`, `huffman`) worked on
//! without I/O, as is what a connection reads (`receive`); what a connection's users and its
//! I/O share behind one lock (`shared`); the I/O that writes and reads (`driver`); a client's
//! connection as its callers hold it (`connection`), a server's as its accepting task does
//! (`server`).
//!
//! Why not h2: on the bare forward, h2 cost half of a request's instructions (a frame queue per
//! stream, a lock and a store lookup per operation, HPACK's encoder hashing every field of every
//! head, its header checks). Here a head is encoded as literals straight into the write buffer,
//! a stream's frames are queued by its user itself, and the I/O writes them all and reads what
//! came in one pass. Streamed calls upstream (ModelStreamInfer) and OTLP keep h2's client.

mod connection;
mod driver;
mod frame;
mod hpack;
mod hpack_encode;
mod huffman;
mod receive;
mod server;
mod shared;
mod slot;

pub use connection::{Connection, Pinger, Stream};
pub use hpack_encode::{
    put_field, Literal, AUTHORITY, CONTENT_TYPE, METHOD_POST, PATH, SCHEME_HTTP, SCHEME_HTTPS,
};
pub use server::{Incoming, Respond, Server};
pub use shared::Failure;
