//! `guest.json`: what the guest was built from and what it holds, and the up-to-date
//! check that makes a second `cargo xtask guest` a no-op.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The manifest's file name in the guest folder.
pub const FILE: &str = "guest.json";

/// The contents of `guest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// SHA-256 over every input (packages, workload binary, the builder's own sources):
    /// equal means a rebuild would give the same guest.
    pub inputs_sha256: String,
    /// The kernel package.
    pub kernel: Kernel,
    /// The busybox package.
    pub busybox: Package,
    /// The workload binary.
    pub workload: Workload,
    /// Modules loaded at boot, in order (their paths in the kernel package).
    pub modules: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub builtin_modules: Vec<String>,
    /// Output file name to its SHA-256 and size.
    pub files: BTreeMap<String, FileInfo>,
    /// When it was built (UTC, RFC 3339).
    pub built_at: String,
}

/// A Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Name.
    pub package: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the `.deb`.
    pub deb_sha256: String,
}

/// The kernel package and its release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// The package.
    #[serde(flatten)]
    pub package: Package,
    /// Kernel release (`uname -r` in the guest).
    pub release: String,
}

/// The workload binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Rust target it was built for.
    pub target: String,
    /// SHA-256 of the binary.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// SHA-256 of its contents.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

impl FileInfo {
    /// The figures of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self {
            sha256: sha256(data),
            bytes: data.len() as u64,
        }
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hex SHA-256 of the file at `path`, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("Cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("Cannot read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// Hex SHA-256 over `parts`, each prefixed by its length so boundaries count.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest in `dir`, if there is a readable one.
pub fn read(dir: &Path) -> Option<Manifest> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `manifest` into `dir`.
pub fn write(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)?;
    super::write_atomically(&dir.join(FILE), format!("{text}\n").as_bytes())
}

/// Whether `manifest` was built from `inputs` and every file it lists is in `dir`
/// unchanged.
pub fn is_current(dir: &Path, manifest: &Manifest, inputs: &str) -> bool {
    manifest.inputs_sha256 == inputs
        && manifest
            .files
            .iter()
            .all(|(name, info)| sha256_file(&dir.join(name)).is_ok_and(|sum| sum == info.sha256))
}

/// Now, as RFC 3339 UTC (`2026-11-21T08:35:22Z`).
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` after the Unix epoch as RFC 3339 UTC.
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_336_522), "2026-11-22T08:35:22Z");
    }

    #[test]
    fn fingerprint_keeps_boundaries() {
        let a = fingerprint([&b"ab"[..], b"c"]);
        assert_ne!(a, fingerprint([&b"a"[..], b"bc"]));
        assert_eq!(a, fingerprint([&b"ab"[..], b"c"]));
        assert_eq!(
            sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn changed_or_missing_output_is_not_current() {
        let dir = std::env::temp_dir().join(format!("dwcp-manifest-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        let package = Package {
            package: "p".into(),
            version: "1".into(),
            deb_sha256: "0".into(),
        };
        let manifest = Manifest {
            inputs_sha256: "in".into(),
            kernel: Kernel {
                package: package.clone(),
                release: "r".into(),
            },
            busybox: package,
            workload: Workload {
                target: "t".into(),
                sha256: "s".into(),
                bytes: 1,
            },
            modules: vec![],
            builtin_modules: vec![],
            files: BTreeMap::from([("vmlinuz".to_owned(), FileInfo::of(b"kernel"))]),
            built_at: now_utc(),
        };
        write(&dir, &manifest).unwrap();
        assert_eq!(read(&dir).as_ref(), Some(&manifest));
        assert!(is_current(&dir, &manifest, "in"));
        assert!(!is_current(&dir, &manifest, "other inputs"));
        fs::write(dir.join("vmlinuz"), b"kernel!").unwrap();
        assert!(!is_current(&dir, &manifest, "in"));
        fs::remove_file(dir.join("vmlinuz")).unwrap();
        assert!(!is_current(&dir, &manifest, "in"));
        fs::write(dir.join(FILE), b"{ not json").unwrap();
        assert!(read(&dir).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
