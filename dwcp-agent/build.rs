//! Builds the kernel-side programs (`dwcp-ebpf`) with the pinned nightly through aya-build
//! and places the object in `OUT_DIR` for `include_bytes_aligned!`.

use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../dwcp-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain = nightly_channel(&toolchain_file)?;
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH: run `cargo xtask setup` first (it builds bpf-linker \
             against the LLVM of {toolchain})"
        ));
    }
    let root_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("Cannot find {}", ebpf_dir.display()))?;
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("Non-UTF-8 path {}", root_dir.display()))?;
    let package = aya_build::Package {
        name: "dwcp-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)).with_context(|| {
        format!("Building the eBPF programs with {toolchain} failed (run `cargo xtask setup`)")
    })
}

/// Reads `channel = "..."` from the eBPF crate's rust-toolchain.toml, the one place the
/// nightly is pinned.
fn nightly_channel(path: &Path) -> anyhow::Result<String> {
    let text =
        fs::read_to_string(path).with_context(|| format!("Cannot read {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("No `channel = \"...\"` in {}", path.display()))
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}
