//! The whole-transfer digest: BLAKE3 over the XXH3-128 hashes of the blocks.
//!
//! `digest = BLAKE3("dwcp/1 blocks" | size (u64 LE) | block size (u64 LE) | H(0) | H(1) | ...)`
//! where `H(i)` is the XXH3-128 of block `i` (16 bytes, little-endian). XXH3 runs at
//! memory speed (AVX2, chosen at run time), where BLAKE3 over every byte cost a quarter
//! of the sender's CPU; BLAKE3 over the short list of block hashes keeps the digest
//! collision-resistant in the list. A raw data frame carries the low word of the same
//! XXH3-128 as its payload check (`protocol::frame::payload_check`), so each side hashes
//! a block once, while it is in memory anyway (the sender after reading it, the receiver
//! as it checks the frame), in the stream threads: no side needs an extra pass over the
//! file; only blocks skipped by a resume are read back and hashed. This digest checks
//! the transfer end to end (every block, in its place, once).

use std::{fs::File, os::unix::fs::FileExt as _, path::Path, sync::OnceLock};

use crate::protocol::frame::{PayloadHash, payload_hash};

/// Per-block hashes of one transfer, filled in any order by any thread.
#[derive(Debug)]
pub struct BlockHashes {
    size: u64,
    block_size: u64,
    hashes: Vec<OnceLock<PayloadHash>>,
}

impl BlockHashes {
    /// Room for the blocks of a `size`-byte transfer.
    pub fn new(size: u64, block_size: u64) -> Self {
        let blocks = usize::try_from(size.div_ceil(block_size.max(1))).unwrap_or(0);
        Self {
            size,
            block_size,
            hashes: (0..blocks).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records the hash of block `seq` (a resent block hashes the same; the first wins).
    pub fn record(&self, seq: u64, data: &[u8]) {
        self.set(seq, block_hash(data));
    }

    /// Records block `seq`'s hash, computed by the caller ([`block_hash`]).
    pub fn set(&self, seq: u64, hash: PayloadHash) {
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.hashes.get(i)) {
            let _ = slot.set(hash);
        }
    }

    /// Hashes the blocks still missing by reading them from `file`.
    pub fn fill_from(&self, file: &File) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for (i, slot) in self.hashes.iter().enumerate() {
            if slot.get().is_some() {
                continue;
            }
            let offset = i as u64 * self.block_size;
            let len = usize::try_from(self.block_size.min(self.size - offset)).unwrap_or(0);
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, offset)?;
            let _ = slot.set(block_hash(&buf));
        }
        Ok(())
    }

    /// The digest, hex; `None` while a block hash is missing.
    pub fn digest(&self) -> Option<String> {
        let mut h = blake3::Hasher::new();
        h.update(b"dwcp/1 blocks");
        h.update(&self.size.to_le_bytes());
        h.update(&self.block_size.to_le_bytes());
        for slot in &self.hashes {
            h.update(slot.get()?);
        }
        Some(h.finalize().to_hex().to_string())
    }
}

/// The per-block hash: XXH3-128, little-endian (the frame's payload hash).
pub fn block_hash(data: &[u8]) -> PayloadHash {
    payload_hash(data)
}

/// The digest of a streamed transfer, built block by block in stream order:
/// `BLAKE3("dwcp/1 stream" | len(0) (u32 LE) | H(0) | len(1) | H(1) | ...)`.
#[derive(Debug)]
pub struct StreamDigest(blake3::Hasher);

impl Default for StreamDigest {
    fn default() -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"dwcp/1 stream");
        Self(h)
    }
}

impl StreamDigest {
    /// Adds the next block of the stream.
    pub fn update(&mut self, block: &[u8]) {
        self.update_hashed(block.len(), &block_hash(block));
    }

    /// Adds the next block of the stream, `len` bytes whose [`block_hash`] the caller
    /// already took.
    pub fn update_hashed(&mut self, len: usize, hash: &PayloadHash) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.0.update(&len.to_le_bytes());
        self.0.update(hash);
    }

    /// The digest so far, hex.
    pub fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// Digest of a whole file for a given block size (reads it once).
pub fn file_digest(path: &Path, block_size: u64) -> std::io::Result<String> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let hashes = BlockHashes::new(size, block_size);
    hashes.fill_from(&file)?;
    hashes
        .digest()
        .ok_or_else(|| std::io::Error::other("Block hash missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_recording_does_not_matter_and_content_does() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let a = BlockHashes::new(10_000, 4096);
        let b = BlockHashes::new(10_000, 4096);
        for seq in [0u64, 1, 2] {
            let o = (seq * 4096) as usize;
            a.record(seq, &data[o..(o + 4096).min(10_000)]);
        }
        for seq in [2u64, 0, 1, 1] {
            let o = (seq * 4096) as usize;
            b.record(seq, &data[o..(o + 4096).min(10_000)]);
        }
        assert_eq!(a.digest(), b.digest());
        let c = BlockHashes::new(10_000, 4096);
        c.record(0, &[0; 4096]);
        c.record(1, &data[4096..8192]);
        c.record(2, &data[8192..]);
        assert_ne!(a.digest(), c.digest());
        assert_eq!(BlockHashes::new(10_000, 4096).digest(), None);
    }

    #[test]
    fn empty_transfer_has_a_digest() {
        assert!(BlockHashes::new(0, 4096).digest().is_some());
    }
}
