//! What benchmarks send: random files and keys.

use std::{fs::File, io::Write as _, path::Path};

use anyhow::Context as _;
use rand::RngCore as _;

/// 32 random hex characters.
pub fn random_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `size` random bytes to `path` and flushes them to disk (so their write-back
/// does not land in the first round).
pub fn write_random(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = File::create(path).with_context(|| format!("Create {}", path.display()))?;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("Sync {}", path.display()))?;
    Ok(())
}
