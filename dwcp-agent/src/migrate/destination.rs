//! The destination agent's side: a [`ControlHandler`] on the AMST receiver that takes a
//! `MigratePrepare` conversation from a source agent.
//!
//! The receiver runs it on its connection thread (blocking); VM operations are async and
//! run on the agent's tokio runtime through a [`tokio::runtime::Handle`]. The VM is held
//! here only while the conversation lasts: a commit makes it this host's VM, anything
//! else (an `Abort`, the connection closing, the local QEMU dying, a failed commit)
//! kills the QEMU and removes the record, so no half-started VM stays behind.

use std::{
    net::{Shutdown, TcpStream},
    os::unix::net::UnixStream,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{Direction, MigrationMode, MigrationReport};
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
    vm::{VmManager, VmSpec},
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
        mode: MigrationMode,
        peer: String,
        accel: crate::vm::accel::Accel,
    ) -> Result<Arc<crate::vm::process::QemuProcess>, String> {
        let receiver = self
            .receiver
            .upgrade()
            .ok_or_else(|| "The receiver is shutting down".to_owned())?;
        let name = spec.name.clone();
        let report = MigrationReport::new(Direction::Incoming, peer, mode, String::new());
        let incoming = self
            .runtime
            .block_on(self.manager.prepare_incoming(spec, report, accel))
            .map_err(|e| crate::error_chain(&e))?;
        match UnixStream::connect(&incoming.socket) {
            Ok(socket) => {
                receiver.expect_stream(stream, Box::new(socket));
                Ok(incoming.process)
            }
            Err(e) => {
                let reason = format!(
                    "Cannot connect to QEMU's incoming socket {}: {e}",
                    incoming.socket.display()
                );
                self.runtime
                    .block_on(self.manager.discard_incoming(&name, &reason));
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
        let process = match self.prepare(vm, &stream, mode, peer, accel) {
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
