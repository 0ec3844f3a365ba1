//! bpf-linker, linked against the pinned eBPF nightly's own libLLVM.
//!
//! bpf-linker must use the same LLVM as the rustc that emits the eBPF bitcode. No prebuilt
//! binary is reachable here and Debian has no matching LLVM, so (recipe in the shared
//! `toolchain.md`) `LLVM_PREFIX` points at a folder whose `lib/libLLVM.so` links to the
//! nightly's `libLLVM.so.*`, and an rpath to the nightly's lib dir is baked into the
//! binary so that it finds that library at run time.
//!
//! The check: the `bpf-linker` on PATH reports [`VERSION`] and `ldd` resolves its libLLVM
//! into the nightly's lib dir.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::report::{Outcome, Report, installing};
use crate::{cmd, sys, toolchain::Toolchain};

/// The bpf-linker release to install.
const VERSION: &str = "0.13.0";

/// Name of the setup item.
const ITEM: &str = "bpf-linker 0.13.0";

/// Makes sure a correctly linked bpf-linker is on PATH, building it with the `host`
/// toolchain against the libLLVM of the `ebpf` nightly if needed.
pub fn ensure(report: &mut Report, host: &Toolchain, ebpf: &Toolchain) {
    report.record(ITEM, ensure_linked(host, ebpf));
}

/// Checks the bpf-linker on PATH and (re)installs it when it is missing or wrong.
fn ensure_linked(host: &Toolchain, ebpf: &Toolchain) -> Result<Outcome> {
    let lib_dir = nightly_lib_dir(ebpf)?;
    let why = match which::which("bpf-linker") {
        Ok(found) => match check(&found, &lib_dir) {
            Ok(()) => return Ok(Outcome::Present),
            Err(why) => format!("{} is unusable: {why}", found.display()),
        },
        Err(_) => "not on PATH".to_owned(),
    };
    installing(
        ITEM,
        &format!("{why}; building it against {}", lib_dir.display()),
    );
    install(host, &lib_dir)?;
    let installed = sys::cargo_bin()?.join("bpf-linker");
    check(&installed, &lib_dir)
        .map_err(|why| anyhow!("{} is still unusable: {why}", installed.display()))?;
    if let Ok(found) = which::which("bpf-linker")
        && !same_file(&found, &installed)
    {
        bail!(
            "{} shadows {} on PATH: remove it or reorder PATH",
            found.display(),
            installed.display()
        );
    }
    Ok(Outcome::Installed(format!(
        "installed {}, linked to {}",
        installed.display(),
        lib_dir.display()
    )))
}

/// The `lib` directory of the nightly's sysroot, which holds its `libLLVM.so.*`.
fn nightly_lib_dir(ebpf: &Toolchain) -> Result<PathBuf> {
    let sysroot = cmd::output(&mut cmd::new(
        "rustc",
        [ebpf.plus().as_str(), "--print", "sysroot"],
    ))?;
    Ok(PathBuf::from(sysroot.trim()).join("lib"))
}

/// The one `libLLVM.so.*` file in `lib_dir`.
fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("Cannot list {}", lib_dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("Cannot list {}", lib_dir.display()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("libLLVM.so.")
        {
            found.push(entry.path());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("No libLLVM.so.* in {}", lib_dir.display()),
        many => bail!("Several libLLVM.so.* in {}: {many:?}", lib_dir.display()),
    }
}

/// Builds and installs bpf-linker against the libLLVM in `lib_dir`, per the recipe.
fn install(host: &Toolchain, lib_dir: &Path) -> Result<()> {
    let home = sys::home()?;
    let prefix = home.join(".local/share/dwcp/bpf-linker-llvm");
    let link_dir = prefix.join("lib");
    fs::create_dir_all(&link_dir)
        .with_context(|| format!("Cannot create {}", link_dir.display()))?;
    let libllvm = find_libllvm(lib_dir)?;
    let link = link_dir.join("libLLVM.so");
    println!("$ ln -sf {} {}", libllvm.display(), link.display());
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("Cannot remove {}", link.display()))?;
    }
    symlink(&libllvm, &link).with_context(|| format!("Cannot create {}", link.display()))?;
    let plus = host.plus();
    let args = [
        &plus,
        "install",
        "bpf-linker",
        "--version",
        VERSION,
        "--locked",
        "--force",
    ];
    let mut cargo = cmd::new("cargo", args);
    cargo.current_dir(&home).env("LLVM_PREFIX", &prefix).env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()),
    );
    cmd::run(&mut cargo)
}

/// Checks that `bin` is bpf-linker [`VERSION`] loading its libLLVM from `lib_dir`;
/// otherwise says what is wrong.
fn check(bin: &Path, lib_dir: &Path) -> Result<(), String> {
    let version = cmd::probe(&mut cmd::new(bin, ["--version"])).ok_or("`--version` fails")?;
    if version.split_whitespace().nth(1) != Some(VERSION) {
        return Err(format!("it is `{}`, not {VERSION}", version.trim()));
    }
    let ldd = cmd::probe(&mut cmd::new("ldd", [bin])).ok_or("`ldd` fails on it")?;
    let line = ldd
        .lines()
        .find(|l| l.contains("libLLVM"))
        .ok_or("it does not load libLLVM dynamically")?;
    let resolved = line
        .split("=>")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .filter(|path| path.starts_with('/'))
        .ok_or_else(|| format!("libLLVM is not found at run time ({})", line.trim()))?;
    let dir = Path::new(resolved).parent().unwrap_or(Path::new("/"));
    if !same_file(dir, lib_dir) {
        return Err(format!(
            "it loads {resolved}, not the libLLVM in {}",
            lib_dir.display()
        ));
    }
    Ok(())
}

/// Whether `a` and `b` name the same file once symlinks are resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
