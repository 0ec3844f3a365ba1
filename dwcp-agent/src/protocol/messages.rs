//! Control messages, carried as JSON payloads of [`FrameType::Control`] frames.
//!
//! Control traffic is a handful of small messages per transfer, so readability and a
//! decoder that cannot panic matter more than size. Unknown fields are refused.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::{
    ProtocolError,
    frame::{FrameReader, FrameType, FrameWriter},
};

/// Largest control message accepted.
pub const MAX_CONTROL_LEN: u32 = 1 << 20;

/// A control message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Sender proposes a transfer.
    Offer {
        /// Identifies the content across retries (name, size, modification time, block size).
        transfer_id: String,
        /// File name to create in the receiver's directory (no path separators).
        name: String,
        /// Total bytes.
        size: u64,
        /// Bytes per block (the last one may be shorter); for a stream, the largest block.
        block_size: u32,
        /// A stream of unknown length delivered in order (`size` is 0), not a file.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stream: bool,
        /// For a stream: blocks the receiver may hold out of order (its reorder ring).
        #[serde(default, skip_serializing_if = "is_zero")]
        window: u64,
        /// For a stream: how blocks are encoded (decoded by the receiver in order).
        #[serde(default, skip_serializing_if = "CodecChoice::is_none")]
        codec: CodecChoice,
    },
    /// Receiver accepts and lists blocks it already holds durably (resume).
    Accept {
        /// Session that data streams join.
        session_id: u64,
        /// Sequence numbers of blocks not to send again, as inclusive ranges.
        have: Vec<(u64, u64)>,
    },
    /// Sender: every block was acknowledged; here is the whole-transfer digest.
    End {
        /// Total bytes.
        size: u64,
        /// Digest of the whole content, hex (see `amst::digest`: BLAKE3 over block hashes).
        blake3: String,
    },
    /// Receiver: the file is in place under its final name.
    Done {
        /// Digest the receiver computed, hex.
        blake3: String,
    },
    /// Either side gives up, with a reason for the other's error message.
    Abort {
        /// Why.
        reason: String,
    },
    /// Source agent: get ready to receive VM `vm` as stream `stream` (see `crate::migrate`).
    MigratePrepare {
        /// The VM as the source defines it.
        vm: crate::vm::VmSpec,
        /// Name of the AMST stream that will carry QEMU's migration channel.
        stream: String,
        /// How the VM is moved.
        mode: crate::migrate::MigrationMode,
        /// Whether the VM must run on the destination once it arrived.
        resume: bool,
        /// The source QEMU's accelerator: the destination must use the same one.
        accel: crate::vm::accel::Accel,
        /// Cold migration of a VM with a local disk: the disk file comes first, as an
        /// AMST file transfer (answered by `MigrateDiskReady`, not `MigrateReady`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<crate::migrate::disk::DiskOffer>,
    },
    /// Destination agent: the VM is reserved (no QEMU yet) and the disk file is expected
    /// as the transfer the offer named.
    MigrateDiskReady,
    /// Source agent: the disk transfer was verified and is in place; start the QEMU.
    MigrateDiskSent,
    /// Destination agent: its QEMU waits for the stream.
    MigrateReady,
    /// Source agent: its QEMU completed the migration; take the VM over.
    MigrateCommit,
    /// Destination agent: the VM is in place, its QEMU reports `status`.
    MigrateDone {
        /// QEMU run state on the destination (`running`, or `paused`).
        status: String,
        /// When the guest resumed there (QEMU's `RESUME` event), microseconds since the
        /// Unix epoch by the destination's clock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_at_us: Option<u64>,
    },
}

/// How a stream's blocks are encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CodecChoice {
    /// Raw blocks.
    #[default]
    None,
    /// Each block one zstd frame at this level.
    Zstd {
        /// zstd level.
        level: i32,
    },
    /// HDE with this configuration (the receiver's decoder must share its geometry).
    Hde {
        /// The encoder's configuration.
        config: dwcp_hde::HdeConfig,
    },
}

impl CodecChoice {
    /// True for raw blocks.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Control {
    /// Short name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Offer { .. } => "offer",
            Self::Accept { .. } => "accept",
            Self::End { .. } => "end",
            Self::Done { .. } => "done",
            Self::Abort { .. } => "abort",
            Self::MigratePrepare { .. } => "migrate_prepare",
            Self::MigrateDiskReady => "migrate_disk_ready",
            Self::MigrateDiskSent => "migrate_disk_sent",
            Self::MigrateReady => "migrate_ready",
            Self::MigrateCommit => "migrate_commit",
            Self::MigrateDone { .. } => "migrate_done",
        }
    }

    /// Decodes a message from JSON bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Message(e.to_string()))
    }

    /// Encodes the message as JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Sends one control message.
pub fn send<W: Write>(w: &mut FrameWriter<W>, msg: &Control) -> Result<(), ProtocolError> {
    w.write_frame(FrameType::Control, 0, 0, &msg.encode())?;
    w.flush()
}

/// Receives one control message; the end of the connection is [`ProtocolError::Closed`].
pub fn recv<R: Read>(r: &mut FrameReader<R>) -> Result<Control, ProtocolError> {
    let header = r.read_header()?.ok_or(ProtocolError::Closed)?;
    if header.kind != FrameType::Control {
        return Err(ProtocolError::Unexpected {
            expected: "control message",
            got: format!("{:?} frame", header.kind),
        });
    }
    let mut buf = vec![0u8; header.payload_len as usize];
    r.read_payload(&header, &mut buf)?;
    Control::decode(&buf)
}

/// Packs sorted sequence numbers into inclusive ranges.
pub fn to_ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_through_frames() {
        let msg = Control::Offer {
            transfer_id: "abc".into(),
            name: "disk.img".into(),
            size: 5,
            block_size: 1 << 20,
            stream: false,
            window: 0,
            codec: Default::default(),
        };
        let mut w = FrameWriter::new(Vec::new());
        send(&mut w, &msg).unwrap();
        let wire = w.get_mut().clone();
        assert_eq!(
            recv(&mut FrameReader::new(&wire[..], MAX_CONTROL_LEN)).unwrap(),
            msg
        );
    }

    #[test]
    fn migration_messages_round_trip() {
        let mut spec = crate::vm::VmSpec::named("vm1");
        spec.kernel = Some("/k".into());
        for msg in [
            Control::MigratePrepare {
                vm: spec,
                stream: "vm1.mig".into(),
                mode: crate::migrate::MigrationMode::Warm,
                resume: true,
                accel: crate::vm::accel::Accel::Tcg,
                disk: Some(crate::migrate::disk::DiskOffer {
                    file: "root.qcow2".into(),
                    size: 64 << 20,
                    transfer: ".migrate-vm1-disk".into(),
                }),
            },
            Control::MigrateDiskReady,
            Control::MigrateDiskSent,
            Control::MigrateReady,
            Control::MigrateCommit,
            Control::MigrateDone {
                status: "running".into(),
                resumed_at_us: Some(1_790_000_000_000_000),
            },
            Control::MigrateDone {
                status: "paused".into(),
                resumed_at_us: None,
            },
        ] {
            assert_eq!(Control::decode(&msg.encode()).unwrap(), msg);
        }
        let err = Control::decode(br#"{"type":"migrate_prepare","stream":"s"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Control::decode(br#"{"type":"done","blake3":"x","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn ranges_pack() {
        assert_eq!(
            to_ranges([1, 2, 3, 7, 9, 10]),
            vec![(1, 3), (7, 7), (9, 10)]
        );
        assert!(to_ranges([]).is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Control::decode(&bytes);
        }
    }
}
