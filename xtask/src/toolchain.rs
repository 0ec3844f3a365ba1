//! The two pinned Rust toolchains, read from their `rust-toolchain.toml` files so that the
//! channel names are written down exactly once: the host toolchain (workspace root) and
//! the eBPF nightly with `rust-src` (`dwcp-ebpf/rust-toolchain.toml`).

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use crate::cmd;

/// The contents of a `rust-toolchain.toml` file.
#[derive(Debug, Deserialize)]
struct File {
    /// The `[toolchain]` table.
    toolchain: Toolchain,
}

/// One pinned toolchain: a `[toolchain]` table of a `rust-toolchain.toml` file.
#[derive(Debug, Deserialize)]
pub struct Toolchain {
    /// Channel, e.g. `1.98` or `nightly-2026-08-20`.
    pub channel: String,
    /// Components installed on top of the profile.
    #[serde(default)]
    pub components: Vec<String>,
    /// Targets installed besides the host's own.
    #[serde(default)]
    pub targets: Vec<String>,
    /// rustup profile (`minimal` unless the file says otherwise).
    #[serde(default = "minimal")]
    pub profile: String,
}

/// The default rustup profile for our toolchains.
fn minimal() -> String {
    "minimal".to_owned()
}

impl Toolchain {
    /// The host toolchain, from `<root>/rust-toolchain.toml`.
    pub fn host(root: &Path) -> Result<Self> {
        Self::read(&root.join("rust-toolchain.toml"))
    }

    /// The eBPF nightly, from `<root>/dwcp-ebpf/rust-toolchain.toml`.
    pub fn ebpf(root: &Path) -> Result<Self> {
        Self::read(&root.join("dwcp-ebpf").join("rust-toolchain.toml"))
    }

    /// Reads the `[toolchain]` table of `path`.
    fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("Cannot read {}", path.display()))?;
        let file: File =
            toml::from_str(&text).with_context(|| format!("Cannot parse {}", path.display()))?;
        Ok(file.toolchain)
    }

    /// Adds `component` to the components to install, if it is not listed yet.
    pub fn with_component(mut self, component: &str) -> Self {
        if !self.components.iter().any(|c| c == component) {
            self.components.push(component.to_owned());
        }
        self
    }

    /// Adds `target` to the targets to install, if it is not listed yet.
    pub fn with_target(mut self, target: &str) -> Self {
        if !self.targets.iter().any(|t| t == target) {
            self.targets.push(target.to_owned());
        }
        self
    }

    /// Those of `wanted` that rustup does not list as installed for this toolchain.
    pub fn missing_targets(&self, wanted: &[impl AsRef<str>]) -> Result<Vec<String>> {
        let installed = cmd::output(&mut cmd::new(
            "rustup",
            [
                "target",
                "list",
                "--installed",
                "--toolchain",
                &self.channel,
            ],
        ))?;
        Ok(wanted
            .iter()
            .map(AsRef::as_ref)
            .filter(|t| !installed.lines().any(|l| l.trim() == *t))
            .map(str::to_owned)
            .collect())
    }

    /// The `+<channel>` argument selecting this toolchain for a rustup proxy.
    pub fn plus(&self) -> String {
        format!("+{}", self.channel)
    }

    /// Whether rustup lists this toolchain as installed for the `host` triple.
    pub fn is_installed(&self, host: &str) -> bool {
        let full = format!("{}-{host}", self.channel);
        cmd::probe(&mut cmd::new("rustup", ["toolchain", "list"])).is_some_and(|list| {
            list.lines()
                .filter_map(|line| line.split_whitespace().next())
                .any(|name| name == self.channel || name == full)
        })
    }

    /// The components of the file that rustup does not list as installed.
    pub fn missing_components(&self, host: &str) -> Result<Vec<String>> {
        let installed = cmd::output(&mut cmd::new(
            "rustup",
            [
                "component",
                "list",
                "--installed",
                "--toolchain",
                &self.channel,
            ],
        ))?;
        let has = |c: &str| {
            let full = format!("{c}-{host}");
            installed.lines().any(|l| l.trim() == c || l.trim() == full)
        };
        Ok(self
            .components
            .iter()
            .filter(|c| !has(c))
            .cloned()
            .collect())
    }
}

/// The host target triple, as the active `rustc` reports it.
pub fn host_triple() -> Result<String> {
    let info = cmd::output(&mut cmd::new("rustc", ["-vV"]))?;
    info.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|triple| triple.trim().to_owned())
        .context("`rustc -vV` did not report a host triple")
}
