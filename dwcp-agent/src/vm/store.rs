//! VM records on disk: `<state_dir>/vms/<name>/vm.json`, written atomically (temporary
//! file, fsync, rename), next to the VM's QMP socket, serial log, pidfile and QEMU log.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{accel::Accel, spec::VmSpec, state::VmState};

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("Cannot {what} {path}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Path involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another agent process uses the same state directory.
    #[error("State directory {0} is in use by another agent")]
    Locked(String),
    /// A record file is not valid JSON for [`VmRecord`].
    #[error("Corrupt VM record {path}: {message}")]
    Corrupt {
        /// Record file.
        path: String,
        /// Parser message.
        message: String,
    },
}

/// How the last stop ended.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopMethod {
    /// The guest powered itself off after the ACPI power button.
    GuestPowerOff,
    /// The guest ignored the power button; QEMU was told to quit.
    QmpQuit,
    /// QEMU did not quit; it was killed.
    Killed,
    /// The VM was migrated away; this host's QEMU quit after the destination took over.
    Migrated,
}

/// Everything the agent remembers about one VM.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct VmRecord {
    /// What the client asked for.
    pub spec: VmSpec,
    /// Lifecycle state (a failure carries its reason).
    #[serde(flatten)]
    pub state: VmState,
    /// Accelerator of the current or last run.
    pub accel: Option<Accel>,
    /// Why that accelerator was chosen.
    pub accel_reason: Option<String>,
    /// QEMU's pid while it runs.
    pub pid: Option<u32>,
    /// Unix time (ms) of `create`.
    pub created_at_ms: u64,
    /// Unix time (ms) the last start completed (VM running).
    pub started_at_ms: Option<u64>,
    /// Seconds from the last start request to the VM running.
    pub start_seconds: Option<f64>,
    /// Unix time (ms) of the last change.
    pub updated_at_ms: u64,
    /// How the last stop ended.
    pub stopped_by: Option<StopMethod>,
    /// The last error an operation met (kept after recovery, for diagnosis).
    pub last_error: Option<String>,
    /// The last migration of this VM, from or to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::migrate::MigrationReport>,
}

impl VmRecord {
    /// A fresh record in `Creating`.
    pub fn new(spec: VmSpec) -> Self {
        let now = now_ms();
        Self {
            spec,
            state: VmState::Creating,
            accel: None,
            accel_reason: None,
            pid: None,
            created_at_ms: now,
            started_at_ms: None,
            start_seconds: None,
            updated_at_ms: now,
            stopped_by: None,
            last_error: None,
            migration: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The files of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPaths {
    /// `<state_dir>/vms/<name>`.
    pub dir: PathBuf,
    /// `vm.json`.
    pub record: PathBuf,
    /// QMP socket.
    pub qmp: PathBuf,
    /// Guest serial console output.
    pub serial: PathBuf,
    /// QEMU's pidfile.
    pub pidfile: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
}

/// The directory of VM records, held exclusively by one agent process.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Open `<state_dir>/vms/.lock` with an exclusive `flock`, released on drop.
    _lock: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/vms`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let root = state_dir.join("vms");
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            what: "create directory",
            path: root.display().to_string(),
            source,
        })?;
        let lock_path = root.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|source| StoreError::Io {
            what: "create",
            path: lock_path.display().to_string(),
            source,
        })?;
        // SAFETY: flock only reads the descriptor, which `lock` keeps open.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if rc != 0 {
            return Err(StoreError::Locked(state_dir.display().to_string()));
        }
        Ok(Self { root, _lock: lock })
    }

    /// The paths of VM `name`.
    pub fn paths(&self, name: &str) -> VmPaths {
        let dir = self.root.join(name);
        VmPaths {
            record: dir.join("vm.json"),
            qmp: dir.join("qmp.sock"),
            serial: dir.join("serial.log"),
            pidfile: dir.join("qemu.pid"),
            qemu_log: dir.join("qemu.log"),
            dir,
        }
    }

    /// Writes `record` atomically, creating its directory.
    pub fn save(&self, record: &VmRecord) -> Result<(), StoreError> {
        let paths = self.paths(&record.spec.name);
        let io = |what, path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { what, path, source }
        };
        std::fs::create_dir_all(&paths.dir).map_err(io("create directory", &paths.dir))?;
        let tmp = paths.dir.join("vm.json.tmp");
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: paths.record.display().to_string(),
            message: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&json).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &paths.record).map_err(io("rename to", &paths.record))?;
        Ok(())
    }

    /// Removes VM `name`'s directory and everything in it.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.paths(name).dir;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
                what: "remove",
                path: dir.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every record on disk; unreadable ones are returned as errors beside the rest.
    pub fn load_all(&self) -> Result<(Vec<VmRecord>, Vec<StoreError>), StoreError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| StoreError::Io {
            what: "list",
            path: self.root.display().to_string(),
            source,
        })?;
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("vm.json");
            if !path.exists() {
                continue;
            }
            match load(&path) {
                Ok(record) => records.push(record),
                Err(err) => errors.push(err),
            }
        }
        records.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok((records, errors))
    }
}

fn load(path: &Path) -> Result<VmRecord, StoreError> {
    let text = std::fs::read(path).map_err(|source| StoreError::Io {
        what: "read",
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = VmRecord::new(VmSpec::named("b"));
        b.state = VmState::Failed("QEMU exited".into());
        store.save(&b).unwrap();
        store.save(&VmRecord::new(VmSpec::named("a"))).unwrap();
        let (records, errors) = store.load_all().unwrap();
        assert!(errors.is_empty());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].spec.name, "a");
        assert_eq!(records[1], b);
        assert!(!store.paths("b").dir.join("vm.json.tmp").exists());
        store.remove("b").unwrap();
        store.remove("b").unwrap();
        assert_eq!(store.load_all().unwrap().0.len(), 1);
    }

    #[test]
    fn a_corrupt_record_is_reported_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save(&VmRecord::new(VmSpec::named("good"))).unwrap();
        let bad = store.paths("bad");
        std::fs::create_dir_all(&bad.dir).unwrap();
        std::fs::write(&bad.record, b"{ not json").unwrap();
        let (records, errors) = store.load_all().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("bad/vm.json"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        drop(first);
        Store::open(dir.path()).unwrap();
    }
}
