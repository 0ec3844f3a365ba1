//! A file being received: its part file, the blocks already on disk, their hashes, and
//! the resume record that survives a restart.
//!
//! Blocks are written in place into `.<name>.dwcp-part`; `.<name>.dwcp-state` lists the
//! blocks known to be on disk (saved after an `fdatasync` by a [`Persister`] thread), so
//! an interrupted transfer resumes without resending them.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{AmstError, digest::BlockHashes};
use crate::protocol::messages::to_ranges;

/// Bytes after which the resume record is saved even before a second has passed.
pub(super) const PERSIST_BYTES: u64 = 16 << 20;

/// One file transfer's state on the receiving side.
#[derive(Debug)]
pub(super) struct FileSession {
    /// The part file, written in place.
    pub(super) file: File,
    /// The same file opened with `O_DIRECT`, when the filesystem supports it: whole,
    /// aligned blocks go from the pool block to the device without a page-cache copy.
    direct: Option<File>,
    /// `.<name>.dwcp-part`.
    pub(super) part: PathBuf,
    /// `.<name>.dwcp-state`, the resume record.
    pub(super) state: PathBuf,
    /// Where the verified file goes.
    pub(super) target: PathBuf,
    transfer_id: String,
    /// Bytes of the whole file.
    pub(super) size: u64,
    /// Bytes per block (the last may be shorter).
    pub(super) block_size: u64,
    /// Blocks written, by sequence number.
    have: Mutex<Vec<bool>>,
    /// Hashes of the blocks written, for the digest.
    pub(super) hashes: BlockHashes,
    /// Bytes written since the resume record was last saved.
    pub(super) unsaved: AtomicU64,
    /// Held around every write into the part file. Tmpfs, and ext4 or xfs writing into
    /// blocks not yet allocated, hold the file's inode lock for a whole write (direct or
    /// not), and other streams' threads waiting for it there spin on the CPU; waiting
    /// here they sleep. With 4 and 16 streams into tmpfs this cut the receiving agent's
    /// CPU per GB by 10–60% (docs/benchmarks.md).
    write_lock: Mutex<()>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRecord {
    transfer_id: String,
    size: u64,
    block_size: u64,
    have: Vec<(u64, u64)>,
}

/// Alignment `O_DIRECT` needs for buffer, offset and length (the largest logical block
/// size in common use).
const DIRECT_ALIGN: usize = 4096;

fn is_direct_aligned(payload: &[u8], offset: u64) -> bool {
    payload.len().is_multiple_of(DIRECT_ALIGN)
        && offset.is_multiple_of(DIRECT_ALIGN as u64)
        && (payload.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
}

/// Opens `path` for direct writes; `None` where the filesystem refuses (tmpfs).
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .inspect_err(|e| tracing::debug!(error = %e, "No O_DIRECT; writing through the page cache"))
        .ok()
}

impl FileSession {
    /// Opens (or, for the same transfer, reopens to resume) the part file of `target`.
    pub(super) fn open(
        transfer_id: &str,
        target: PathBuf,
        size: u64,
        block_size: u32,
    ) -> Result<Self, AmstError> {
        let (Some(dir), Some(name)) = (
            target.parent(),
            target.file_name().map(|n| n.to_string_lossy()),
        ) else {
            return Err(AmstError::Invalid(format!(
                "{} names no file in a directory",
                target.display()
            )));
        };
        let part = dir.join(format!(".{name}.dwcp-part"));
        let state = dir.join(format!(".{name}.dwcp-state"));
        let io = |what, path: &Path| {
            let path = path.display().to_string();
            move |source| AmstError::File { what, path, source }
        };
        let blocks = usize::try_from(size.div_ceil(u64::from(block_size)))
            .map_err(|_| AmstError::Invalid(format!("size {size} too large")))?;
        let mut have = vec![false; blocks];
        let resumable = std::fs::read(&state)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ResumeRecord>(&bytes).ok())
            .filter(|r| {
                r.transfer_id == transfer_id
                    && r.size == size
                    && r.block_size == u64::from(block_size)
            })
            .filter(|_| part.exists());
        if let Some(record) = &resumable {
            for &(a, b) in &record.have {
                for seq in a..=b {
                    if let Some(slot) = usize::try_from(seq).ok().and_then(|i| have.get_mut(i)) {
                        *slot = true;
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(resumable.is_none())
            .open(&part)
            .map_err(io("Cannot create", &part))?;
        file.set_len(size).map_err(io("Cannot size", &part))?;
        let direct = open_direct(&part);
        Ok(Self {
            file,
            direct,
            part,
            state,
            target,
            transfer_id: transfer_id.to_owned(),
            size,
            block_size: u64::from(block_size),
            have: Mutex::new(have),
            hashes: BlockHashes::new(size, u64::from(block_size)),
            unsaved: AtomicU64::new(0),
            write_lock: Mutex::new(()),
        })
    }

    /// Writes a block at `offset`: directly when it is whole and aligned, else through
    /// the page cache (the tail block, filesystems without `O_DIRECT`).
    pub(super) fn write_block(&self, payload: &[u8], offset: u64) -> std::io::Result<()> {
        let _one = self
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(direct) = &self.direct
            && is_direct_aligned(payload, offset)
        {
            match direct.write_all_at(payload, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                other => return other,
            }
        }
        self.file.write_all_at(payload, offset)
    }

    fn lock_have(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        self.have
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn held(&self) -> Vec<u64> {
        self.lock_have()
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i as u64)
            .collect()
    }

    pub(super) fn missing(&self) -> usize {
        self.lock_have().iter().filter(|h| !**h).count()
    }

    pub(super) fn mark(&self, seq: u64) {
        let mut have = self.lock_have();
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| have.get_mut(i)) {
            *slot = true;
        }
    }

    /// Makes the written blocks durable, then records them (atomically replaced).
    pub(super) fn persist(&self) -> std::io::Result<()> {
        let held = self.held();
        self.file.sync_data()?;
        let record = ResumeRecord {
            transfer_id: self.transfer_id.clone(),
            size: self.size,
            block_size: self.block_size,
            have: to_ranges(held),
        };
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&record).unwrap_or_default())?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.state)
    }
}

/// Saves a session's resume record on its own thread, so that the `fdatasync` it needs
/// never stalls a data stream: every second, or sooner once [`PERSIST_BYTES`] arrived.
pub(super) struct Persister {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Persister {
    /// Starts saving `session`'s record.
    pub(super) fn start(session: Arc<FileSession>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("dwcp-persist".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    thread::park_timeout(Duration::from_millis(100));
                    let due = last.elapsed() >= Duration::from_secs(1)
                        || session.unsaved.load(Ordering::Relaxed) >= PERSIST_BYTES;
                    if due && !flag.load(Ordering::Relaxed) {
                        last = Instant::now();
                        session.unsaved.store(0, Ordering::Relaxed);
                        if let Err(err) = session.persist() {
                            tracing::warn!(error = %err, "Cannot save the resume record");
                        }
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Persister {
    /// Stops the thread and waits for it, so no record is written after this returns.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
