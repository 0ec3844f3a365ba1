//! `cargo xtask guest`: build the small Linux guest the VM tests and benchmarks boot.
//!
//! Made of Debian packages (the kernel `linux-image-amd64` depends on, and
//! `busybox-static`; both cached as `.deb`s) and of the `guest-workload` crate built
//! static for musl. Writes, into `<target>/dwcp-cache/guest/` (or `$DWCP_CACHE_DIR/guest/`):
//! `vmlinuz`, `initrd.gz` (see [`initramfs`] for its layout) and `guest.json` (see
//! [`manifest`]). When nothing that goes into the guest changed, it says so and writes
//! nothing (`--force` rebuilds anyway). Boot it with
//! `qemu-system-x86_64 -accel tcg -m 256 -kernel vmlinuz -initrd initrd.gz -append
//! 'console=ttyS0 dwcp.workload=dirty' -serial file:LOG -display none`; the command line
//! options and console lines are documented in the guest-workload crate.

mod cpio;
mod debs;
mod elf;
mod initramfs;
mod kernel;
mod manifest;
mod workload;

use std::{
    collections::BTreeMap,
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, sys, toolchain::Toolchain};
use manifest::{FileInfo, Manifest};

pub use workload::TARGET as WORKLOAD_TARGET;

/// Environment variable overriding the cache folder (the guest goes into its `guest/`).
pub const CACHE_ENV: &str = "DWCP_CACHE_DIR";

/// Modules the guest loads: the ACPI power button (so `system_powerdown` reaches acpid)
/// and evdev (the input device acpid reads it from). Built-in ones are skipped.
const MODULES: &[&str] = &["button", "evdev"];

/// The sources of this builder: a change to any of them changes the guest's inputs.
const BUILDER_SOURCES: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("cpio.rs"),
    include_str!("debs.rs"),
    include_str!("elf.rs"),
    include_str!("initramfs.rs"),
    include_str!("kernel.rs"),
    include_str!("manifest.rs"),
    include_str!("workload.rs"),
    initramfs::INIT,
    initramfs::INITTAB,
    initramfs::POWER_BUTTON,
    initramfs::SHUTDOWN,
];

/// Options of `cargo xtask guest`.
#[derive(Debug, Default, clap::Args)]
pub struct Options {
    /// Rebuild even if the guest is up to date.
    #[arg(long)]
    pub force: bool,
}

/// The folder the guest is written to.
pub fn guest_dir(root: &Path) -> PathBuf {
    let cache = env::var_os(CACHE_ENV)
        .map_or_else(|| sys::target_dir(root).join("dwcp-cache"), PathBuf::from);
    cache.join("guest")
}

/// Builds the guest unless it is up to date.
pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let root = sys::workspace_root()?;
    let host = Toolchain::host(&root)?;
    let out = guest_dir(&root);
    println!("==> guest ({})", out.display());
    let workload = workload::build(&root, &sys::target_dir(&root), &host)?;
    let debs_dir = out.join("debs");
    let (kernel_pkg, busybox_pkg) = debs::resolve(&debs_dir)?;
    let kernel_deb = debs::fetch(&debs_dir, &kernel_pkg)?;
    let busybox_deb = debs::fetch(&debs_dir, &busybox_pkg)?;
    let workload_sha = manifest::sha256(&workload);
    // A cached `.deb` is named by package and version (apt checked its hash when it
    // downloaded it), so those and its size identify it without hashing 70 MB each run.
    let kernel_id = deb_identity(&kernel_deb)?;
    let busybox_id = deb_identity(&busybox_deb)?;
    let inputs = manifest::fingerprint(
        [
            kernel_id.as_bytes(),
            busybox_id.as_bytes(),
            workload_sha.as_bytes(),
        ]
        .into_iter()
        .chain(BUILDER_SOURCES.iter().map(|s| s.as_bytes())),
    );
    if !opts.force
        && let Some(current) = manifest::read(&out)
        && manifest::is_current(&out, &current, &inputs)
    {
        println!(
            "guest: up to date ({} {}, busybox {}), nothing to do [{:.1} s]",
            current.kernel.package.package,
            current.kernel.package.version,
            current.busybox.version,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    println!("guest: reading {}", kernel_deb.path.display());
    let kernel_sha = manifest::sha256_file(&kernel_deb.path)?;
    let busybox_sha = manifest::sha256_file(&busybox_deb.path)?;
    let kernel = kernel::extract(&kernel_deb.path, MODULES)?;
    let busybox = read_busybox(&busybox_deb.path)?;
    let applets = busybox_applets(&out, &busybox)?;
    let initrd = initramfs::build(&initramfs::Contents {
        busybox: &busybox,
        applets: &applets,
        workload: &workload,
        release: &kernel.release,
        modules: &kernel.modules,
    })?;
    write_atomically(&out.join("vmlinuz"), &kernel.vmlinuz)?;
    write_atomically(&out.join("initrd.gz"), &initrd)?;
    let manifest = Manifest {
        inputs_sha256: inputs,
        kernel: manifest::Kernel {
            package: manifest::Package {
                package: kernel_deb.package,
                version: kernel_deb.version,
                deb_sha256: kernel_sha,
            },
            release: kernel.release.clone(),
        },
        busybox: manifest::Package {
            package: busybox_deb.package,
            version: busybox_deb.version,
            deb_sha256: busybox_sha,
        },
        workload: manifest::Workload {
            target: WORKLOAD_TARGET.to_owned(),
            sha256: workload_sha,
            bytes: workload.len() as u64,
        },
        modules: kernel.modules.iter().map(|m| m.path.clone()).collect(),
        builtin_modules: kernel.builtin.clone(),
        files: BTreeMap::from([
            ("vmlinuz".to_owned(), FileInfo::of(&kernel.vmlinuz)),
            ("initrd.gz".to_owned(), FileInfo::of(&initrd)),
        ]),
        built_at: manifest::now_utc(),
    };
    manifest::write(&out, &manifest)?;
    println!(
        "guest: built kernel {} ({}), busybox {}, modules [{}], initrd.gz {} KiB [{:.1} s]",
        kernel.release,
        manifest.kernel.package.version,
        manifest.busybox.version,
        kernel
            .modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        initrd.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Package, version and size of a cached `.deb`.
fn deb_identity(deb: &debs::Deb) -> Result<String> {
    let size = fs::metadata(&deb.path)
        .with_context(|| format!("Cannot read {}", deb.path.display()))?
        .len();
    Ok(format!("{} {} {size}", deb.package, deb.version))
}

/// The busybox binary of the `busybox-static` package.
fn read_busybox(deb: &Path) -> Result<Vec<u8>> {
    let mut busybox = None;
    debs::for_each_file(deb, |path, reader| {
        if path == "bin/busybox" {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            busybox = Some(bytes);
        }
        Ok(())
    })?;
    let busybox = busybox.with_context(|| format!("{} has no bin/busybox", deb.display()))?;
    if !elf::is_static(&busybox)? {
        bail!("The busybox of {} is not statically linked", deb.display());
    }
    Ok(busybox)
}

/// Where busybox puts its applets (`busybox --list-full`), from running the binary.
fn busybox_applets(out: &Path, busybox: &[u8]) -> Result<Vec<String>> {
    let path = out.join("busybox");
    write_atomically(&path, busybox)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    let list = cmd::output(&mut cmd::new(&path, ["--list-full"]));
    fs::remove_file(&path).ok();
    let applets: Vec<String> = list?.lines().map(str::to_owned).collect();
    for needed in [
        "bin/sh",
        "sbin/init",
        "sbin/acpid",
        "sbin/poweroff",
        "sbin/insmod",
        "bin/tar",
        "bin/gzip",
    ] {
        if !applets.iter().any(|a| a == needed) {
            bail!("busybox has no applet `{needed}`");
        }
    }
    Ok(applets)
}

/// Writes `data` to `path` through a temporary file in the same folder, so readers see
/// either the old or the new contents.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("An output path has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("An output path has no file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    fs::write(&tmp, data).with_context(|| format!("Cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("Cannot rename to {}", path.display()))?;
    Ok(())
}
