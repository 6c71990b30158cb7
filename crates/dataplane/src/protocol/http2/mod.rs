//! A lean HTTP/2 client for calls whose request is one whole message (every unary RPC, all of
//! ModelInfer): frames (`frame`) and header compression (`hpack`, `huffman_codes`) worked on
//! without I/O; the connection as its callers hold it (`connection`), what they and its task
//! share behind one lock (`shared`), and the task that writes and reads (`driver`).
//!
//! Why not h2's client: on the bare forward, h2's client half cost a third of a request's
//! instructions (a frame queue per stream, a lock and a store lookup per operation, HPACK's
//! encoder hashing every field of every head). Here a call's head is a template copied into
//! the write buffer, its frames are queued by the caller itself, and the connection's task
//! writes them all and reads the answers in one pass. Streamed calls keep h2's client.

mod connection;
mod driver;
mod frame;
mod hpack;
mod huffman_codes;
mod shared;

pub use connection::{Connection, Pinger, Stream};
pub use hpack::{
    put_field, Literal, AUTHORITY, CONTENT_TYPE, METHOD_POST, PATH, SCHEME_HTTP, SCHEME_HTTPS,
};
pub use shared::Failure;
