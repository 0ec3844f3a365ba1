//! `cargo xtask install`: installs the release agent as a systemd service.
//!
//! Puts the binary in `<prefix>/bin`, the unit in `/etc/systemd/system` (its `ExecStart`
//! rewritten if the prefix is not `/usr/local`), and the example config as
//! `/etc/dwcp/agent.toml` unless that file already exists. Then verifies the unit and, if
//! systemd is running, reloads it. It never enables or starts the service itself.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};

use crate::{cmd, sys};

/// The binary path the unit file in the repository refers to.
const DEFAULT_BIN: &str = "/usr/local/bin/dwcp-agent";

/// Where the unit is installed.
const UNIT: &str = "/etc/systemd/system/dwcp-agent.service";

/// The agent's config directory and file.
const CONFIG_DIR: &str = "/etc/dwcp";

/// Exists only when systemd is PID 1.
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// Options of `cargo xtask install`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Installation prefix: the binary goes to `<prefix>/bin/dwcp-agent`.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install the existing `target/release/dwcp-agent` without building it first.
    #[arg(long)]
    pub no_build: bool,
}

/// Builds (unless disabled) and installs the agent, its unit and its config.
pub fn run(opts: &Options) -> Result<()> {
    ensure!(
        sys::is_root(),
        "Installing into /etc needs root: run `cargo xtask install` as root"
    );
    let root = sys::workspace_root()?;
    if !opts.no_build {
        cmd::run(&mut cmd::cargo(
            &root,
            ["build", "--release", "-p", "dwcp-agent"],
        ))?;
    }
    let built = sys::target_dir(&root).join("release").join("dwcp-agent");
    ensure!(
        built.is_file(),
        "{} does not exist: build it first",
        built.display()
    );
    let bin = opts.prefix.join("bin").join("dwcp-agent");
    let binary = fs::read(&built).with_context(|| format!("Cannot read {}", built.display()))?;
    install_file(&bin, &binary, 0o755)?;

    let systemd = root.join("dwcp-agent").join("systemd");
    let unit_src = systemd.join("dwcp-agent.service");
    let unit = fs::read_to_string(&unit_src)
        .with_context(|| format!("Cannot read {}", unit_src.display()))?;
    let unit = unit.replace(DEFAULT_BIN, &bin.to_string_lossy());
    install_file(Path::new(UNIT), unit.as_bytes(), 0o644)?;

    let config = Path::new(CONFIG_DIR).join("agent.toml");
    if config.exists() {
        println!("kept existing {}", config.display());
    } else {
        let example = systemd.join("agent.toml.example");
        let text =
            fs::read(&example).with_context(|| format!("Cannot read {}", example.display()))?;
        install_file(&config, &text, 0o644)?;
    }

    cmd::run(&mut cmd::new("systemd-analyze", ["verify", UNIT]))
        .context("The installed unit does not verify")?;
    if Path::new(SYSTEMD_RUNNING).exists() {
        cmd::run(&mut cmd::new("systemctl", ["daemon-reload"]))?;
        println!("installed; start it with: systemctl enable --now dwcp-agent");
    } else {
        println!("installed, but systemd is not running here (no {SYSTEMD_RUNNING}): not started");
    }
    Ok(())
}

/// Writes `contents` to `dest` with `mode`, through a temporary file renamed over it (so a
/// running binary can be replaced), creating the parent directory if needed.
fn install_file(dest: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = dest.parent().context("Install path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let tmp = dest.with_extension("xtask-new");
    fs::write(&tmp, contents).with_context(|| format!("Cannot write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("Cannot set the mode of {}", tmp.display()))?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("Cannot move {} to {}", tmp.display(), dest.display()))?;
    println!("installed {} (mode {mode:o})", dest.display());
    Ok(())
}
