//! What a VM is made of: [`VmSpec`], as clients send it, and its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a spec is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Name empty, too long or with characters outside `[a-z0-9-]`.
    #[error(
        "Invalid VM name {0:?}: use 1 to {MAX_NAME_LEN} characters a-z, 0-9 and '-', starting with a letter or digit"
    )]
    Name(String),
    /// vCPU count out of range.
    #[error("Invalid vcpus {0}: must be 1..={MAX_VCPUS}")]
    Vcpus(u32),
    /// Memory out of range.
    #[error("Invalid memory_mib {0}: must be {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")]
    Memory(u64),
    /// A file the spec names does not exist or is not a regular file.
    #[error("Invalid {field}: {path} is not a readable file")]
    MissingFile {
        /// Spec field.
        field: &'static str,
        /// Path given.
        path: String,
    },
    /// A path is relative (the agent's working directory is not the client's).
    #[error("Invalid {field}: {path} must be an absolute path")]
    RelativePath {
        /// Spec field.
        field: &'static str,
        /// Path given.
        path: String,
    },
    /// Neither a disk nor a kernel.
    #[error("Nothing to boot: give a disk image or a kernel")]
    NothingToBoot,
    /// `initrd` or `append` without `kernel`.
    #[error("Invalid {0}: it needs a kernel")]
    NeedsKernel(&'static str),
    /// A kernel command line QEMU would misread.
    #[error("Invalid append: {0}")]
    Append(&'static str),
}

/// Longest VM name (keeps socket paths under the 108-byte unix limit).
pub const MAX_NAME_LEN: usize = 32;
/// Most vCPUs accepted.
pub const MAX_VCPUS: u32 = 64;
/// Least memory accepted, MiB.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Most memory accepted, MiB.
pub const MAX_MEMORY_MIB: u64 = 1024 * 1024;

/// Guest networking.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network device (`-nic none`).
    #[default]
    None,
    /// QEMU user-mode networking (`-nic user`).
    User,
}

/// A VM as the client describes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name on this host.
    pub name: String,
    /// Virtual CPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Disk image attached as a virtio drive.
    #[serde(default)]
    pub disk: Option<PathBuf>,
    /// Guest networking.
    #[serde(default)]
    pub network: Network,
    /// Kernel for direct boot.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for direct boot.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for direct boot.
    #[serde(default)]
    pub append: Option<String>,
}

fn default_vcpus() -> u32 {
    1
}

fn default_memory_mib() -> u64 {
    256
}

impl VmSpec {
    /// A spec with defaults for everything but the name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            vcpus: default_vcpus(),
            memory_mib: default_memory_mib(),
            disk: None,
            network: Network::None,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    /// Checks every field; the first problem found is reported.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_with(true)
    }

    /// Like [`VmSpec::validate`], but the disk file need not exist yet (a cold
    /// migration's disk arrives after the VM was reserved); its path is still checked.
    pub fn validate_awaiting_disk(&self) -> Result<(), SpecError> {
        self.validate_with(false)
    }

    fn validate_with(&self, disk_exists: bool) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(SpecError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(SpecError::Memory(self.memory_mib));
        }
        if self.disk.is_none() && self.kernel.is_none() {
            return Err(SpecError::NothingToBoot);
        }
        if self.kernel.is_none() {
            if self.initrd.is_some() {
                return Err(SpecError::NeedsKernel("initrd"));
            }
            if self.append.is_some() {
                return Err(SpecError::NeedsKernel("append"));
            }
        }
        for (field, path) in [
            ("disk", &self.disk),
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
        ] {
            match path {
                Some(path) if field == "disk" && !disk_exists => check_absolute(field, path)?,
                Some(path) => check_file(field, path)?,
                None => {}
            }
        }
        if let Some(append) = &self.append
            && append.contains(['\n', '\0'])
        {
            return Err(SpecError::Append("no newlines or NUL bytes"));
        }
        if let Some(disk) = &self.disk
            && disk.to_string_lossy().contains(',')
        {
            // QEMU's -drive option syntax would split the path at the comma.
            return Err(SpecError::MissingFile {
                field: "disk",
                path: format!("{} (commas are not supported)", disk.display()),
            });
        }
        Ok(())
    }
}

/// Checks a VM name.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_owned()))
    }
}

fn check_absolute(field: &'static str, path: &Path) -> Result<(), SpecError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(SpecError::RelativePath {
            field,
            path: path.display().to_string(),
        })
    }
}

fn check_file(field: &'static str, path: &Path) -> Result<(), SpecError> {
    check_absolute(field, path)?;
    if std::fs::File::open(path).is_err() || !path.is_file() {
        return Err(SpecError::MissingFile {
            field,
            path: path.display().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_kernel(name: &str) -> (VmSpec, tempfile::NamedTempFile) {
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let mut spec = VmSpec::named(name);
        spec.kernel = Some(kernel.path().to_owned());
        (spec, kernel)
    }

    #[test]
    fn a_complete_spec_is_valid_and_defaults_apply() {
        let (spec, _k) = with_kernel("guest-1");
        spec.validate().unwrap();
        let parsed: VmSpec = serde_json::from_str(r#"{"name":"a","kernel":"/k"}"#).unwrap();
        assert_eq!(parsed.vcpus, 1);
        assert_eq!(parsed.memory_mib, 256);
        assert_eq!(parsed.network, Network::None);
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "-a", "A", "a_b", "a b", "a/b", "x".repeat(33).as_str()] {
            let (spec, _k) = with_kernel(bad);
            assert_eq!(spec.validate(), Err(SpecError::Name(bad.into())), "{bad}");
        }
        for good in ["a", "0", "web-1", "x".repeat(32).as_str()] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn sizes_are_checked() {
        let (mut spec, _k) = with_kernel("a");
        spec.vcpus = 0;
        assert_eq!(spec.validate(), Err(SpecError::Vcpus(0)));
        spec.vcpus = 65;
        assert_eq!(spec.validate(), Err(SpecError::Vcpus(65)));
        spec.vcpus = 2;
        spec.memory_mib = 31;
        assert_eq!(spec.validate(), Err(SpecError::Memory(31)));
        assert!(spec.validate().unwrap_err().to_string().contains("32..="));
    }

    #[test]
    fn a_disk_still_to_arrive_need_not_exist_but_must_be_absolute() {
        let mut spec = VmSpec::named("a");
        spec.disk = Some("/nonexistent/vms/a/root.raw".into());
        spec.validate_awaiting_disk().unwrap();
        assert!(matches!(
            spec.validate(),
            Err(SpecError::MissingFile { field: "disk", .. })
        ));
        spec.disk = Some("root.raw".into());
        assert!(matches!(
            spec.validate_awaiting_disk(),
            Err(SpecError::RelativePath { field: "disk", .. })
        ));
    }

    #[test]
    fn something_must_boot() {
        let spec = VmSpec::named("a");
        assert_eq!(spec.validate(), Err(SpecError::NothingToBoot));
        let disk = tempfile::NamedTempFile::new().unwrap();
        let mut spec = VmSpec::named("a");
        spec.disk = Some(disk.path().to_owned());
        spec.validate().unwrap();
        spec.initrd = Some(disk.path().to_owned());
        assert_eq!(spec.validate(), Err(SpecError::NeedsKernel("initrd")));
        spec.initrd = None;
        spec.append = Some("console=ttyS0".into());
        assert_eq!(spec.validate(), Err(SpecError::NeedsKernel("append")));
    }

    #[test]
    fn files_must_exist_and_be_absolute() {
        let (mut spec, _k) = with_kernel("a");
        spec.initrd = Some("/nonexistent/initrd.gz".into());
        let err = spec.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "Invalid initrd: /nonexistent/initrd.gz is not a readable file"
        );
        spec.initrd = Some("initrd.gz".into());
        assert!(matches!(
            spec.validate(),
            Err(SpecError::RelativePath {
                field: "initrd",
                ..
            })
        ));
        spec.initrd = Some("/tmp".into());
        assert!(matches!(
            spec.validate(),
            Err(SpecError::MissingFile {
                field: "initrd",
                ..
            })
        ));
    }

    #[test]
    fn append_may_not_hold_newlines() {
        let (mut spec, _k) = with_kernel("a");
        spec.append = Some("console=ttyS0\n-device x".into());
        assert!(matches!(spec.validate(), Err(SpecError::Append(_))));
    }

    #[test]
    fn unknown_fields_and_bad_network_are_refused_by_the_parser() {
        let err = serde_json::from_str::<VmSpec>(r#"{"name":"a","cpus":2}"#).unwrap_err();
        assert!(err.to_string().contains("cpus"), "{err}");
        let err = serde_json::from_str::<VmSpec>(r#"{"name":"a","network":"tap"}"#).unwrap_err();
        assert!(err.to_string().contains("tap"), "{err}");
    }
}
