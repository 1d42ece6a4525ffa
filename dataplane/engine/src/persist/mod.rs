//! Durable state (issue 5): the records a shard writes to its WAL and the image that
//! recovery rebuilds from a snapshot and the log tail.
//!
//! - [`record`]: the vocabulary (session opened/ended, subscribed, message enqueued, sent,
//!   released, completed, dropped, inbound QoS 2 received/released, retained set/cleared,
//!   will pending/done) and its byte encoding.
//! - [`image`]: replay (`Image::apply`) and snapshot (`Image::snapshot`).
//!
//! The engine does not emit these records yet; this layer fixes what is logged and what
//! replaying it means, tested on its own.

pub mod image;
pub mod record;

pub use image::{DeliveryImage, Image, SessionImage};
pub use record::{Entry, Record};

#[cfg(test)]
mod tests;
