//! Facts about the machine and the workspace that several subcommands need.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Whether this process runs as root (packages, mounts, eBPF and netns tests need it).
pub fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("The xtask crate has no parent directory")
}

/// Cargo's target directory for this workspace (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The user's home directory.
pub fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// Where `cargo install` puts binaries (`$CARGO_HOME/bin`, by default `~/.cargo/bin`).
pub fn cargo_bin() -> Result<PathBuf> {
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(".cargo"),
    };
    Ok(cargo_home.join("bin"))
}

/// Whether `dir` is one of the directories on `PATH`.
pub fn on_path(dir: &Path) -> bool {
    let wanted = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|p| p.canonicalize().unwrap_or(p) == wanted)
    })
}

/// Prints a warning on standard error.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// Prints a warning that cannot be missed in a long CI log.
pub fn warn_loudly(message: impl std::fmt::Display) {
    let rule = "!".repeat(78);
    eprintln!("{rule}\nWARNING: {message}\n{rule}");
}
