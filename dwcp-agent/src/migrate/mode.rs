//! What a client asks for: the migration mode and the request the API accepts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::protocol::messages::CodecChoice;

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
    /// Stream encoding: `hde` (default), `zstd`, `none`, or `auto` (HDE or raw per
    /// block, whichever is measured faster on this link).
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
    "hde".into()
}

/// The stream encoding named `name`, or why it is not one.
pub fn codec_choice(name: &str) -> Result<CodecChoice, String> {
    match name {
        "none" => Ok(CodecChoice::None),
        "zstd" => Ok(CodecChoice::Zstd { level: 1 }),
        // `auto` announces HDE and sends each block HDE-encoded or raw.
        "hde" | "auto" => Ok(CodecChoice::Hde {
            config: dwcp_hde::HdeConfig::default(),
        }),
        other => Err(format!(
            "{other:?} is not a codec (hde, zstd, none or auto)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_to_live_with_hde() {
        let request: MigrateRequest = serde_json::from_str(r#"{"to":"10.0.0.2:9478"}"#).unwrap();
        assert_eq!(request.mode, MigrationMode::Live);
        assert_eq!(request.codec, "hde");
        assert!(matches!(
            codec_choice(&request.codec),
            Ok(CodecChoice::Hde { .. })
        ));
        let err = serde_json::from_str::<MigrateRequest>(r#"{"to":"x","mode":"hot"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `hot`"), "{err}");
        assert_eq!(
            codec_choice("lz4").unwrap_err(),
            "\"lz4\" is not a codec (hde, zstd, none or auto)"
        );
        assert_eq!("warm".parse::<MigrationMode>(), Ok(MigrationMode::Warm));
        assert!("Warm".parse::<MigrationMode>().is_err());
    }
}
