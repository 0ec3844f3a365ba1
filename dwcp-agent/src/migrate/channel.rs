//! The source agent's control connection to the destination agent for one migration
//! (blocking; run it on a blocking thread).
//!
//! It is the same PSK-authenticated control connection as a transfer's, carrying the
//! migration messages of [`Control`]: `MigratePrepare` → `MigrateReady` (or `Abort`),
//! later `MigrateCommit` → `MigrateDone` (or `Abort`). With a disk (cold), `MigratePrepare`
//! is answered `MigrateDiskReady`, and `MigrateDiskSent` → `MigrateReady` follows the
//! disk's file transfer (see [`super::disk`]). The destination holds its
//! half-started VM exactly as long as this connection is open without a commit: closing
//! it (or this process dying) makes the destination roll back.

use std::{
    net::{Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use super::{MigrateError, MigrationMode, disk::DiskOffer};
use crate::{
    amst::AmstError,
    protocol::{
        ProtocolError,
        frame::{FrameReader, FrameWriter},
        handshake::{self, Psk, Role},
        messages::{self, Control, MAX_CONTROL_LEN},
    },
    vm::VmSpec,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the destination may take to start its QEMU, or to take the VM over.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// What the destination reported once the VM was in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// Its QEMU's run state (`running`, or `paused`).
    pub status: String,
    /// When the guest resumed there, microseconds since the Unix epoch by its clock.
    pub resumed_at_us: Option<u64>,
}

/// An open migration conversation with the destination agent.
#[derive(Debug)]
pub struct Channel {
    addr: SocketAddr,
    reader: FrameReader<TcpStream>,
    writer: FrameWriter<TcpStream>,
}

impl Channel {
    /// Connects and authenticates, sends `MigratePrepare` and waits for `MigrateReady`,
    /// or with `disk` for `MigrateDiskReady` (then send the disk and [`Channel::disk_sent`]).
    pub fn prepare(
        addr: SocketAddr,
        psk: &Psk,
        spec: &VmSpec,
        stream: &str,
        (mode, accel): (MigrationMode, crate::vm::accel::Accel),
        disk: Option<&DiskOffer>,
    ) -> Result<Self, MigrateError> {
        let connect = |source: AmstError| MigrateError::Connect { addr, source };
        let mut tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|source| connect(AmstError::Connect { addr, source }))?;
        let io = |e: std::io::Error| connect(AmstError::Protocol(ProtocolError::Io(e)));
        tcp.set_nodelay(true).map_err(io)?;
        tcp.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        handshake::client(&mut tcp, psk, Role::Control).map_err(|e| connect(e.into()))?;
        let mut channel = Self {
            addr,
            reader: FrameReader::new(tcp.try_clone().map_err(io)?, MAX_CONTROL_LEN),
            writer: FrameWriter::new(tcp),
        };
        let prepare = Control::MigratePrepare {
            vm: spec.clone(),
            stream: stream.to_owned(),
            mode,
            resume: true,
            accel,
            disk: disk.cloned(),
        };
        messages::send(&mut channel.writer, &prepare).map_err(|e| connect(e.into()))?;
        let (expected, name) = match disk {
            Some(_) => (Control::MigrateDiskReady, "migrate_disk_ready"),
            None => (Control::MigrateReady, "migrate_ready"),
        };
        match messages::recv(&mut channel.reader).map_err(|e| connect(e.into()))? {
            answer if answer == expected => Ok(channel),
            Control::Abort { reason } => Err(MigrateError::Refused(reason)),
            other => Err(MigrateError::Refused(format!(
                "it answered {} instead of {name}",
                other.kind()
            ))),
        }
    }

    /// Tells the destination its disk is in place and waits for `MigrateReady` (its QEMU
    /// started with the disk); returns why not.
    pub fn disk_sent(&mut self) -> Result<(), String> {
        messages::send(&mut self.writer, &Control::MigrateDiskSent).map_err(|e| {
            format!(
                "Cannot tell the destination the disk was sent: {}",
                crate::error_chain(&e)
            )
        })?;
        match messages::recv(&mut self.reader) {
            Ok(Control::MigrateReady) => Ok(()),
            Ok(Control::Abort { reason }) => {
                Err(format!("Destination refused the copied disk: {reason}"))
            }
            Ok(other) => Err(format!(
                "Destination answered {} instead of migrate_ready",
                other.kind()
            )),
            Err(e) => Err(format!(
                "Lost the destination agent while it started the VM's QEMU: {}",
                crate::error_chain(&e)
            )),
        }
    }

    /// The destination's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `MigrateCommit` and waits for `MigrateDone`; returns what the destination
    /// reported, or why it could not take the VM over.
    pub fn commit(&mut self) -> Result<Arrived, String> {
        messages::send(&mut self.writer, &Control::MigrateCommit)
            .map_err(|e| format!("Cannot send the commit: {}", crate::error_chain(&e)))?;
        match messages::recv(&mut self.reader) {
            Ok(Control::MigrateDone {
                status,
                resumed_at_us,
            }) => Ok(Arrived {
                status,
                resumed_at_us,
            }),
            Ok(Control::Abort { reason }) => Err(format!("Destination gave up: {reason}")),
            Ok(other) => Err(format!(
                "Destination answered {} instead of migrate_done",
                other.kind()
            )),
            Err(e) => Err(format!(
                "Lost the destination agent while it took the VM over: {}",
                crate::error_chain(&e)
            )),
        }
    }

    /// Tells the destination to roll back (best effort) and closes the connection.
    pub fn abort(mut self, reason: &str) {
        let _ = messages::send(
            &mut self.writer,
            &Control::Abort {
                reason: reason.to_owned(),
            },
        );
        let _ = self.writer.get_ref().shutdown(Shutdown::Both);
    }
}
