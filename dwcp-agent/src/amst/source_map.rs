//! A read-only mapping of a file transfer's source, for hashing blocks where they lie in
//! the page cache instead of copying them out first, and a `SIGBUS` guard that turns a
//! source shrinking under the mapping into an error instead of the agent's death.
//!
//! Touching a mapped page beyond the end of a file that was truncated after it was
//! mapped raises `SIGBUS`. While a [`SourceMap`] lives, its address range is listed in a
//! fixed table that a process-wide `SIGBUS` handler consults: a fault inside a listed
//! range replaces the rest of that range with zero pages (so the access completes) and
//! marks the map as faulted; [`SourceMap::hash`] then reports the block as unreadable.
//! A fault anywhere else restores the handler that was installed before ours (the
//! standard library's, or the default) and returns, so the faulting access repeats under
//! it exactly as if the guard did not exist.

use std::{
    fs::File,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use crate::protocol::frame::{PayloadHash, payload_hash};

/// Mappings that can be guarded at once; a source that finds the table full is read
/// with `pread` instead.
const SLOTS: usize = 64;

/// One guarded address range; `start == 0` marks a free slot.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The `SIGBUS` disposition found when the guard was installed, and the page size.
struct Installed {
    previous: libc::sigaction,
    page: usize,
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags, a signal mask);
// the handler only reads it.
unsafe impl Sync for Installed {}
// SAFETY: as above; it is written once, before any reader.
unsafe impl Send for Installed {}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the handler once per process; `None` when the kernel refused it.
fn install() -> Option<&'static Installed> {
    INSTALLED
        .get_or_init(|| {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
            // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags, empty
            // mask); the fields that matter are set below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
            // SAFETY: as above.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction values; the handler is an
            // `extern "C"` function with the SA_SIGINFO signature.
            let rc = unsafe { libc::sigaction(libc::SIGBUS, &raw const action, &raw mut previous) };
            (rc == 0).then_some(Installed { previous, page })
        })
        .as_ref()
}

/// The `SIGBUS` handler. Only async-signal-safe work: atomics, `mmap`, `sigaction`.
extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let Some(Some(installed)) = INSTALLED.get() else {
        return;
    };
    // SAFETY: the kernel passes a valid siginfo for a handler installed with SA_SIGINFO;
    // for SIGBUS `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= end {
            continue;
        }
        let page = addr & !(installed.page - 1);
        // SAFETY: [page, end) lies inside a mapping this process owns and still holds
        // (the slot is cleared before the mapping is unmapped), and only its reader
        // touches it; replacing it with private zero pages changes no other memory.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: put the previous disposition back; the access faults again under it.
    // SAFETY: `previous` is the valid sigaction read when installing.
    unsafe {
        libc::sigaction(
            libc::SIGBUS,
            &raw const installed.previous,
            std::ptr::null_mut(),
        )
    };
}

/// A read-only shared mapping of a whole source, guarded against truncation.
pub(super) struct SourceMap {
    map: memmap2::Mmap,
    slot: &'static Slot,
}

impl std::fmt::Debug for SourceMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceMap")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl SourceMap {
    /// Maps the first `len` bytes of `file`; `None` where that is not possible (an
    /// empty source, a file that cannot be mapped, the guard unavailable or full), and
    /// the caller then reads with `pread`.
    pub(super) fn new(file: &File, len: u64) -> Option<Self> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        install()?;
        // SAFETY: the mapping is read-only and only read through `hash`, whose reads
        // are guarded: a truncation of the file is caught by the SIGBUS handler, and a
        // concurrent rewrite changes the bytes hashed, which the receiver's check and
        // the end-of-transfer comparison of size and time refuse.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()?;
        let start = map.as_ptr() as usize;
        let slot = TABLE.iter().find(|slot| {
            slot.end.load(Ordering::Acquire) == 0
                && slot
                    .end
                    .compare_exchange(0, start + len, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        })?;
        slot.faulted.store(false, Ordering::Release);
        slot.start.store(start, Ordering::Release);
        Some(Self { map, slot })
    }

    /// The XXH3-128 of `len` bytes at `offset`, or `None` when part of them no longer
    /// exists in the file (it shrank; from then on every call answers `None`).
    pub(super) fn hash(&self, offset: u64, len: usize) -> Option<PayloadHash> {
        let start = usize::try_from(offset).ok()?;
        let bytes = self.map.get(start..start.checked_add(len)?)?;
        let hash = payload_hash(bytes);
        (!self.slot.faulted.load(Ordering::Acquire)).then_some(hash)
    }

    /// The mapped bytes at `offset` (for a socket write where `sendfile` is refused);
    /// `None` once the source shrank.
    pub(super) fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let bytes = self.map.get(start..start.checked_add(len)?)?;
        (!self.slot.faulted.load(Ordering::Acquire)).then_some(bytes)
    }
}

impl Drop for SourceMap {
    fn drop(&mut self) {
        // Unlist the range before `map` is unmapped (fields drop after this body).
        self.slot.start.store(0, Ordering::Release);
        self.slot.end.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    #[test]
    fn hashes_match_hashes_of_the_bytes() {
        let (f, data) = file_of(3 * 65536 + 17);
        let map = SourceMap::new(f.as_file(), data.len() as u64).unwrap();
        assert_eq!(map.hash(0, 65536), Some(payload_hash(&data[..65536])));
        assert_eq!(
            map.hash(3 * 65536, 17),
            Some(payload_hash(&data[3 * 65536..]))
        );
        assert_eq!(map.bytes(65536, 10), Some(&data[65536..65546]));
        assert_eq!(map.hash(3 * 65536, 18), None, "beyond the mapping");
    }

    #[test]
    fn a_source_truncated_under_the_map_is_reported_not_fatal() {
        let len = 1 << 20;
        let (f, data) = file_of(len);
        let map = SourceMap::new(f.as_file(), len as u64).unwrap();
        assert_eq!(map.hash(0, 4096), Some(payload_hash(&data[..4096])));
        f.as_file().set_len(8192).unwrap();
        // Still inside the file: readable.
        assert!(map.hash(0, 8192).is_some());
        // Beyond the new end: the guard catches the fault.
        assert_eq!(map.hash(65536, 65536), None);
        assert_eq!(map.hash(0, 4096), None, "a faulted map stays faulted");
        assert_eq!(map.bytes(0, 1), None);
    }

    #[test]
    fn a_fault_outside_guarded_maps_still_kills_the_process() {
        const CHILD: &str = "DWCP_SOURCE_MAP_SIGBUS_CHILD";
        const NAME: &str =
            "amst::source_map::tests::a_fault_outside_guarded_maps_still_kills_the_process";
        if std::env::var_os(CHILD).is_some() {
            let (guarded_file, _) = file_of(16384);
            let _guarded = SourceMap::new(guarded_file.as_file(), 16384).unwrap();
            let (other_file, _) = file_of(16384);
            // SAFETY: a private test file, truncated below on purpose to fault.
            let other = unsafe { memmap2::Mmap::map(other_file.as_file()) }.unwrap();
            other_file.as_file().set_len(0).unwrap();
            let byte = std::hint::black_box(other[8192]);
            println!("survived a fault outside the guard ({byte})");
            std::process::exit(0);
        }
        use std::os::unix::process::ExitStatusExt as _;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn slots_are_reused_after_drop() {
        let (f, _) = file_of(4096);
        for _ in 0..(SLOTS * 2) {
            let map = SourceMap::new(f.as_file(), 4096).unwrap();
            assert!(map.hash(0, 4096).is_some());
        }
        assert!(SourceMap::new(f.as_file(), 0).is_none(), "empty source");
    }
}
