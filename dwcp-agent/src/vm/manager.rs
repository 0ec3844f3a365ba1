//! The VM operations: create, start, pause, resume, stop, delete, status, list.
//!
//! Each VM has an async lock held for the whole of an operation, so concurrent requests
//! on one VM run one after the other and each sees the state the previous one left.
//! Reads (status, list) never wait for that lock: they read a snapshot that is replaced
//! whenever the record is saved. A watcher task per running QEMU marks the VM Failed
//! (with the exit status and last serial lines) when QEMU dies, or Stopped when the
//! guest powered itself off.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    accel::AccelDetector,
    process::tail_lines,
    qmp::QmpError,
    runtime::{self, Runtime},
    spec::{SpecError, VmSpec},
    state::{Action, TransitionError, VmState},
    store::{StopMethod, Store, StoreError, VmRecord, now_ms},
};
use crate::metrics::{AgentMetrics, StateLabels, VmStateLabels};

/// Errors of VM operations; the API maps each kind to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No VM of that name.
    #[error("No VM named {0:?}")]
    NotFound(String),
    /// The name is taken.
    #[error("A VM named {0:?} already exists")]
    Exists(String),
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The lifecycle does not allow the action now.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The record could not be written.
    #[error("Cannot save the VM record")]
    Store(#[from] StoreError),
    /// QEMU could not be started; the VM is now Failed.
    #[error("VM {name} failed to start: {reason}")]
    StartFailed {
        /// VM.
        name: String,
        /// Why.
        reason: String,
    },
    /// QEMU refused or did not answer a command.
    #[error("QEMU did not carry out {action} on VM {name}")]
    Qmp {
        /// VM.
        name: String,
        /// Action attempted.
        action: &'static str,
        /// QMP error.
        #[source]
        source: QmpError,
    },
}

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Root of the agent's state (`<state_dir>/vms/...`).
    pub state_dir: PathBuf,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// How long a start may take until QMP answers.
    pub start_timeout: Duration,
    /// How long the guest gets to power off after the ACPI button before `quit`.
    pub stop_timeout: Duration,
    /// Pre-shared key file used to reach destination agents (`transport.psk_file`).
    pub migration_psk_file: Option<PathBuf>,
}

impl ManagerConfig {
    /// Defaults for everything but the state directory.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            qemu: PathBuf::from(super::process::QEMU_BINARY),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(60),
            migration_psk_file: None,
        }
    }
}

/// A VM as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VmStatus {
    /// Everything recorded.
    #[serde(flatten)]
    pub record: VmRecord,
    /// The guest's serial console log.
    pub serial_log: PathBuf,
    /// Its last lines.
    pub serial_tail: Vec<String>,
}

/// Serial lines shown in a status.
const STATUS_SERIAL_LINES: usize = 5;

/// One VM: the operation lock around its live parts, and the snapshot readers see.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) vm: tokio::sync::Mutex<Vm>,
    snapshot: Mutex<VmRecord>,
}

impl Slot {
    /// A slot holding `vm`, its snapshot taken from its record.
    pub(super) fn new(vm: Vm) -> Self {
        Self {
            snapshot: Mutex::new(vm.record.clone()),
            vm: tokio::sync::Mutex::new(vm),
        }
    }

    /// Replaces the snapshot readers see (without saving).
    pub(super) fn set_snapshot(&self, record: &VmRecord) {
        *lock(&self.snapshot) = record.clone();
    }
}

/// What the operation lock guards.
#[derive(Debug)]
pub(super) struct Vm {
    pub(super) record: VmRecord,
    pub(super) runtime: Option<Runtime>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: ManagerConfig,
    pub(super) store: Store,
    pub(super) accel: AccelDetector,
    pub(super) vms: Mutex<BTreeMap<String, Arc<Slot>>>,
    pub(super) metrics: Arc<AgentMetrics>,
    /// Migrations in progress, by VM (the final report is kept in the record).
    pub(super) migrations: Mutex<BTreeMap<String, crate::migrate::MigrationReport>>,
}

/// The VMs of this host. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct VmManager {
    pub(super) inner: Arc<Inner>,
}

impl VmManager {
    /// Opens the store under `config.state_dir`, loads every record and re-attaches to
    /// the QEMU processes that still run (see [`super::recover`]).
    pub async fn open(config: ManagerConfig, metrics: Arc<AgentMetrics>) -> Result<Self, VmError> {
        let store = Store::open(&config.state_dir)?;
        let accel = AccelDetector::new(config.qemu.clone(), config.state_dir.join("probe"));
        let manager = Self {
            inner: Arc::new(Inner {
                config,
                store,
                accel,
                vms: Mutex::default(),
                metrics,
                migrations: Mutex::default(),
            }),
        };
        super::recover::load(&manager).await?;
        manager.publish_metrics();
        Ok(manager)
    }

    /// Registers a loaded record (used while recovering).
    pub(super) fn insert(&self, vm: Vm) {
        let name = vm.record.spec.name.clone();
        let slot = Arc::new(Slot {
            snapshot: Mutex::new(vm.record.clone()),
            vm: tokio::sync::Mutex::new(vm),
        });
        lock(&self.inner.vms).insert(name, slot);
    }

    /// Defines a new VM (state Creating).
    pub async fn create(&self, spec: VmSpec) -> Result<VmStatus, VmError> {
        spec.validate()?;
        let record = VmRecord::new(spec);
        let name = record.spec.name.clone();
        {
            let mut vms = lock(&self.inner.vms);
            if vms.contains_key(&name) {
                return Err(VmError::Exists(name));
            }
            self.inner.store.save(&record)?;
            vms.insert(
                name.clone(),
                Arc::new(Slot {
                    snapshot: Mutex::new(record.clone()),
                    vm: tokio::sync::Mutex::new(Vm {
                        record,
                        runtime: None,
                    }),
                }),
            );
        }
        tracing::info!(vm = %name, "VM created");
        self.publish_metrics();
        self.status(&name)
    }

    /// Launches QEMU; returns once the guest runs and QMP answers.
    pub async fn start(&self, name: &str) -> Result<VmStatus, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let next = vm.record.state.apply(&Action::Start)?;
        let begun = Instant::now();
        let choice = self
            .inner
            .accel
            .choose(vm.record.spec.kernel.as_deref())
            .await;
        let paths = self.inner.store.paths(name);
        vm.record.accel = Some(choice.accel);
        vm.record.accel_reason = Some(choice.reason);
        let launched = runtime::launch(
            &self.inner.config.qemu,
            &vm.record.spec,
            choice.accel,
            &paths,
            self.inner.config.start_timeout,
        )
        .await;
        let (process, qmp) = match launched {
            Ok(parts) => parts,
            Err(reason) => {
                self.fail(&slot, &mut vm, reason.clone())?;
                return Err(VmError::StartFailed {
                    name: name.to_owned(),
                    reason,
                });
            }
        };
        let took = begun.elapsed().as_secs_f64();
        self.inner.metrics.vm_start_seconds.observe(took);
        vm.record.state = next;
        vm.record.pid = Some(process.pid);
        vm.record.started_at_ms = Some(now_ms());
        vm.record.start_seconds = Some(took);
        vm.record.stopped_by = None;
        vm.runtime = Some(self.watch(&slot, process, qmp));
        self.save(&slot, &mut vm)?;
        tracing::info!(vm = %name, seconds = took, accel = ?vm.record.accel, "VM running");
        drop(vm);
        self.status(name)
    }

    /// Stops the vCPUs (QMP `stop`).
    pub async fn pause(&self, name: &str) -> Result<VmStatus, VmError> {
        self.qmp_transition(name, Action::Pause, "pause").await
    }

    /// Continues the vCPUs (QMP `cont`).
    pub async fn resume(&self, name: &str) -> Result<VmStatus, VmError> {
        self.qmp_transition(name, Action::Resume, "resume").await
    }

    async fn qmp_transition(
        &self,
        name: &str,
        action: Action,
        verb: &'static str,
    ) -> Result<VmStatus, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let next = vm.record.state.apply(&action)?;
        let qmp = self.qmp_of(&vm, name, verb)?;
        let done = match action {
            Action::Pause => qmp.stop().await,
            _ => qmp.cont().await,
        };
        if let Err(source) = done {
            return Err(self.qmp_failed(&slot, &mut vm, name, verb, source));
        }
        vm.record.state = next;
        self.save(&slot, &mut vm)?;
        drop(vm);
        self.status(name)
    }

    /// Presses the ACPI power button (again every 5 s) and waits for the guest to power
    /// off; after `stop_timeout`, QMP `quit`; if QEMU still runs 5 s later, SIGKILL.
    pub async fn stop(&self, name: &str) -> Result<VmStatus, VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let next = vm.record.state.apply(&Action::Stop)?;
        let qmp = self.qmp_of(&vm, name, "stop")?;
        let process = match &vm.runtime {
            Some(runtime) => Arc::clone(&runtime.process),
            None => return Err(self.qmp_failed(&slot, &mut vm, name, "stop", disconnected())),
        };
        if vm.record.state == VmState::Paused
            && let Err(source) = qmp.cont().await
        {
            return Err(self.qmp_failed(&slot, &mut vm, name, "stop", source));
        }
        let method = if press_power_button(&qmp, &process, self.inner.config.stop_timeout).await {
            StopMethod::GuestPowerOff
        } else if qmp.quit().await.is_ok() && process.wait_exit(Duration::from_secs(5)).await {
            StopMethod::QmpQuit
        } else {
            process.kill();
            let _ = process.wait_exit(Duration::from_secs(5)).await;
            StopMethod::Killed
        };
        vm.runtime = None;
        vm.record.state = next;
        vm.record.pid = None;
        vm.record.stopped_by = Some(method);
        self.save(&slot, &mut vm)?;
        tracing::info!(vm = %name, ?method, "VM stopped");
        drop(vm);
        self.status(name)
    }

    /// Removes a VM that is not running, with its directory.
    pub async fn delete(&self, name: &str) -> Result<(), VmError> {
        let slot = self.slot(name)?;
        let mut vm = self.lock_live(&slot, name).await?;
        let next = vm.record.state.apply(&Action::Delete)?;
        self.inner.store.remove(name)?;
        vm.record.state = next;
        *lock(&slot.snapshot) = vm.record.clone();
        lock(&self.inner.vms).remove(name);
        drop(vm);
        self.inner.metrics.vm_state_remove(name);
        self.publish_metrics();
        tracing::info!(vm = %name, "VM deleted");
        Ok(())
    }

    /// The VM's record and the tail of its serial console.
    pub fn status(&self, name: &str) -> Result<VmStatus, VmError> {
        let slot = self.slot(name)?;
        let record = lock(&slot.snapshot).clone();
        Ok(self.view(record))
    }

    /// Every VM, by name.
    pub fn list(&self) -> Vec<VmStatus> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.vms).values().cloned().collect();
        slots
            .iter()
            .map(|slot| self.view(lock(&slot.snapshot).clone()))
            .collect()
    }

    /// The accelerator decision of this agent process, if made.
    pub fn accel_decision(&self) -> Option<super::accel::AccelChoice> {
        self.inner.accel.decided().cloned()
    }

    fn view(&self, record: VmRecord) -> VmStatus {
        let serial_log = self.inner.store.paths(&record.spec.name).serial;
        VmStatus {
            serial_tail: tail_lines(&serial_log, STATUS_SERIAL_LINES),
            serial_log,
            record,
        }
    }

    pub(super) fn slot(&self, name: &str) -> Result<Arc<Slot>, VmError> {
        lock(&self.inner.vms)
            .get(name)
            .cloned()
            .ok_or_else(|| VmError::NotFound(name.to_owned()))
    }

    /// Takes the operation lock; a VM deleted while we waited is reported as unknown.
    pub(super) async fn lock_live<'a>(
        &self,
        slot: &'a Slot,
        name: &str,
    ) -> Result<tokio::sync::MutexGuard<'a, Vm>, VmError> {
        let vm = slot.vm.lock().await;
        if vm.record.state == VmState::Deleted {
            return Err(VmError::NotFound(name.to_owned()));
        }
        Ok(vm)
    }

    pub(super) fn qmp_of(
        &self,
        vm: &Vm,
        name: &str,
        action: &'static str,
    ) -> Result<Arc<super::qmp::QmpClient>, VmError> {
        vm.runtime
            .as_ref()
            .map(|r| Arc::clone(&r.qmp))
            .ok_or_else(|| VmError::Qmp {
                name: name.to_owned(),
                action,
                source: disconnected(),
            })
    }

    /// A QMP command failed: if QEMU is gone, the VM is Failed now; the error goes back.
    pub(super) fn qmp_failed(
        &self,
        slot: &Slot,
        vm: &mut Vm,
        name: &str,
        action: &'static str,
        source: QmpError,
    ) -> VmError {
        if matches!(source, QmpError::Disconnected { .. }) {
            let reason = match &vm.runtime {
                Some(runtime) => {
                    runtime::describe_exit(&runtime.process, &self.inner.store.paths(name))
                }
                None => "QEMU is not running".to_owned(),
            };
            if let Err(err) = self.fail(slot, vm, reason) {
                tracing::error!(vm = %name, error = %crate::error_chain(&err), "Cannot record the failure");
            }
        }
        VmError::Qmp {
            name: name.to_owned(),
            action,
            source,
        }
    }

    /// Marks the VM Failed, dropping its runtime, and saves.
    pub(super) fn fail(&self, slot: &Slot, vm: &mut Vm, reason: String) -> Result<(), VmError> {
        tracing::warn!(vm = %vm.record.spec.name, %reason, "VM failed");
        if let Some(runtime) = vm.runtime.take() {
            runtime.process.kill();
        }
        vm.record.state = vm.record.state.apply(&Action::Fail(reason.clone()))?;
        vm.record.pid = None;
        vm.record.last_error = Some(reason);
        self.save(slot, vm)
    }

    /// Writes the record, refreshes the snapshot and the metrics.
    pub(super) fn save(&self, slot: &Slot, vm: &mut Vm) -> Result<(), VmError> {
        vm.record.updated_at_ms = now_ms();
        self.inner.store.save(&vm.record)?;
        *lock(&slot.snapshot) = vm.record.clone();
        self.publish_metrics();
        Ok(())
    }

    /// Starts the task that notices QEMU's end, and returns the runtime that owns it.
    pub(super) fn watch(
        &self,
        slot: &Arc<Slot>,
        process: Arc<super::process::QemuProcess>,
        qmp: Arc<super::qmp::QmpClient>,
    ) -> Runtime {
        let manager = self.clone();
        let slot = Arc::clone(slot);
        let paths = self.inner.store.paths(&lock(&slot.snapshot).spec.name);
        let (watched, watched_qmp) = (Arc::clone(&process), Arc::clone(&qmp));
        let watcher = tokio::spawn(async move {
            let report = runtime::wait_for_exit(watched, watched_qmp, paths).await;
            manager.on_exit(&slot, report).await;
        });
        Runtime {
            process,
            qmp,
            watcher: Some(watcher),
        }
    }

    /// QEMU ended on its own: Stopped if the guest powered off, else Failed.
    async fn on_exit(&self, slot: &Slot, report: runtime::ExitReport) {
        let mut vm = slot.vm.lock().await;
        // An operation that ended QEMU itself (stop) has already dropped the runtime.
        let Some(runtime) = vm.runtime.as_mut() else {
            return;
        };
        // This task is the runtime's watcher: do not let dropping the runtime abort it.
        drop(runtime.watcher.take());
        vm.runtime = None;
        let name = vm.record.spec.name.clone();
        let saved = if report.guest_shutdown && vm.record.state.apply(&Action::Stop).is_ok() {
            tracing::info!(vm = %name, "Guest powered off");
            vm.record.state = VmState::Stopped;
            vm.record.pid = None;
            vm.record.stopped_by = Some(StopMethod::GuestPowerOff);
            self.save(slot, &mut vm)
        } else {
            self.fail(slot, &mut vm, report.reason)
        };
        if let Err(err) = saved {
            tracing::error!(vm = %name, error = %crate::error_chain(&err), "Cannot record the VM's end");
        }
    }

    /// Sets the per-VM state gauges and the per-state counts from the snapshots.
    pub(super) fn publish_metrics(&self) {
        let records: Vec<VmRecord> = lock(&self.inner.vms)
            .values()
            .map(|slot| lock(&slot.snapshot).clone())
            .collect();
        let metrics = &self.inner.metrics;
        for state in VmState::NAMES {
            let count = records.iter().filter(|r| r.state.name() == state).count();
            metrics
                .vms
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            for record in &records {
                metrics
                    .vm_state
                    .get_or_create(&VmStateLabels {
                        vm: record.spec.name.clone(),
                        state: state.into(),
                    })
                    .set(i64::from(record.state.name() == state));
            }
        }
    }
}

/// Presses the ACPI power button, again every few seconds (a guest still booting misses
/// a press), until QEMU exits or `timeout` passes; true if it exited.
async fn press_power_button(
    qmp: &super::qmp::QmpClient,
    process: &super::process::QemuProcess,
    timeout: Duration,
) -> bool {
    const REPRESS: Duration = Duration::from_secs(5);
    let deadline = Instant::now() + timeout;
    loop {
        if qmp.system_powerdown().await.is_err() {
            return process.wait_exit(Duration::from_secs(1)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if process.wait_exit(left.min(REPRESS)).await {
            return true;
        }
        if left <= REPRESS {
            return false;
        }
    }
}

pub(super) fn disconnected() -> QmpError {
    QmpError::Disconnected {
        command: "none (QEMU is not running)".into(),
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
