//! The guest's initramfs: busybox with a symlink per applet, `/init`, busybox init's
//! table, the power-button action, the kernel modules to load and the workload binary,
//! written as a `newc` cpio archive and gzip-compressed.
//!
//! ```text
//! /init                         files/init: mounts, insmod, exec /sbin/init
//! /etc/inittab                  files/inittab: acpid, the workload, shutdown step
//! /etc/acpi/PWRF/00000080       files/power-button: poweroff
//! /etc/dwcp/shutdown            files/shutdown: says DWCP-GUEST POWEROFF
//! /etc/dwcp/modules             modules to insmod, one path a line, dependencies first
//! /lib/modules/<release>/*.ko   those modules
//! /bin/busybox + applet links   from busybox-static
//! /bin/dwcp-guest-workload      the guest-workload crate, static
//! ```

use std::io::Write as _;

use anyhow::{Context as _, Result};
use flate2::{Compression, GzBuilder};

use super::{cpio::Writer, kernel::Module};

/// `/init`.
pub const INIT: &str = include_str!("files/init");
/// `/etc/inittab`.
pub const INITTAB: &str = include_str!("files/inittab");
/// `/etc/acpi/PWRF/00000080`.
pub const POWER_BUTTON: &str = include_str!("files/power-button");
/// `/etc/dwcp/shutdown`.
pub const SHUTDOWN: &str = include_str!("files/shutdown");
/// Where the workload binary goes (the inittab starts it from there).
pub const WORKLOAD_PATH: &str = "bin/dwcp-guest-workload";

/// Directories every guest has.
const DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "root",
    "var",
    "var/log",
    "var/run",
    "etc",
    "etc/acpi",
    "etc/acpi/PWRF",
    "etc/dwcp",
    "lib",
    "lib/modules",
];

/// What goes into the initramfs.
#[derive(Debug)]
pub struct Contents<'a> {
    /// The static busybox binary.
    pub busybox: &'a [u8],
    /// Where busybox's applets live (`busybox --list-full`, e.g. `bin/sh`).
    pub applets: &'a [String],
    /// The static workload binary.
    pub workload: &'a [u8],
    /// The kernel release the modules belong to.
    pub release: &'a str,
    /// Modules to load at boot, dependencies first.
    pub modules: &'a [Module],
}

/// The gzip-compressed cpio archive of `contents`.
pub fn build(contents: &Contents<'_>) -> Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new());
    for dir in DIRS {
        w.dir(dir, 0o755)?;
    }
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, INIT.as_bytes())?;
    w.file("etc/inittab", 0o644, INITTAB.as_bytes())?;
    w.file("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes())?;
    w.file("etc/dwcp/shutdown", 0o755, SHUTDOWN.as_bytes())?;
    w.file("bin/busybox", 0o755, contents.busybox)?;
    for applet in contents.applets {
        let applet = applet.trim_start_matches('/');
        if applet == "bin/busybox" || w.contains(applet) {
            continue;
        }
        if let Some((parent, _)) = applet.rsplit_once('/') {
            add_dirs(&mut w, parent)?;
        }
        w.symlink(applet, "/bin/busybox")?;
    }
    w.file(WORKLOAD_PATH, 0o755, contents.workload)?;
    let module_dir = format!("lib/modules/{}", contents.release);
    w.dir(&module_dir, 0o755)?;
    let mut list = String::new();
    for module in contents.modules {
        let path = format!("{module_dir}/{}.ko", module.name);
        w.file(&path, 0o644, &module.bytes)?;
        list.push_str(&format!("/{path}\n"));
    }
    w.file("etc/dwcp/modules", 0o644, list.as_bytes())?;
    let cpio = w.finish()?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(&cpio)
        .context("Cannot compress the initramfs")?;
    gz.finish().context("Cannot compress the initramfs")
}

/// Adds `dir` and its missing ancestors.
fn add_dirs(w: &mut Writer<Vec<u8>>, dir: &str) -> Result<()> {
    let mut path = String::new();
    for part in dir.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        if !w.contains(&path) {
            w.dir(&path, 0o755)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn holds_everything_in_the_listed_places() {
        let applets = [
            "bin/sh",
            "sbin/acpid",
            "usr/bin/env",
            "usr/libexec/x/odd",
            "bin/busybox",
        ]
        .map(str::to_owned);
        let module = Module {
            name: "button".into(),
            path: "lib/modules/r/kernel/drivers/acpi/button.ko".into(),
            bytes: b"ko".to_vec(),
        };
        let contents = Contents {
            busybox: b"bb",
            applets: &applets,
            workload: b"wl",
            release: "6.1.0-test",
            modules: &[module],
        };
        let gz = build(&contents).unwrap();
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut cpio)
            .unwrap();
        let text = String::from_utf8_lossy(&cpio);
        for name in [
            "init\0",
            "etc/inittab\0",
            "sbin/acpid\0",
            "usr/libexec/x/odd\0",
            "bin/dwcp-guest-workload\0",
            "lib/modules/6.1.0-test/button.ko\0",
            "etc/dwcp/modules\0",
            "dev/console\0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains("/lib/modules/6.1.0-test/button.ko\n"));
        assert_eq!(
            build(&contents).unwrap(),
            gz,
            "the same contents give the same bytes"
        );
    }
}
