//! Small parts every layer above uses: latency histograms, single flights (one call shared by
//! the callers that ask for the same thing at once), the monotonic clock, bounded event queues
//! to the control plane, and JSON-lines logs written by a thread of their own.

pub mod clock;
pub mod events;
pub mod flights;
pub mod histogram;
pub mod jsonlog;
