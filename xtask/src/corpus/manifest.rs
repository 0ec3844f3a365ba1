//! `corpus.json`: what the corpus holds (one entry per file) and what it was made from,
//! and the up-to-date check that makes a second `cargo xtask corpus` a no-op.
//!
//! Readers (`dwcp-bench hde --corpus`, the bench suite) rely on these keys: `images[]`
//! with `file`, `bytes`, `kind` (`memory` for a raw `pmemsave` image, `migration` for
//! QEMU's own stream), `workload`, `round` and `previous` (the prior round's file, if
//! any).

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// The manifest's file name in the corpus folder.
pub const FILE: &str = "corpus.json";

/// The contents of `corpus.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// SHA-256 over every input (guest, QEMU version, options, this module's sources).
    pub inputs_sha256: String,
    /// The guest's own input fingerprint (`guest.json`'s `inputs_sha256`).
    pub guest_fingerprint: String,
    /// Kernel release of the guest.
    pub guest_kernel: String,
    /// `qemu-system-x86_64 --version`.
    pub qemu_version: String,
    /// Accelerator the guest ran under.
    pub accel: String,
    /// Guest RAM, MiB.
    pub mem_mib: u32,
    /// Memory each workload owns (`dwcp.mem_mib`), MiB.
    pub workload_mib: u32,
    /// Dirtying rate of `table` (`dwcp.rate_mib_s`), MiB/s.
    pub rate_mib_s: u32,
    /// Guest running time between successive rounds, seconds.
    pub seconds_apart: f64,
    /// The files, in capture order.
    pub images: Vec<Image>,
    /// When it was made (Unix seconds).
    pub made_at_unix: u64,
    /// How long making it took, seconds.
    pub took_seconds: f64,
}

/// What a corpus file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Raw guest-physical memory from address 0 (`pmemsave`), `mem_mib` MiB.
    Memory,
    /// QEMU's own migration stream (`migrate` to `exec:cat > FILE`).
    Migration,
}

/// One corpus file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// File name in the corpus folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// What it is.
    pub kind: Kind,
    /// The guest's workload when it was captured.
    pub workload: String,
    /// Round number (0 = first capture of this boot).
    pub round: u32,
    /// The previous round's file (same boot), for round deltas.
    pub previous: Option<String>,
    /// Guest running seconds since the workload said READY.
    pub seconds_after_ready: f64,
}

/// Reads the manifest in `dir`, if there is a readable one.
pub fn read(dir: &Path) -> Option<Manifest> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `manifest` was made from `inputs` and every file it lists is there with its
/// size.
pub fn is_current(dir: &Path, manifest: &Manifest, inputs: &str) -> bool {
    manifest.inputs_sha256 == inputs
        && manifest
            .images
            .iter()
            .all(|image| fs::metadata(dir.join(&image.file)).is_ok_and(|m| m.len() == image.bytes))
}

/// Writes the manifest into `dir` (atomically).
pub fn write(dir: &Path, manifest: &Manifest) -> Result<()> {
    let mut text = serde_json::to_string_pretty(manifest)?;
    text.push('\n');
    crate::guest::write_atomically(&dir.join(FILE), text.as_bytes())
        .with_context(|| format!("Cannot write the corpus manifest in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(bytes: u64) -> Manifest {
        Manifest {
            inputs_sha256: "abc".into(),
            guest_fingerprint: "g".into(),
            guest_kernel: "6.1.0".into(),
            qemu_version: "QEMU emulator version 7.2".into(),
            accel: "tcg".into(),
            mem_mib: 1,
            workload_mib: 1,
            rate_mib_s: 16,
            seconds_apart: 5.0,
            images: vec![Image {
                file: "idle-r0.raw".into(),
                bytes,
                kind: Kind::Memory,
                workload: "idle".into(),
                round: 0,
                previous: None,
                seconds_after_ready: 5.0,
            }],
            made_at_unix: 0,
            took_seconds: 1.0,
        }
    }

    #[test]
    fn current_only_with_the_same_inputs_and_every_file_at_its_size() {
        let dir =
            std::env::temp_dir().join(format!("xtask-corpus-manifest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("idle-r0.raw"), [0u8; 10]).unwrap();
        let m = manifest(10);
        write(&dir, &m).unwrap();
        let read_back = read(&dir).unwrap();
        assert_eq!(read_back, m);
        assert!(is_current(&dir, &read_back, "abc"));
        assert!(!is_current(&dir, &read_back, "other inputs"));
        fs::write(dir.join("idle-r0.raw"), [0u8; 9]).unwrap();
        assert!(!is_current(&dir, &read_back, "abc"), "a truncated image");
        fs::remove_file(dir.join("idle-r0.raw")).unwrap();
        assert!(!is_current(&dir, &read_back, "abc"), "a missing image");
        fs::write(dir.join(FILE), "{").unwrap();
        assert!(
            read(&dir).is_none(),
            "an unreadable manifest is no manifest"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
