//! Where the transfer benchmark's bytes come from and go to: a source file warmed into
//! the page cache, and a receive directory on tmpfs unless the caller names a disk.

use std::{
    ffi::CString,
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// tmpfs, where the default receive directory lives.
const DEFAULT_PARENT: &str = "/dev/shm";
/// `TMPFS_MAGIC` from `linux/magic.h`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A temporary receive directory, removed with everything in it when dropped.
pub(super) struct ReceiveDir {
    dir: tempfile::TempDir,
    filesystem: String,
}

impl ReceiveDir {
    /// Makes the directory inside `parent`, or inside `/dev/shm` (which must be tmpfs).
    pub(super) fn create(parent: Option<&Path>) -> anyhow::Result<Self> {
        let chosen = parent.map_or_else(|| PathBuf::from(DEFAULT_PARENT), Path::to_path_buf);
        let magic = filesystem_magic(&chosen)?;
        if parent.is_none() && magic != TMPFS_MAGIC {
            bail!(
                "{DEFAULT_PARENT} is not tmpfs (filesystem {}): name a receive directory \
                 with --receive-dir",
                filesystem_name(magic)
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("dwcp-transfer-recv-")
            .tempdir_in(&chosen)
            .with_context(|| format!("Create a receive directory in {}", chosen.display()))?;
        crate::interrupt::remove_on_signal(dir.path());
        Ok(Self {
            dir,
            filesystem: filesystem_name(magic),
        })
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory and its filesystem, for the report.
    pub(super) fn describe(&self) -> String {
        format!("{} ({})", self.dir.path().display(), self.filesystem)
    }
}

/// Reads `path` once so that its pages are cached before the first round.
pub(super) fn warm_page_cache(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("Open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    while file
        .read(&mut buf)
        .with_context(|| format!("Read {}", path.display()))?
        > 0
    {}
    Ok(())
}

/// `f_type` of the filesystem holding `path`.
fn filesystem_magic(path: &Path) -> anyhow::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a valid statfs to fill.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("Cannot stat the filesystem of {}", path.display()));
    }
    Ok(st.f_type)
}

/// A readable name for a filesystem magic number.
fn filesystem_name(magic: i64) -> String {
    match magic {
        TMPFS_MAGIC => "tmpfs".into(),
        0xEF53 => "ext2/3/4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("filesystem magic {other:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_receive_dir_is_tmpfs_and_removed_on_drop() {
        let dir = ReceiveDir::create(None).unwrap();
        let path = dir.path().to_owned();
        assert!(path.starts_with(DEFAULT_PARENT), "{}", path.display());
        assert!(dir.describe().ends_with("(tmpfs)"), "{}", dir.describe());
        std::fs::write(path.join("x"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_receive_dir_is_a_clear_error() {
        let err = ReceiveDir::create(Some(Path::new("/nonexistent/dwcp")))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.contains("Cannot stat the filesystem of /nonexistent/dwcp"),
            "{err}"
        );
    }
}
