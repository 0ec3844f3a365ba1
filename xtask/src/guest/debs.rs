//! The Debian packages the guest is made of: which ones (the kernel that
//! `linux-image-amd64` depends on, and `busybox-static`), at which version (apt's
//! candidate), downloaded once with `apt-get download` into a cache folder, and read
//! file by file from their data archive (`dpkg-deb --fsys-tarfile`).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, sys};

/// The meta-package whose exact dependency names the current kernel package.
pub const KERNEL_META: &str = "linux-image-amd64";
/// The package holding a statically linked busybox.
pub const BUSYBOX: &str = "busybox-static";

/// A downloaded package.
#[derive(Debug, Clone)]
pub struct Deb {
    /// Package name.
    pub package: String,
    /// Package version (with epoch, as dpkg writes it).
    pub version: String,
    /// The cached `.deb` file.
    pub path: PathBuf,
}

/// A package at the version apt would install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
}

/// The kernel package `linux-image-amd64` depends on (e.g. `linux-image-6.1.0-56-amd64`)
/// and `busybox-static`, at apt's candidate versions, from one `apt-cache show` (apt's
/// binary cache is kept in `cache_dir`, so repeated look-ups are quick). Runs
/// `apt-get update` once (as root) if apt does not know the packages yet.
pub fn resolve(cache_dir: &Path) -> Result<(Wanted, Wanted)> {
    fs::create_dir_all(cache_dir)
        .with_context(|| format!("Cannot create {}", cache_dir.display()))?;
    let pkgcache = format!(
        "Dir::Cache::pkgcache={}",
        cache_dir.join("apt-pkgcache.bin").display()
    );
    let show = || {
        let mut cmd = cmd::new("apt-cache", ["-o", &pkgcache, "show", "--no-all-versions"]);
        cmd.args([KERNEL_META, BUSYBOX]);
        cmd::probe(&mut cmd).and_then(|text| parse_show(&text))
    };
    if let Some(found) = show() {
        return Ok(found);
    }
    if sys::is_root() {
        let mut update = cmd::new("apt-get", ["update"]);
        update.env("DEBIAN_FRONTEND", "noninteractive");
        cmd::run(&mut update)?;
        if let Some(found) = show() {
            return Ok(found);
        }
    }
    bail!(
        "apt cannot show `{KERNEL_META}` and `{BUSYBOX}` with an exact kernel dependency \
         (run `apt-get update` as root)"
    )
}

/// The kernel dependency of `linux-image-amd64` (`Depends: linux-image-X (= V)`) and the
/// version of `busybox-static` in `apt-cache show` output.
pub fn parse_show(text: &str) -> Option<(Wanted, Wanted)> {
    let mut kernel = None;
    let mut busybox = None;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        match field("Package") {
            Some(KERNEL_META) => {
                let depends = field("Depends")?;
                kernel = depends.split(',').find_map(|dep| {
                    let (name, version) = dep.trim().split_once(" (= ")?;
                    let version = version.strip_suffix(')')?;
                    name.starts_with("linux-image-").then(|| Wanted {
                        package: name.to_owned(),
                        version: version.to_owned(),
                    })
                });
            }
            Some(BUSYBOX) => {
                busybox = field("Version").map(|v| Wanted {
                    package: BUSYBOX.to_owned(),
                    version: v.to_owned(),
                });
            }
            _ => {}
        }
    }
    Some((kernel?, busybox?))
}

/// `wanted` from `dir` if a matching `.deb` is there, else downloaded into it.
pub fn fetch(dir: &Path, wanted: &Wanted) -> Result<Deb> {
    let Wanted { package, version } = wanted;
    let (package, version) = (package.as_str(), version.clone());
    fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    if let Some(path) = cached(dir, package, &version)? {
        return Ok(Deb {
            package: package.to_owned(),
            version,
            path,
        });
    }
    // Download into a fresh folder and move the file over, so an interrupted download
    // never leaves a partial `.deb` where the cache would find it.
    let partial = dir.join(".download");
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("Cannot clear {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("Cannot create {}", partial.display()))?;
    let mut download = cmd::new("apt-get", ["download", &format!("{package}={version}")]);
    download.current_dir(&partial);
    cmd::run(&mut download)?;
    let mut files = fs::read_dir(&partial)?.collect::<Result<Vec<_>, _>>()?;
    let [file] = files.as_mut_slice() else {
        bail!(
            "`apt-get download {package}` left {} files, not one",
            files.len()
        );
    };
    let path = dir.join(file.file_name());
    fs::rename(file.path(), &path).with_context(|| format!("Cannot move {}", path.display()))?;
    fs::remove_dir(&partial).ok();
    Ok(Deb {
        package: package.to_owned(),
        version,
        path,
    })
}

/// A `.deb` in `dir` that is `package` at `version`, if any.
fn cached(dir: &Path, package: &str, version: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("Cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with(&prefix) || !name.ends_with(".deb") {
            continue;
        }
        let fields = cmd::probe(&mut cmd::new(
            "dpkg-deb",
            [
                std::ffi::OsStr::new("-f"),
                path.as_os_str(),
                "Package".as_ref(),
                "Version".as_ref(),
            ],
        ));
        let wanted = format!("Package: {package}\nVersion: {version}\n");
        if fields.as_deref() == Some(wanted.as_str()) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Calls `visit` with the path (without the leading `./`) and a reader of every regular
/// file in `deb`'s data archive.
pub fn for_each_file(
    deb: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("Cannot start `dpkg-deb`")?;
    let stdout = child
        .stdout
        .take()
        .context("dpkg-deb has no standard output")?;
    let mut archive = tar::Archive::new(stdout);
    let walked = (|| -> Result<()> {
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            let path = path.trim_start_matches("./").to_owned();
            visit(&path, &mut entry)?;
        }
        Ok(())
    })();
    // Drain what is left, so dpkg-deb is not killed by a broken pipe.
    std::io::copy(archive.into_inner().by_ref(), &mut std::io::sink()).ok();
    let out = child
        .wait_with_output()
        .context("Cannot wait for `dpkg-deb`")?;
    walked.with_context(|| format!("Cannot read the files of {}", deb.display()))?;
    if !out.status.success() {
        bail!(
            "`dpkg-deb --fsys-tarfile {}` failed ({}): {}",
            deb.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kernel_and_busybox_from_apt_cache_show() {
        let text = "Package: linux-image-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: x\n\n\
                    Package: busybox-static\nVersion: 1:1.35.0-4\n";
        let (kernel, busybox) = parse_show(text).unwrap();
        assert_eq!(
            (kernel.package.as_str(), kernel.version.as_str()),
            ("linux-image-6.1.0-56-amd64", "6.1.192-2")
        );
        assert_eq!(busybox.version, "1:1.35.0-4");
        // Without an exact kernel dependency, or without busybox, there is nothing to use.
        assert_eq!(
            parse_show(
                "Package: linux-image-amd64\nDepends: linux-image-6.1 (>= 1)\n\nPackage: busybox-static\nVersion: 1\n"
            ),
            None
        );
        assert_eq!(
            parse_show("Package: linux-image-amd64\nDepends: linux-image-x (= 1)\n"),
            None
        );
        assert_eq!(parse_show(""), None);
    }

    #[test]
    fn reads_the_files_of_a_real_deb_and_refuses_other_files() {
        let dir = std::env::temp_dir().join(format!("dwcp-deb-test-{}", std::process::id()));
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        fs::create_dir_all(tree.join("bin")).unwrap();
        fs::write(
            tree.join("DEBIAN/control"),
            "Package: dwcp-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n\
             Description: test\n",
        )
        .unwrap();
        fs::write(tree.join("bin/hello"), b"hello").unwrap();
        let deb = dir.join("dwcp-test_1.0_all.deb");
        let mut build = Command::new("dpkg-deb");
        build
            .args(["--build", "--root-owner-group"])
            .arg(&tree)
            .arg(&deb);
        assert!(build.output().unwrap().status.success());
        let mut seen = Vec::new();
        for_each_file(&deb, |path, reader| {
            let mut text = String::new();
            reader.read_to_string(&mut text)?;
            seen.push((path.to_owned(), text));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [("bin/hello".to_owned(), "hello".to_owned())]);
        let wanted = Wanted {
            package: "dwcp-test".into(),
            version: "1.0".into(),
        };
        assert_eq!(
            cached(&dir, &wanted.package, &wanted.version).unwrap(),
            Some(deb.clone())
        );
        assert_eq!(cached(&dir, "dwcp-test", "2.0").unwrap(), None);

        fs::write(&deb, b"not a deb").unwrap();
        let err = for_each_file(&deb, |_, _| Ok(())).unwrap_err();
        assert!(
            format!("{err:#}").contains("dwcp-test_1.0_all.deb"),
            "{err:#}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
