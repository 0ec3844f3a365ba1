//! DWCP wire protocol, version 2.
//!
//! Every connection is TCP to the receiver's data port (default 9478) and starts with a
//! mutual challenge–response authentication on a pre-shared key ([`handshake`]). One
//! connection of a transfer is the **control** connection; the others are **data**
//! streams that join the session the control connection opened. After the handshake,
//! both directions carry [`frame`]s: a fixed 48-byte header (type, per-connection frame
//! number, block sequence, offset, lengths, codec, a payload check and the header's
//! CRC32C) followed by the payload. Version 2 made the payload check the low word of
//! the payload's XXH3-128, the hash the transfer digest takes, so a block is hashed once
//! per side (for a streamed transfer: each raw block; an encoded block's digest entry
//! hashes its decoded bytes); peers of different versions refuse each other in the
//! handshake. Control frames carry small JSON [`messages`].
//!
//! ```text
//! sender                                               receiver
//!   | control conn: Hello(role=control, nonce_c) ------->  |
//!   | <------- Challenge(nonce_s, HMAC_psk(server, ...))   |  sender checks the receiver
//!   | Auth(HMAC_psk(client, hello, challenge)) --------->  |  receiver checks the sender
//!   | <-------------------------------- Verdict(ok)        |
//!   | Offer{transfer id, name, size, block size} ------->  |
//!   | <------- Accept{session, blocks already held}        |  (resume: skip those)
//!   | data conn 1..N: Hello(role=data, session) ... Verdict (same handshake)
//!   | Data(seq, offset, check) on any stream ----------->  |  pwrite at offset
//!   | <-------------------------- Ack(seq) on that stream  |  sender frees the block
//!   |   (a stream that dies: its unacknowledged blocks are resent on the others)
//!   | End{size, blake3 digest} on control -------------->  |  fsync, verify digest,
//!   | <----------------------- Done{ok} or Abort{reason}   |  rename into place
//! ```
//!
//! **Streams** (`Offer{stream: true, window: W}`, size 0: a pipe or QEMU's migration
//! channel, read once, length unknown) differ in three places: blocks may be shorter than
//! the block size and their offsets are the running byte count; the receiver delivers
//! them strictly in order through a ring of `W` slots and each `Ack`'s offset field
//! carries how many blocks it has delivered, which the sender never runs more than `W`
//! ahead of; `End.size` is the stream's final length and the digest is built in stream
//! order (`amst::digest::StreamDigest`). Streams do not resume.
//!
//! Guarantees and limits:
//! - A stranger without the key cannot open a session or join one as a data stream;
//!   a recorded handshake cannot be replayed (fresh nonces on both sides).
//! - Within a connection, frame numbers increase by one; a repeated or skipped number
//!   is refused as a replay. Blocks carry the low 32 bits of their XXH3-128; the whole
//!   transfer a BLAKE3 digest over those XXH3-128 hashes (`amst::digest`).
//! - Memory is bounded on both sides: the sender has at most its window of blocks in
//!   flight per stream; a file receiver writes each block where it belongs and keeps
//!   none, a stream receiver keeps at most its reorder window.
//! - No encryption: run over a trusted network or an IPsec/WireGuard tunnel.
//! - Decoders never panic on any input (property tests, and a fuzz target).

pub mod frame;
pub mod handshake;
pub mod messages;

/// Protocol version spoken by this build.
pub const VERSION: u16 = 2;

/// Errors of decoding frames and running the handshake.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading or writing the connection failed.
    #[error("Connection failed")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection in the middle of a frame or message.
    #[error("Peer closed the connection")]
    Closed,
    /// Not a DWCP frame or message (wrong magic bytes).
    #[error("Not a DWCP {what} (bad magic)")]
    BadMagic {
        /// What was expected.
        what: &'static str,
    },
    /// A header field has a value this version does not define.
    #[error("Malformed frame header: {0}")]
    Malformed(String),
    /// The header checksum does not match: corrupted in transit.
    #[error("Frame header checksum mismatch")]
    HeaderChecksum,
    /// The payload checksum does not match: corrupted in transit.
    #[error("Payload checksum mismatch in block {seq}")]
    PayloadChecksum {
        /// Block sequence number.
        seq: u64,
    },
    /// The payload is larger than the agreed maximum.
    #[error("Frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// A frame number was repeated or skipped.
    #[error("Replayed or out-of-order frame: number {got}, expected {expected}")]
    Replay {
        /// Number received.
        got: u64,
        /// Number expected.
        expected: u64,
    },
    /// The peers share no protocol version.
    #[error("No common protocol version (we speak {ours}, peer speaks {min}..={max})")]
    Version {
        /// Ours.
        ours: u16,
        /// Peer's lowest.
        min: u16,
        /// Peer's highest.
        max: u16,
    },
    /// The peer's proof of the pre-shared key is wrong.
    #[error("Authentication failed: the peer does not hold the same pre-shared key")]
    AuthFailed,
    /// The peer refused us, with its reason.
    #[error("Refused by peer: {0}")]
    Refused(String),
    /// A control message could not be decoded.
    #[error("Malformed control message: {0}")]
    Message(String),
    /// A valid frame or message arrived where another was required.
    #[error("Unexpected {got}, expected {expected}")]
    Unexpected {
        /// What the state machine waited for.
        expected: &'static str,
        /// What came.
        got: String,
    },
}
