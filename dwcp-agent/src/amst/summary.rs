//! What a finished transfer reports.

use serde::{Deserialize, Serialize};

/// Summary printed by `dwcp-agent send` (and as JSON with `--json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Payload bytes moved (excluding blocks the receiver already held).
    pub bytes: u64,
    /// Wall time of the transfer.
    pub seconds: f64,
    /// Payload bits per second.
    pub goodput_bps: f64,
    /// Data streams used at the end (the largest count for `auto`).
    pub streams: usize,
    /// Bytes the kernel counted on this process's sockets (`None` without probes).
    pub kernel_tx_bytes: Option<u64>,
    /// Retransmitted segments counted by the kernel (`None` without probes).
    pub retransmits: Option<u64>,
    /// CPU seconds of this process's threads, from the kernel (`None` without probes).
    pub cpu_seconds: Option<f64>,
    /// BLAKE3 digest of the whole content, as verified by the receiver.
    pub digest: String,
    /// Blocks skipped because the receiver already had them (resume).
    #[serde(default)]
    pub resumed_blocks: u64,
    /// Blocks sent again after a stream failed.
    #[serde(default)]
    pub resent_blocks: u64,
    /// Streams that failed during the transfer.
    #[serde(default)]
    pub failed_streams: usize,
    /// Payload send calls made with `MSG_ZEROCOPY` (streamed transfers).
    #[serde(default)]
    pub zerocopy_sends: u64,
    /// Zero-copy completions in which the kernel reported it copied after all (always
    /// on loopback and veth; zero-copy is then turned off for that stream).
    #[serde(default)]
    pub zerocopy_copied: u64,
    /// The codec of a streamed transfer (for `auto`, its last choice).
    #[serde(default)]
    pub codec: Option<String>,
    /// Why that codec (for `auto`, the adaptive choice's reason).
    #[serde(default)]
    pub codec_reason: Option<String>,
}

impl Summary {
    /// Human-readable lines.
    pub fn render(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "n/a (no probes)".into());
        let codec = match (&self.codec, &self.codec_reason) {
            (Some(codec), Some(reason)) => format!("\ncodec: {codec} ({reason})"),
            (Some(codec), None) => format!("\ncodec: {codec}"),
            _ => String::new(),
        };
        format!(
            "sent {} bytes in {:.2} s: {:.2} Gbit/s over {} streams\n\
             kernel: tx {} bytes, {} retransmits, agent CPU {} s\n\
             digest (BLAKE3, verified by receiver): {}\n\
             resumed blocks {}, resent blocks {}, failed streams {}\n\
             zero-copy sends {} (kernel copied {} completions){codec}",
            self.bytes,
            self.seconds,
            self.goodput_bps / 1e9,
            self.streams,
            opt(self.kernel_tx_bytes.map(|v| v.to_string())),
            opt(self.retransmits.map(|v| v.to_string())),
            opt(self.cpu_seconds.map(|v| format!("{v:.3}"))),
            self.digest,
            self.resumed_blocks,
            self.resent_blocks,
            self.failed_streams,
            self.zerocopy_sends,
            self.zerocopy_copied,
        )
    }
}
