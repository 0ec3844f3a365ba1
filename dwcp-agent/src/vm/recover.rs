//! Agent start-up: load every VM record and reconcile it with the QEMU processes that
//! survived the previous agent.
//!
//! A record that says Running, Paused or Migrating is re-attached when its pidfile names
//! a live QEMU of this VM whose QMP answers; its state is then what QEMU reports. Else it
//! is marked Failed with the reason. A record without a process whose QEMU still runs
//! (the agent stopped in the middle of a start or stop) has that orphan QEMU killed. A
//! VM whose incoming migration had not completed is removed with its QEMU.

use std::{sync::Arc, time::Duration};

use super::{
    manager::{Vm, VmError, VmManager},
    process::QemuProcess,
    qmp::QmpClient,
    state::{Action, VmState},
    store::{VmPaths, VmRecord},
};

/// How long a surviving QEMU gets to answer QMP.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads and reconciles every record into `manager`.
pub async fn load(manager: &VmManager) -> Result<(), VmError> {
    let store = &manager.inner.store;
    let (records, errors) = store.load_all()?;
    for error in errors {
        tracing::error!(error = %crate::error_chain(&error), "Skipping an unreadable VM record");
    }
    for mut record in records {
        let paths = store.paths(&record.spec.name);
        let attached = attach(&paths).await;
        if is_unfinished_incoming(&record) {
            // Its source gave up when this agent went away (the control connection
            // closed): a half-received VM is never resumed.
            if let Ok((process, _, _)) = attached {
                process.kill();
            }
            tracing::warn!(vm = %record.spec.name, "Removing a VM whose incoming migration never completed");
            store.remove(&record.spec.name)?;
            continue;
        }
        let runtime_parts = if record.state.has_process() {
            match attached {
                Ok((process, qmp, status)) => match qemu_state(&status) {
                    Some(state) => {
                        record.state = state;
                        record.pid = Some(process.pid);
                        tracing::info!(vm = %record.spec.name, pid = process.pid, %status, "Re-attached to QEMU");
                        Some((process, qmp))
                    }
                    None => {
                        process.kill();
                        mark_failed(
                            &mut record,
                            format!(
                                "After an agent restart QEMU reported status {status:?}; killed it"
                            ),
                        );
                        None
                    }
                },
                Err(why) => {
                    mark_failed(
                        &mut record,
                        format!("QEMU is gone after an agent restart: {why}"),
                    );
                    None
                }
            }
        } else {
            if let Ok((process, _, _)) = attached {
                tracing::warn!(vm = %record.spec.name, pid = process.pid, state = record.state.name(), "Killing an orphan QEMU");
                process.kill();
            }
            None
        };
        store.save(&record)?;
        manager.insert(Vm {
            record,
            runtime: None,
        });
        if let Some((process, qmp)) = runtime_parts {
            manager.adopt(&paths, process, qmp).await;
        }
    }
    Ok(())
}

impl VmManager {
    /// Hands a re-attached QEMU to its VM, with a watcher.
    async fn adopt(&self, paths: &VmPaths, process: Arc<QemuProcess>, qmp: Arc<QmpClient>) {
        let name = paths
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(slot) = self.slot(&name) else {
            return;
        };
        let runtime = self.watch(&slot, process, qmp);
        slot.vm.lock().await.runtime = Some(runtime);
    }
}

/// A VM this host was receiving when the previous agent stopped.
fn is_unfinished_incoming(record: &VmRecord) -> bool {
    record.state == VmState::Migrating
        && record
            .migration
            .as_ref()
            .is_some_and(|m| m.direction == crate::migrate::Direction::Incoming)
}

/// QEMU's run status as our state, if it is one we can continue from.
fn qemu_state(status: &str) -> Option<VmState> {
    match status {
        "running" => Some(VmState::Running),
        "paused" => Some(VmState::Paused),
        _ => None,
    }
}

fn mark_failed(record: &mut VmRecord, reason: String) {
    tracing::warn!(vm = %record.spec.name, %reason, "VM failed");
    if let Ok(state) = record.state.apply(&Action::Fail(reason.clone())) {
        record.state = state;
    }
    record.pid = None;
    record.last_error = Some(reason);
}

/// The live QEMU of the VM at `paths`, its QMP session and its run status.
async fn attach(paths: &VmPaths) -> Result<(Arc<QemuProcess>, Arc<QmpClient>, String), String> {
    let process = QemuProcess::attach(paths).map_err(|e| e.to_string())?;
    let qmp = QmpClient::connect(&paths.qmp, ATTACH_TIMEOUT)
        .await
        .map_err(|e| {
            format!(
                "pid {} does not answer QMP: {}",
                process.pid,
                crate::error_chain(&e)
            )
        })?;
    let status = qmp
        .query_status()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    Ok((Arc::new(process), Arc::new(qmp), status))
}
