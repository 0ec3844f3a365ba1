//! The destination side of a migration in the VM manager: a record in Migrating whose
//! QEMU waits with `-incoming`, then either the arrived VM (Running) or nothing at all
//! (QEMU killed, record and directory removed).

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::{
    manager::{Slot, Vm, VmError, VmManager, lock},
    process::QemuProcess,
    runtime,
    spec::VmSpec,
    state::{Action, VmState},
    store::{VmRecord, now_ms},
};
use crate::migrate::{MigrationReport, Phase, channel::Arrived};

/// How long the `RESUME` event may trail a `running` status (it is sent as QEMU resumes).
const RESUME_EVENT_WAIT: Duration = Duration::from_secs(1);

/// When QEMU last resumed the guest, waiting briefly for the event to arrive.
async fn resumed_at(qmp: &super::qmp::QmpClient) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + RESUME_EVENT_WAIT;
    loop {
        if let Some(at) = qmp.last_event("RESUME").and_then(|e| e.timestamp_us) {
            return Some(at);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A VM waiting here for its migration stream.
#[derive(Clone, Debug)]
pub struct IncomingVm {
    /// QEMU's `-incoming` socket: the stream goes there.
    pub socket: PathBuf,
    /// Its QEMU.
    pub process: Arc<QemuProcess>,
}

impl VmManager {
    /// Defines `spec` here in state Migrating and starts its QEMU waiting for an incoming
    /// migration. A name already taken, an invalid spec or a QEMU that does not come up
    /// is refused and leaves nothing behind.
    pub async fn prepare_incoming(
        &self,
        spec: VmSpec,
        report: MigrationReport,
        accel: super::accel::Accel,
    ) -> Result<IncomingVm, VmError> {
        spec.validate()?;
        let name = spec.name.clone();
        self.reserve_incoming(spec, report, accel).await?;
        self.launch_incoming(&name).await
    }

    /// Defines `spec` here in state Migrating without starting QEMU: a cold migration's
    /// disk arrives first (into [`VmManager::vm_dir`]), then
    /// [`VmManager::launch_incoming`]. The disk file need not exist yet. A name already
    /// taken or an invalid spec is refused and leaves nothing behind; afterwards
    /// [`VmManager::discard_incoming`] removes the VM with its directory.
    pub async fn reserve_incoming(
        &self,
        spec: VmSpec,
        report: MigrationReport,
        accel: super::accel::Accel,
    ) -> Result<(), VmError> {
        spec.validate_awaiting_disk()?;
        let name = spec.name.clone();
        let mut record = VmRecord::new(spec);
        record.state = record.state.apply(&Action::ReceiveMigration)?;
        record.migration = Some(report);
        // The migrated state only loads under the source's accelerator: no probe here.
        record.accel = Some(accel);
        record.accel_reason = Some("the migration source's accelerator".into());
        self.forget_migrated_away(&name).await;
        let mut vms = lock(&self.inner.vms);
        if vms.contains_key(&name) {
            return Err(VmError::Exists(name));
        }
        self.inner.store.save(&record)?;
        vms.insert(
            name,
            Arc::new(Slot::new(Vm {
                record,
                runtime: None,
            })),
        );
        Ok(())
    }

    /// Starts the QEMU of a VM reserved by [`VmManager::reserve_incoming`], waiting with
    /// `-incoming`. Its spec is checked in full first (the disk must be in place now);
    /// a refused spec or a QEMU that does not come up removes the VM.
    pub async fn launch_incoming(&self, name: &str) -> Result<IncomingVm, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let paths = self.inner.store.paths(name);
        let socket = paths.dir.join("incoming.sock");
        let accel = vm.record.accel.unwrap_or(super::accel::Accel::Tcg);
        let launched = match vm.record.spec.validate() {
            Ok(()) => {
                runtime::launch_with(
                    &self.inner.config.qemu,
                    &vm.record.spec,
                    accel,
                    &paths,
                    self.inner.config.start_timeout,
                    Some(&socket),
                )
                .await
            }
            Err(err) => Err(err.to_string()),
        };
        let (process, qmp) = match launched {
            Ok(parts) => parts,
            Err(reason) => {
                drop(vm);
                self.remove_incoming(name, &slot).await;
                return Err(VmError::StartFailed {
                    name: name.to_owned(),
                    reason,
                });
            }
        };
        vm.record.pid = Some(process.pid);
        vm.runtime = Some(self.watch(&slot, Arc::clone(&process), qmp));
        self.save(&slot, &mut vm)?;
        tracing::info!(vm = %name, pid = process.pid, "Waiting for an incoming migration");
        Ok(IncomingVm { socket, process })
    }

    /// The directory of VM `name` under the state directory (its disk goes there).
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.inner.store.paths(name).dir
    }

    /// The source completed: waits (up to `timeout`) until QEMU here has loaded the
    /// whole state, continues the guest if `resume` and it is paused, and marks the VM
    /// Running. Returns QEMU's run state and when the guest resumed (QEMU's `RESUME`
    /// event: QEMU resumes on its own once the state is in when the source was running).
    pub async fn complete_incoming(
        &self,
        name: &str,
        resume: bool,
        timeout: Duration,
    ) -> Result<Arrived, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let qmp = self.qmp_of(&vm, name, "complete the incoming migration")?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = String::new();
        while tokio::time::Instant::now() < deadline {
            status = match qmp.query_status().await {
                Ok(status) => status,
                Err(source) => {
                    return Err(self.qmp_failed(&slot, &mut vm, name, "query-status", source));
                }
            };
            if status != "inmigrate" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if status == "inmigrate" {
            return Err(VmError::StartFailed {
                name: name.to_owned(),
                reason: format!("QEMU still loads the incoming state after {timeout:?}"),
            });
        }
        if resume && status == "paused" {
            if let Err(source) = qmp.cont().await {
                return Err(self.qmp_failed(&slot, &mut vm, name, "cont", source));
            }
            status = "running".into();
        }
        if status != "running" && status != "paused" {
            return Err(VmError::StartFailed {
                name: name.to_owned(),
                reason: format!("QEMU reports {status:?} after the incoming migration"),
            });
        }
        vm.record.state = vm.record.state.apply(&Action::ArriveMigration)?;
        if status == "paused" {
            vm.record.state = vm.record.state.apply(&Action::Pause)?;
        }
        vm.record.started_at_ms = Some(now_ms());
        if let Some(report) = vm.record.migration.as_mut() {
            report.finish(Phase::Completed, None);
        }
        self.save(&slot, &mut vm)?;
        let resumed_at_us = if status == "running" {
            resumed_at(&qmp).await
        } else {
            None
        };
        tracing::info!(vm = %name, %status, "Incoming migration completed");
        Ok(Arrived {
            status,
            resumed_at_us,
        })
    }

    /// Rolls an incoming migration back: kills its QEMU and removes the VM (record and
    /// directory), whatever state it reached. Only for VMs made by
    /// [`VmManager::prepare_incoming`] that have not completed.
    pub async fn discard_incoming(&self, name: &str, reason: &str) {
        let Ok(slot) = self.slot(name) else {
            return;
        };
        tracing::warn!(vm = %name, %reason, "Discarding the incoming migration");
        self.remove_incoming(name, &slot).await;
    }

    /// A VM that once left this host (Stopped, migrated) may come back: its old record
    /// and directory make way. Any other VM of that name stays and the name is refused.
    async fn forget_migrated_away(&self, name: &str) {
        let Ok(slot) = self.slot(name) else {
            return;
        };
        let vm = slot.vm.lock().await;
        if vm.record.state != VmState::Stopped
            || vm.record.stopped_by != Some(super::store::StopMethod::Migrated)
        {
            return;
        }
        drop(vm);
        tracing::info!(vm = %name, "Replacing the record of a VM that migrated away earlier");
        self.remove_incoming(name, &slot).await;
    }

    async fn remove_incoming(&self, name: &str, slot: &Arc<Slot>) {
        let mut vm = slot.vm.lock().await;
        if vm.record.state == VmState::Deleted {
            return;
        }
        if let Some(runtime) = vm.runtime.take() {
            runtime.process.kill();
            let _ = runtime.process.wait_exit(Duration::from_secs(5)).await;
        }
        if let Err(err) = self.inner.store.remove(name) {
            tracing::error!(vm = %name, error = %crate::error_chain(&err), "Cannot remove the discarded VM's directory");
        }
        vm.record.state = VmState::Deleted;
        slot.set_snapshot(&vm.record);
        let mut vms = lock(&self.inner.vms);
        if vms.get(name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            vms.remove(name);
        }
        drop(vms);
        self.inner.metrics.vm_state_remove(name);
        self.publish_metrics();
    }
}
