//! Streamed transfers: a source that can be read only once and whose length is not
//! known up front (a pipe, a socket, QEMU's migration channel), delivered in order.
//!
//! Differences from a file transfer ([`super::sender`], [`super::receiver`]):
//! - the sender keeps every block in its pool block until acknowledged and resends it
//!   from there after a stream failure (the source cannot be re-read);
//! - blocks may be shorter than the block size (a burst's tail is flushed after 2 ms
//!   of silence); offsets are the running byte count;
//! - the receiver delivers blocks strictly in order through a fixed reorder ring, and
//!   every acknowledgement reports how many blocks were delivered, which holds the
//!   sender to the ring's size ([`outbox`]);
//! - the digest is built in stream order ([`super::digest::StreamDigest`]);
//! - there is no resume: a stream that fails entirely is sent again from the start;
//! - with `--streams auto` the same controller as for files ([`super::auto`]) adds
//!   streams mid-transfer and sheds them (`stream_set.rs` keeps the slots).

pub mod auto_codec;
pub mod codec;
pub mod codec_tally;
pub mod decode_pipeline;
pub mod delivery;
pub mod encode_pipeline;
pub mod outbox;
pub mod receive;
pub mod send;
mod stream_set;
