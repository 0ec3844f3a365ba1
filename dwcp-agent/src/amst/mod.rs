//! AMST, the adaptive multi-stream transport: moves a file (or block device) to a peer
//! agent over one control connection and N parallel TCP data streams.
//!
//! The sender ([`sender`]) cuts the payload into blocks (PBA blocks, filled with `pread`
//! for hashing, the payload then `sendfile`d from the page cache); a shared [`scheduler`] hands the next block to whichever
//! stream asks first, so a slow stream never holds the others up. Each stream keeps a
//! bounded number of unacknowledged blocks; a stream that fails gives its unacknowledged
//! blocks back to the scheduler, which resends them on the others. The receiver
//! ([`receiver`]) writes each block at its offset (no reordering buffer: memory stays
//! bounded), acknowledges it, keeps a resume record, and on the end message checks the
//! whole-file digest before renaming into place. Stream count is fixed or chosen by the
//! [`auto`] controller from measured goodput and kernel retransmissions. Sources that
//! can be read only once (pipes, sockets, QEMU's migration channel) go through
//! [`stream`]: blocks kept until acknowledged, delivered in order.
//! Wire format: [`crate::protocol`].

pub mod auto;
mod connect;
pub mod digest;
pub mod failures;
mod file_block;
mod file_receive;
mod file_session;
mod in_flight;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod receiver;
pub mod scheduler;
pub mod sender;
pub mod socket;
mod source_map;
pub mod stream;
pub mod summary;
pub mod zerocopy;

/// Errors of a transfer.
#[derive(Debug, thiserror::Error)]
pub enum AmstError {
    /// The protocol failed on a connection (includes the peer's refusal reasons).
    #[error(transparent)]
    Protocol(#[from] crate::protocol::ProtocolError),
    /// Connecting to the peer failed.
    #[error("Cannot connect to {addr}")]
    Connect {
        /// Peer.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the source or writing the destination failed.
    #[error("{what} {path}")]
    File {
        /// What was being done.
        what: &'static str,
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Every data stream failed: the peer is gone or unreachable.
    #[error("All {streams} data streams failed; last error: {last}")]
    AllStreamsFailed {
        /// How many were open.
        streams: usize,
        /// The last stream's error.
        last: String,
    },
    /// The peer aborted the transfer.
    #[error("Peer aborted the transfer: {0}")]
    Aborted(String),
    /// The digest the receiver computed differs from the sender's.
    #[error("Digest mismatch: sent {sent}, receiver computed {received}")]
    DigestMismatch {
        /// Sender's BLAKE3.
        sent: String,
        /// Receiver's BLAKE3.
        received: String,
    },
    /// Bad parameters (block size, stream count, file name).
    #[error("Invalid transfer parameter: {0}")]
    Invalid(String),
    /// The block pool refused (configuration, exhaustion).
    #[error("Block pool failed")]
    Pool(#[from] crate::pba::PbaError),
}

/// Smallest and largest stream counts.
pub const STREAM_RANGE: std::ops::RangeInclusive<usize> = 1..=256;
