//! The destination agent's side: a [`ControlHandler`] on the AMST receiver that takes a
//! `MigratePrepare` conversation from a source agent.
//!
//! The receiver runs it on its connection thread (blocking); VM operations are async and
//! run on the agent's tokio runtime through a [`tokio::runtime::Handle`]. The VM is held
//! here only while the conversation lasts: a commit makes it this host's VM, anything
//! else (an `Abort`, the connection closing, the local QEMU dying, a failed commit)
//! kills the QEMU and removes the record, so no half-started VM stays behind. A cold
//! migration's disk arrives before the QEMU starts ([`super::disk`]); the VM's directory,
//! removed on rollback, holds it.

use std::{
    net::{Shutdown, TcpStream},
    os::unix::net::UnixStream,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{
    Direction, MigrationMode, MigrationReport,
    disk::{DiskOffer, ExpectedDisk},
};
use crate::{
    amst::{
        AmstError,
        receiver::{ControlHandler, Receiver},
    },
    protocol::{
        ProtocolError,
        frame::{FrameReader, FrameWriter},
        messages::{self, Control},
    },
    vm::{VmManager, VmSpec, incoming::IncomingVm},
};

/// How long a migration may last before the destination gives up waiting for the commit.
const COMMIT_WAIT: Duration = Duration::from_secs(3600);
/// How long QEMU may take to load the last of the state after the source completed.
const ARRIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Receives migrating VMs into a [`VmManager`].
#[derive(Debug)]
pub struct Destination {
    manager: VmManager,
    receiver: Weak<Receiver>,
    runtime: tokio::runtime::Handle,
}

impl Destination {
    /// A handler for `receiver` (held weakly: the receiver holds the handler).
    pub fn new(
        manager: VmManager,
        receiver: &Arc<Receiver>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            manager,
            receiver: Arc::downgrade(receiver),
            runtime,
        }
    }

    /// Prepares the VM and its stream; returns what must be undone on failure.
    fn prepare(
        &self,
        spec: VmSpec,
        stream: &str,
        (mode, accel): (MigrationMode, crate::vm::accel::Accel),
        peer: String,
    ) -> Result<Arc<crate::vm::process::QemuProcess>, String> {
        let receiver = self.receiver()?;
        let name = spec.name.clone();
        let report = MigrationReport::new(Direction::Incoming, peer, mode, String::new());
        let incoming = self
            .runtime
            .block_on(self.manager.prepare_incoming(spec, report, accel))
            .map_err(|e| crate::error_chain(&e))?;
        self.connect_stream(&name, &incoming, stream, &receiver)
    }

    /// Cold migration with a disk (see [`super::disk`]): reserves the VM, answers
    /// `MigrateDiskReady`, waits for the disk's file transfer and `MigrateDiskSent`, then
    /// starts the QEMU with the local copy. Any failure after the reservation removes the
    /// VM with its directory, and so the disk.
    fn prepare_with_disk(
        &self,
        mut spec: VmSpec,
        (stream, offer): (&str, &DiskOffer),
        (mode, accel): (MigrationMode, crate::vm::accel::Accel),
        peer: String,
        (reader, writer): (&mut FrameReader<TcpStream>, &mut FrameWriter<TcpStream>),
    ) -> Result<Arc<crate::vm::process::QemuProcess>, String> {
        if mode != MigrationMode::Cold {
            return Err(format!(
                "a {} migration cannot bring a disk; only cold migration moves disks",
                mode.as_str()
            ));
        }
        offer.check(&spec.name)?;
        let receiver = self.receiver()?;
        let name = spec.name.clone();
        let dir = self.manager.vm_dir(&name);
        spec.disk = Some(offer.target(&dir));
        let report = MigrationReport::new(Direction::Incoming, peer, mode, String::new());
        self.runtime
            .block_on(self.manager.reserve_incoming(spec, report, accel))
            .map_err(|e| crate::error_chain(&e))?;
        let chain = |e: ProtocolError| crate::error_chain(&e);
        let outcome = (|| {
            let expected = ExpectedDisk::register(&receiver, offer, &dir)?;
            messages::send(writer, &Control::MigrateDiskReady).map_err(chain)?;
            reader
                .get_ref()
                .set_read_timeout(Some(COMMIT_WAIT))
                .map_err(|e| chain(ProtocolError::Io(e)))?;
            tracing::info!(vm = %name, file = %offer.file, bytes = offer.size, "Waiting for the disk");
            match messages::recv(reader) {
                Ok(Control::MigrateDiskSent) => expected.arrived(offer.size)?,
                Ok(Control::Abort { reason }) => {
                    return Err(format!("the source gave up: {reason}"));
                }
                Ok(other) => {
                    return Err(format!(
                        "the source sent {} instead of migrate_disk_sent",
                        other.kind()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "lost the source agent during the disk copy: {}",
                        chain(e)
                    ));
                }
            }
            drop(expected);
            let incoming = self
                .runtime
                .block_on(self.manager.launch_incoming(&name))
                .map_err(|e| crate::error_chain(&e))?;
            self.connect_stream(&name, &incoming, stream, &receiver)
        })();
        if let Err(reason) = &outcome {
            self.runtime
                .block_on(self.manager.discard_incoming(&name, reason));
        }
        outcome
    }

    fn receiver(&self) -> Result<Arc<Receiver>, String> {
        self.receiver
            .upgrade()
            .ok_or_else(|| "The receiver is shutting down".to_owned())
    }

    /// Routes the migration stream into the waiting QEMU's incoming socket.
    fn connect_stream(
        &self,
        name: &str,
        incoming: &IncomingVm,
        stream: &str,
        receiver: &Receiver,
    ) -> Result<Arc<crate::vm::process::QemuProcess>, String> {
        match UnixStream::connect(&incoming.socket) {
            Ok(socket) => {
                receiver.expect_stream(stream, Box::new(socket));
                Ok(Arc::clone(&incoming.process))
            }
            Err(e) => {
                let reason = format!(
                    "Cannot connect to QEMU's incoming socket {}: {e}",
                    incoming.socket.display()
                );
                self.runtime
                    .block_on(self.manager.discard_incoming(name, &reason));
                Err(reason)
            }
        }
    }
}

impl ControlHandler for Destination {
    fn handle(
        &self,
        first: Control,
        reader: &mut FrameReader<TcpStream>,
        writer: &mut FrameWriter<TcpStream>,
    ) -> Result<(), AmstError> {
        let Control::MigratePrepare {
            vm,
            stream,
            mode,
            resume,
            accel,
            disk,
        } = first
        else {
            return Err(ProtocolError::Unexpected {
                expected: "offer or migrate_prepare",
                got: first.kind().into(),
            }
            .into());
        };
        let name = vm.name.clone();
        let peer = reader
            .get_ref()
            .peer_addr()
            .map_or_else(|_| "unknown".into(), |a| a.to_string());
        tracing::info!(vm = %name, %peer, mode = mode.as_str(), "Incoming migration requested");
        let prepared = match &disk {
            Some(offer) => {
                self.prepare_with_disk(vm, (&stream, offer), (mode, accel), peer, (reader, writer))
            }
            None => self.prepare(vm, &stream, (mode, accel), peer),
        };
        let process = match prepared {
            Ok(process) => process,
            Err(reason) => {
                messages::send(
                    writer,
                    &Control::Abort {
                        reason: reason.clone(),
                    },
                )?;
                return Err(AmstError::Aborted(reason));
            }
        };
        let rollback = |reason: &str| {
            if let Some(receiver) = self.receiver.upgrade() {
                receiver.forget_stream(&stream);
            }
            self.runtime
                .block_on(self.manager.discard_incoming(&name, reason));
        };
        let outcome = (|| {
            messages::send(writer, &Control::MigrateReady)?;
            let _guard = QemuWatch::start(Arc::clone(&process), reader.get_ref())?;
            reader
                .get_ref()
                .set_read_timeout(Some(COMMIT_WAIT))
                .map_err(ProtocolError::Io)?;
            messages::recv(reader).map_err(AmstError::from)
        })();
        match outcome {
            Ok(Control::MigrateCommit) => {
                let arrived = self.runtime.block_on(self.manager.complete_incoming(
                    &name,
                    resume,
                    ARRIVE_TIMEOUT,
                ));
                match arrived {
                    Ok(arrived) => {
                        messages::send(
                            writer,
                            &Control::MigrateDone {
                                status: arrived.status,
                                resumed_at_us: arrived.resumed_at_us,
                            },
                        )?;
                        Ok(())
                    }
                    Err(err) => {
                        let reason = crate::error_chain(&err);
                        rollback(&reason);
                        messages::send(
                            writer,
                            &Control::Abort {
                                reason: reason.clone(),
                            },
                        )?;
                        Err(AmstError::Aborted(reason))
                    }
                }
            }
            Ok(Control::Abort { reason }) => {
                rollback(&format!("the source gave up: {reason}"));
                Err(AmstError::Aborted(reason))
            }
            Ok(other) => {
                rollback(&format!("the source sent {}", other.kind()));
                Err(ProtocolError::Unexpected {
                    expected: "migrate_commit",
                    got: other.kind().into(),
                }
                .into())
            }
            Err(err) => {
                let reason = if process.is_alive() {
                    format!("lost the source agent: {}", crate::error_chain(&err))
                } else {
                    "QEMU exited while receiving the migration".to_owned()
                };
                rollback(&reason);
                Err(err)
            }
        }
    }
}

/// While alive, watches the incoming QEMU and closes the control connection when it
/// dies, so the conversation (and the source) learns at once.
struct QemuWatch {
    done: Arc<AtomicBool>,
}

impl QemuWatch {
    fn start(
        process: Arc<crate::vm::process::QemuProcess>,
        control: &TcpStream,
    ) -> Result<Self, AmstError> {
        let control = control.try_clone().map_err(ProtocolError::Io)?;
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::Builder::new()
            .name("dwcp-mig-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if !process.is_alive() {
                        let _ = control.shutdown(Shutdown::Both);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .map_err(ProtocolError::Io)?;
        Ok(Self { done })
    }
}

impl Drop for QemuWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
