//! Which variant serves a request: the live route table (`table`), the models' signatures
//! learned from their servers (`signatures`), and the request re-addressed to the chosen
//! variant (`retarget`), and the keys a prompt's prefix gives for prefix affinity (`affinity`).
//! The decision itself is the `gateway-router` crate's.

pub mod affinity;
pub mod retarget;
pub mod signatures;
pub mod table;
