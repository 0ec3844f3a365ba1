//! Helpers shared by the bench's integration tests.

use std::path::{Path, PathBuf};

/// The agent binary the workspace built (debug preferred: the test run builds it).
pub fn agent_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("dwcp-agent"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "No dwcp-agent binary under {}: run `cargo build -p dwcp-agent` first",
                target.display()
            )
        })
}
