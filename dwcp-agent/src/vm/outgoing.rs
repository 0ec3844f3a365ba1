//! The source side of a migration in the VM manager: taking a running VM into
//! Migrating, and ending that either as migrated away (Stopped, QEMU quit) or rolled back
//! (Running again, QEMU continued).
//!
//! The operation lock is held only for these steps, not during the transfer: meanwhile
//! every other action is refused because the state is Migrating, and status reads show
//! the progress (see [`VmManager::migration`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::{
    manager::{VmError, VmManager, lock},
    process::QemuProcess,
    qmp::QmpClient,
    spec::VmSpec,
    state::{Action, TransitionError, VmState},
    store::StopMethod,
};
use crate::migrate::MigrationReport;

/// A VM this host is migrating away: what the source driver needs.
#[derive(Clone, Debug)]
pub struct OutgoingVm {
    /// Its definition (sent to the destination).
    pub spec: VmSpec,
    /// Its QEMU's monitor.
    pub qmp: Arc<QmpClient>,
    /// Its QEMU.
    pub process: Arc<QemuProcess>,
    /// Its directory (the migration socket goes there).
    pub dir: PathBuf,
    /// The accelerator its QEMU runs under (the destination must use the same).
    pub accel: super::accel::Accel,
}

impl VmManager {
    /// Puts a Running VM into Migrating; any other state is refused.
    pub async fn begin_migration(
        &self,
        name: &str,
        report: MigrationReport,
    ) -> Result<OutgoingVm, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        if vm.record.state != VmState::Running {
            return Err(TransitionError {
                state: vm.record.state.name(),
                action: Action::BeginMigration.name(),
            }
            .into());
        }
        let next = vm.record.state.apply(&Action::BeginMigration)?;
        let qmp = self.qmp_of(&vm, name, "migrate")?;
        let Some(process) = vm.runtime.as_ref().map(|r| Arc::clone(&r.process)) else {
            return Err(self.qmp_failed(
                &slot,
                &mut vm,
                name,
                "migrate",
                super::manager::disconnected(),
            ));
        };
        vm.record.state = next;
        self.save(&slot, &mut vm)?;
        lock(&self.inner.migrations).insert(name.to_owned(), report);
        Ok(OutgoingVm {
            spec: vm.record.spec.clone(),
            qmp,
            process,
            dir: self.inner.store.paths(name).dir,
            accel: vm.record.accel.unwrap_or(super::accel::Accel::Tcg),
        })
    }

    /// The agent's metrics (migration progress is published there).
    pub fn metrics(&self) -> &crate::metrics::AgentMetrics {
        &self.inner.metrics
    }

    /// The pre-shared key file for reaching destination agents, if configured.
    pub fn migration_psk_file(&self) -> Option<PathBuf> {
        self.inner.config.migration_psk_file.clone()
    }

    /// The migration of `name` in progress, else the last one recorded.
    pub fn migration(&self, name: &str) -> Result<Option<MigrationReport>, VmError> {
        if let Some(report) = lock(&self.inner.migrations).get(name) {
            return Ok(Some(report.clone()));
        }
        Ok(self.status(name)?.record.migration)
    }

    /// Replaces the in-progress report of `name` (progress updates).
    pub fn update_migration(&self, name: &str, report: &MigrationReport) {
        lock(&self.inner.migrations).insert(name.to_owned(), report.clone());
    }

    /// The destination took the VM over: QEMU here quits, the VM is Stopped with
    /// [`StopMethod::Migrated`] and the report in its record. The record is kept (not
    /// removed) so the operator sees where the VM went; `vm delete` removes it.
    pub async fn finish_migration(
        &self,
        name: &str,
        report: MigrationReport,
    ) -> Result<(), VmError> {
        let slot = self.slot(name)?;
        let mut vm = slot.vm.lock().await;
        if let Some(runtime) = vm.runtime.take()
            && (runtime.qmp.quit().await.is_err()
                || !runtime.process.wait_exit(Duration::from_secs(5)).await)
        {
            runtime.process.kill();
        }
        if let Ok(next) = vm.record.state.apply(&Action::FinishMigration) {
            vm.record.state = next;
            vm.record.stopped_by = Some(StopMethod::Migrated);
        }
        vm.record.pid = None;
        vm.record.migration = Some(report);
        let saved = self.save(&slot, &mut vm);
        lock(&self.inner.migrations).remove(name);
        tracing::info!(vm = %name, "VM migrated away");
        saved
    }

    /// The migration failed: QEMU here continues (it may have paused the guest for the
    /// final sync), the VM is Running again with the reason as its last error. A VM whose
    /// QEMU died meanwhile stays Failed.
    pub async fn abort_migration(
        &self,
        name: &str,
        report: MigrationReport,
    ) -> Result<(), VmError> {
        let slot = self.slot(name)?;
        let mut vm = slot.vm.lock().await;
        // The in-progress report stays visible until the record holding the final one is
        // saved: readers see the snapshot, which only a save updates, so removing it first
        // answered "never migrated" while the guest was being resumed.
        let reason = report.error.clone();
        vm.record.migration = Some(report);
        if vm.record.state == VmState::Migrating {
            let resumed = match vm.runtime.as_ref().map(|r| Arc::clone(&r.qmp)) {
                Some(qmp) => resume(&qmp).await,
                None => Err(super::manager::disconnected()),
            };
            if let Err(source) = resumed {
                let err = self.qmp_failed(
                    &slot,
                    &mut vm,
                    name,
                    "resume after a failed migration",
                    source,
                );
                lock(&self.inner.migrations).remove(name);
                tracing::error!(vm = %name, error = %crate::error_chain(&err), "Rollback failed");
                return Err(err);
            }
            vm.record.state = vm
                .record
                .state
                .apply(&Action::AbortMigration)
                .inspect_err(|_| {
                    lock(&self.inner.migrations).remove(name);
                })?;
        }
        vm.record.last_error = reason;
        let saved = self.save(&slot, &mut vm);
        lock(&self.inner.migrations).remove(name);
        saved?;
        tracing::warn!(vm = %name, error = ?vm.record.last_error, "Migration rolled back");
        Ok(())
    }
}

/// Continues the guest if QEMU holds it paused (after a failed or cancelled migration
/// QEMU reports `paused`, `postmigrate` or `finish-migrate`).
async fn resume(qmp: &QmpClient) -> Result<(), super::qmp::QmpError> {
    for _ in 0..50 {
        match qmp.query_status().await?.as_str() {
            "running" => return Ok(()),
            // The migration thread is still finishing: wait for it to let go.
            "finish-migrate" => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return qmp.cont().await,
        }
    }
    qmp.cont().await
}
