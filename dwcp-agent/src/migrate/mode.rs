//! What a client asks for: the migration mode and the request the API accepts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a VM is moved.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Pause the VM, move device and RAM state once, resume it on the destination.
    Cold,
    /// Pre-copy while the VM runs for a few rounds, then pause it for the final sync
    /// however long that takes.
    Warm,
    /// Iterative pre-copy until the rest fits QEMU's downtime limit (300 ms), with
    /// auto-converge throttling the guest when it dirties faster than the link.
    #[default]
    Live,
}

impl MigrationMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Warm => "warm",
            Self::Live => "live",
        }
    }
}

impl std::str::FromStr for MigrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cold" => Ok(Self::Cold),
            "warm" => Ok(Self::Warm),
            "live" => Ok(Self::Live),
            other => Err(format!(
                "{other:?} is not a migration mode (cold, warm or live)"
            )),
        }
    }
}

/// The body of `POST /v1/vms/{name}/migrate`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination agent's DWCP address, `HOST:PORT`.
    pub to: String,
    /// How to move the VM.
    #[serde(default)]
    pub mode: MigrationMode,
    /// Stream encoding: `auto` (default: HDE or raw per block, whichever is faster on
    /// the measured link), `hde`, `zstd` or `none`.
    #[serde(default = "default_codec")]
    pub codec: String,
    /// Pre-shared key file of the destination (default: this agent's `transport.psk_file`).
    #[serde(default)]
    pub psk_file: Option<PathBuf>,
    /// Data streams (default 8).
    #[serde(default)]
    pub streams: Option<usize>,
    /// Give up and roll back after this many seconds (default 600).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

fn default_codec() -> String {
    "auto".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_to_live_with_the_auto_codec() {
        use crate::{amst::sender::SendOptions, protocol::messages::CodecChoice};
        let request: MigrateRequest = serde_json::from_str(r#"{"to":"10.0.0.2:9478"}"#).unwrap();
        assert_eq!(request.mode, MigrationMode::Live);
        assert_eq!(request.codec, "auto");
        let options = SendOptions::default().with_codec(&request.codec).unwrap();
        assert!(matches!(options.codec, CodecChoice::Hde { .. }));
        assert!(options.auto_codec);
        let hde = SendOptions::default().with_codec("hde").unwrap();
        assert!(matches!(hde.codec, CodecChoice::Hde { .. }) && !hde.auto_codec);
        let err = serde_json::from_str::<MigrateRequest>(r#"{"to":"x","mode":"hot"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `hot`"), "{err}");
        assert_eq!(
            SendOptions::default().with_codec("lz4").unwrap_err(),
            "\"lz4\" is not a codec (auto, hde, zstd, none)"
        );
        assert_eq!("warm".parse::<MigrationMode>(), Ok(MigrationMode::Warm));
        assert!("Warm".parse::<MigrationMode>().is_err());
    }
}
