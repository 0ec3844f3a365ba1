//! Cold migration's disk step: the VM's disk image goes to the destination agent as an
//! AMST file transfer, after the guest was paused and before the destination QEMU starts.
//!
//! ```text
//! source agent                                   destination agent
//!   |--- MigratePrepare{spec, disk: DiskOffer} --->| reserve the VM (Migrating, no QEMU),
//!   |                                              | spec.disk = <its dir>/<file>,
//!   |                                              | expect_file(transfer, that path)
//!   |<------------------------ MigrateDiskReady ---|
//!   | QMP stop (cold pauses first)                 |
//!   | send_file_as(disk, transfer) ==== AMST ====>| verified (BLAKE3), renamed into place
//!   |--- MigrateDiskSent ------------------------->| start QEMU -incoming with that disk
//!   |<------------------------ MigrateReady -------| (then as for a diskless VM)
//! ```
//!
//! The transfer name ([`transfer_name`]) starts with a dot: only the destination's
//! registration can deliver it, so a transfer that outlives a rollback is refused and
//! never lands in the receive directory. A rollback on the destination removes the VM's
//! directory, the disk file (partial or complete) with it; the source's disk is only
//! ever read.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{MigrateError, MigrationReport, metrics};
use crate::{
    amst::{
        receiver::Receiver,
        sender::{Hooks, Progress, SendOptions, send_file_as},
    },
    protocol::{handshake::Psk, messages::CodecChoice},
    vm::VmManager,
};

/// How often the copy's progress is published.
const POLL: Duration = Duration::from_millis(500);

/// Files of a VM's directory a disk may not replace.
const RESERVED_FILES: [&str; 8] = [
    "vm.json",
    "vm.json.tmp",
    "qmp.sock",
    "serial.log",
    "qemu.pid",
    "qemu.log",
    "incoming.sock",
    "migrate-out.sock",
];

/// The disk a cold migration brings along (in `MigratePrepare`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskOffer {
    /// The image's file name, kept on the destination (its extension picks the format).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// The name the file transfer is offered under ([`transfer_name`]).
    pub transfer: String,
}

impl DiskOffer {
    /// Describes VM `vm`'s disk at `path`.
    pub fn of(vm: &str, path: &Path) -> Result<Self, MigrateError> {
        let unreadable = |reason: String| MigrateError::Disk {
            path: path.display().to_string(),
            reason,
        };
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| unreadable("its file name is not UTF-8".into()))?
            .to_owned();
        let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(unreadable("it is not a regular file".into()));
        }
        let offer = Self {
            file,
            size: meta.len(),
            transfer: transfer_name(vm),
        };
        offer.check(vm).map_err(unreadable)?;
        Ok(offer)
    }

    /// Checks an offer a source sent for VM `vm`: a plain file name that is none of the
    /// VM directory's own files and that QEMU's `-drive` option can take, and the
    /// transfer name for that VM.
    pub fn check(&self, vm: &str) -> Result<(), String> {
        let file = &self.file;
        if file.is_empty()
            || file.len() > 255
            || file.starts_with('.')
            || file.contains(['/', '\0', ','])
            || RESERVED_FILES.contains(&file.as_str())
        {
            return Err(format!(
                "disk file name {file:?} is not a plain name usable in the VM's directory"
            ));
        }
        let expected = transfer_name(vm);
        if self.transfer != expected {
            return Err(format!(
                "disk transfer {:?} is not {expected:?}",
                self.transfer
            ));
        }
        Ok(())
    }

    /// Where the disk goes on the destination: the VM's directory there.
    pub fn target(&self, vm_dir: &Path) -> PathBuf {
        vm_dir.join(&self.file)
    }
}

/// The transfer name of VM `vm`'s disk (a dot name: see the module doc).
pub fn transfer_name(vm: &str) -> String {
    format!(".migrate-{vm}-disk")
}

/// How far the disk copy is (in the migration report while and after it runs).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DiskProgress {
    /// The image's file name.
    pub file: String,
    /// Bytes the destination acknowledged.
    pub done_bytes: u64,
    /// The image's size.
    pub total_bytes: u64,
}

/// Where the source sends the disk, and how.
#[derive(Clone, Debug)]
pub struct CopyTarget {
    /// Destination agent.
    pub addr: SocketAddr,
    /// Key to authenticate there.
    pub psk: Psk,
    /// Streams and socket options (file transfers carry raw blocks: the codec is unused).
    pub options: SendOptions,
}

/// Source side: sends VM `name`'s disk at `path` as `offer.transfer`, publishing the
/// progress in `report` (`disk`, and `wire_bytes`, which it adds to). Returns once the
/// destination verified the file and renamed it into place.
pub async fn copy(
    manager: &VmManager,
    name: &str,
    path: &Path,
    offer: &DiskOffer,
    target: &CopyTarget,
    report: &mut MigrationReport,
) -> Result<(), String> {
    let base = report.wire_bytes;
    let done = Arc::new(AtomicU64::new(0));
    let mut progress = DiskProgress {
        file: offer.file.clone(),
        done_bytes: 0,
        total_bytes: offer.size,
    };
    report.disk = Some(progress.clone());
    manager.update_migration(name, report);
    let mut sender = {
        let (done, path, transfer) = (Arc::clone(&done), path.to_owned(), offer.transfer.clone());
        let (addr, psk) = (target.addr, target.psk.clone());
        let options = SendOptions {
            codec: CodecChoice::None,
            auto_codec: false,
            ..target.options.clone()
        };
        tokio::task::spawn_blocking(move || {
            let on_progress = |p: Progress| done.store(p.done_bytes, Ordering::Relaxed);
            let hooks = Hooks {
                on_stream: None,
                on_progress: Some(&on_progress),
            };
            send_file_as(&path, &transfer, addr, &psk, &options, None, &hooks)
        })
    };
    let mut ticker = tokio::time::interval(POLL);
    let summary = loop {
        tokio::select! {
            joined = &mut sender => break joined,
            _ = ticker.tick() => {
                progress.done_bytes = done.load(Ordering::Relaxed);
                report.disk = Some(progress.clone());
                report.wire_bytes = base + progress.done_bytes;
                manager.update_migration(name, report);
                metrics::progress(manager.metrics(), name, report);
            }
        }
    };
    let summary = match summary {
        Ok(Ok(summary)) => summary,
        Ok(Err(err)) => {
            return Err(format!(
                "The disk copy failed: {}",
                crate::error_chain(&err)
            ));
        }
        Err(join) => return Err(format!("The disk sender crashed: {join}")),
    };
    progress.done_bytes = offer.size;
    report.disk = Some(progress);
    report.wire_bytes = base + summary.bytes;
    manager.update_migration(name, report);
    metrics::progress(manager.metrics(), name, report);
    tracing::info!(vm = %name, bytes = summary.bytes, seconds = summary.seconds, digest = %summary.digest, "Disk copied and verified by the destination");
    Ok(())
}

/// Destination side: while alive, the receiver delivers the disk transfer to the VM's
/// directory; dropping it withdraws the registration.
#[derive(Debug)]
pub struct ExpectedDisk {
    receiver: Weak<Receiver>,
    transfer: String,
    /// The final path of the disk.
    pub target: PathBuf,
}

impl ExpectedDisk {
    /// Registers `offer`'s transfer on `receiver`, to arrive in `vm_dir`.
    pub fn register(
        receiver: &Arc<Receiver>,
        offer: &DiskOffer,
        vm_dir: &Path,
    ) -> Result<Self, String> {
        let target = offer.target(vm_dir);
        receiver
            .expect_file(&offer.transfer, target.clone())
            .map_err(|e| crate::error_chain(&e))?;
        Ok(Self {
            receiver: Arc::downgrade(receiver),
            transfer: offer.transfer.clone(),
            target,
        })
    }

    /// Checks the disk is in place with the offered size (the receiver renames a file
    /// into place only once its digest matched the sender's).
    pub fn arrived(&self, size: u64) -> Result<(), String> {
        match std::fs::metadata(&self.target) {
            Ok(meta) if meta.is_file() && meta.len() == size => Ok(()),
            Ok(meta) => Err(format!(
                "the disk {} has {} bytes, the source offered {size}",
                self.target.display(),
                meta.len()
            )),
            Err(e) => Err(format!(
                "the disk {} did not arrive: {e}",
                self.target.display()
            )),
        }
    }
}

impl Drop for ExpectedDisk {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.upgrade() {
            receiver.forget_file(&self.transfer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_name_a_plain_file_and_the_vms_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.qcow2");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let offer = DiskOffer::of("vm1", &path).unwrap();
        assert_eq!(
            offer,
            DiskOffer {
                file: "root.qcow2".into(),
                size: 4096,
                transfer: ".migrate-vm1-disk".into(),
            }
        );
        assert_eq!(
            offer.target(Path::new("/s/vms/vm1")),
            Path::new("/s/vms/vm1/root.qcow2")
        );
        assert!(offer.check("vm2").unwrap_err().contains("is not"));
        for bad in [
            "",
            ".hidden",
            "a/b",
            "x,y",
            "vm.json",
            "qmp.sock",
            "serial.log",
        ] {
            let offer = DiskOffer {
                file: bad.into(),
                ..offer.clone()
            };
            assert!(offer.check("vm1").is_err(), "{bad:?}");
        }
        let err = DiskOffer::of("vm1", &dir.path().join("missing.raw")).unwrap_err();
        assert!(
            err.to_string().starts_with("Cannot read the disk "),
            "{err}"
        );
        assert!(DiskOffer::of("vm1", dir.path()).is_err());
    }
}
