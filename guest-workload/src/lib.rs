//! Self-checking workloads for the dwcp test guest.
//!
//! `cargo xtask guest` builds this crate as a static `x86_64-unknown-linux-musl` binary
//! (`/bin/dwcp-guest-workload` in the guest's initramfs); the guest's `/init` starts it
//! once the system is up. It reads its settings from the kernel command line and talks to
//! the host only through the serial console (`console=ttyS0`), one line per event.
//!
//! # Kernel command line
//!
//! | option | values | default |
//! | --- | --- | --- |
//! | `dwcp.workload=W` | `idle`, `compress`, `table`, `dirty` | `idle` |
//! | `dwcp.mem_mib=N` | memory the workload owns, MiB, 1..=1048576 | `64` |
//! | `dwcp.rate_mib_s=R` | dirtying rate of `dirty` and `table`, MiB/s, 0..=1048576 | `16` |
//!
//! Other `dwcp.*` words, a repeated key or a bad value stop the workload with a
//! `DWCP-GUEST ERROR` line; words without the `dwcp.` prefix are the kernel's.
//!
//! # Workloads
//!
//! - `idle`: owns no memory and only sends heartbeats: a booted guest at rest.
//! - `compress`: in tmpfs (`/tmp/dwcp-compress`), writes `mem_mib / 2` of generated text
//!   per round and archives it together with `/bin` using busybox `tar -czf`, tests the
//!   archive with `gzip -t`, and keeps archives up to another `mem_mib / 2`.
//! - `table`: a key/value table of 512-byte customer rows (`mem_mib` of them, with a hash
//!   index): key, version, time, balance, name, status and a note of words, compressible
//!   as real rows are; random records are updated at `rate_mib_s` and every record is
//!   checked.
//! - `dirty`: `mem_mib` of 4 KiB pages; random pages are rewritten at `rate_mib_s` with
//!   content derived from (page index, generation), the generation of each page is kept,
//!   and a verifier re-reads all pages without pause and checks each against its expected
//!   content. A page that changed, or missed a write, is found: after a live migration the
//!   guest itself says whether its memory arrived intact.
//!
//! # Console lines (exact prefixes)
//!
//! - `DWCP-GUEST READY workload=<w> mem_mib=<n>`: once, when the workload's memory is
//!   set up.
//! - `DWCP-GUEST HEARTBEAT t=<seconds since boot>`: every second, for every workload
//!   (`t` is the first field of `/proc/uptime`, e.g. `t=12.34`).
//! - `dirty` and `table`, every second: `DWCP-VERIFY ok pass=<k> pages=<p>
//!   dirtied=<d>` where `k` counts completed check passes over all memory, `p` is the
//!   checked memory in 4 KiB pages and `d` the bytes rewritten so far in 4 KiB pages.
//!   Once any mismatch was found, the line becomes, for good,
//!   `DWCP-VERIFY FAIL page=<i> expected_gen=<g> found_gen=<f|none> word=<w>
//!   failures=<n> pass=<k> pages=<p> dirtied=<d>`, naming the latest mismatch (for
//!   `table`, `page` is the 4 KiB page of the table the bad record starts in and the
//!   generations are record versions). A host checks for the absence of `FAIL`.
//! - `compress`, each round: `DWCP-COMPRESS ok round=<n> text_bytes=<t>
//!   archive_bytes=<a>` or `DWCP-COMPRESS FAIL round=<n> <error>`.
//! - `DWCP-GUEST ERROR <message>`: the workload cannot start (bad option, not enough
//!   memory); the guest keeps running.
//! - `DWCP-GUEST POWEROFF`: written by `/init`'s shutdown step after an ACPI power-button
//!   event (QMP `system_powerdown`), just before the guest powers off.

pub mod cmdline;
pub mod compress;
pub mod dirty;
pub mod heartbeat;
pub mod memory;
pub mod pattern;
pub mod record;
pub mod table;
pub mod verify;

use std::{fmt::Display, io::Write as _};

/// Bytes in a page, the unit the console lines count memory in.
pub const PAGE_SIZE: usize = 4096;

/// Writes one console line to standard output in one write. A console that is gone is
/// not a reason to stop the workload, so write errors are ignored.
pub fn say(line: impl Display) {
    let text = format!("{line}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
