//! Durable state (issue 5): the records a shard writes to its WAL and the image that
//! recovery rebuilds from a snapshot and the log tail.
//!
//! - [`record`]: the vocabulary (session opened/ended, subscribed, message enqueued, sent,
//!   released, completed, dropped, inbound QoS 2 received/released, retained set/cleared,
//!   will pending/done) and its byte encoding.
//! - [`image`]: replay (`Image::apply`) and snapshot (`Image::snapshot`).
//!
//! - [`emit`]: how the engine writes records as its state changes, and holds the output that
//!   depends on them until the driver reports them durable.
//! - [`restore`]: the engine's side of recovery (state from an image) and of snapshots
//!   (state as records).

pub(crate) mod emit;
pub mod image;
pub mod record;
pub mod restore;

pub use image::{merge, DeliveryImage, Image, Replay, SessionImage};
pub use record::{Entry, Record};

#[cfg(test)]
mod tests;
