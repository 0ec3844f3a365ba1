//! Agent configuration: the types, their defaults and their validation.
//!
//! Parsing lives in [`file`](mod@file); command-line overrides are applied by the caller before
//! [`AgentConfig::validate`]. Unknown keys are refused so a typo never silently falls back
//! to a default.

pub mod file;

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

/// Errors of reading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Cannot read config file {path}")]
    Read {
        /// Path given.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad address).
    #[error("Invalid config file {path}: {message}")]
    Parse {
        /// Path given.
        path: String,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("Invalid value for {key}: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Default HTTP address for `/metrics` and `/healthz`.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9477";
/// Default DWCP data-plane address (used by the transport).
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:9478";
/// Default directory for the agent's state (VM records and disks).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dwcp";
/// Default path of the local control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/dwcp/agent.sock";
/// Longest unix socket path the kernel accepts (`sun_path` minus the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Configuration file read when present and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dwcp/agent.toml";

/// Whole agent configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory for the agent's state: `<state_dir>/vms/<name>/` per VM.
    pub state_dir: std::path::PathBuf,
    /// Unix socket of the local control API (VMs), created with mode 0600.
    pub control_socket: std::path::PathBuf,
    /// HTTP endpoint for metrics and health.
    pub http: HttpConfig,
    /// Data plane.
    pub transport: TransportConfig,
    /// Kernel probes.
    pub probes: ProbeConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[http]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to serve `/metrics` and `/healthz` on.
    pub addr: SocketAddr,
}

/// `[transport]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Address the DWCP data plane listens on.
    pub listen: SocketAddr,
    /// Directory incoming transfers are written to; receiving is off when unset.
    pub receive_dir: Option<std::path::PathBuf>,
    /// File holding the pre-shared key (at least 16 bytes); required to receive.
    pub psk_file: Option<std::path::PathBuf>,
}

/// `[probes]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Load the eBPF probes (they need root or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN).
    pub enabled: bool,
    /// How often the maps are drained into the metrics, in milliseconds.
    pub interval_ms: u64,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `tracing` syntax, e.g. `info` or `dwcp_agent=debug`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: DEFAULT_STATE_DIR.into(),
            control_socket: DEFAULT_CONTROL_SOCKET.into(),
            http: HttpConfig::default(),
            transport: TransportConfig::default(),
            probes: ProbeConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9477)),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9478)),
            receive_dir: None,
            psk_file: None,
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 1000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl ProbeConfig {
    /// The drain interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

impl AgentConfig {
    /// Checks values the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=60_000).contains(&self.probes.interval_ms) {
            return Err(ConfigError::Invalid {
                key: "probes.interval_ms",
                reason: format!("{} is outside 10..=60000", self.probes.interval_ms),
            });
        }
        if self.http.addr.port() != 0 && self.http.addr == self.transport.listen {
            return Err(ConfigError::Invalid {
                key: "transport.listen",
                reason: format!("{} is also http.addr", self.transport.listen),
            });
        }
        if self.transport.receive_dir.is_some() && self.transport.psk_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "transport.psk_file",
                reason: "required when transport.receive_dir is set (peers must authenticate)"
                    .into(),
            });
        }
        if let Some(dir) = &self.transport.receive_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::Invalid {
                key: "transport.receive_dir",
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        for (key, path) in [
            ("state_dir", &self.state_dir),
            ("control_socket", &self.control_socket),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        if self.state_dir.exists() && !self.state_dir.is_dir() {
            return Err(ConfigError::Invalid {
                key: "state_dir",
                reason: format!("{} exists and is not a directory", self.state_dir.display()),
            });
        }
        let socket_len = self.control_socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(ConfigError::Invalid {
                key: "control_socket",
                reason: format!(
                    "{} is {socket_len} bytes; unix sockets allow {MAX_SOCKET_PATH}",
                    self.control_socket.display()
                ),
            });
        }
        if self.control_socket.is_dir() {
            return Err(ConfigError::Invalid {
                key: "control_socket",
                reason: format!("{} is a directory", self.control_socket.display()),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: format!(
                    "{:?} is not a valid filter (try info or debug)",
                    self.log.level
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = AgentConfig::default();
        config.validate().unwrap();
        assert_eq!(config.http.addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(config.transport.listen.to_string(), DEFAULT_LISTEN_ADDR);
        assert_eq!(config.state_dir, std::path::Path::new(DEFAULT_STATE_DIR));
        assert_eq!(
            config.control_socket,
            std::path::Path::new(DEFAULT_CONTROL_SOCKET)
        );
    }

    #[test]
    fn state_dir_and_control_socket_are_checked() {
        let config = AgentConfig {
            state_dir: "relative/state".into(),
            ..AgentConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "Invalid value for state_dir: relative/state is not an absolute path"
        );

        let file = tempfile::NamedTempFile::new().unwrap();
        let config = AgentConfig {
            state_dir: file.path().to_owned(),
            ..AgentConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");

        let config = AgentConfig {
            control_socket: format!("/tmp/{}", "s".repeat(120)).into(),
            ..AgentConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("Invalid value for control_socket:"),
            "{err}"
        );
        assert!(err.contains("unix sockets allow 107"), "{err}");

        let config = AgentConfig {
            control_socket: "/tmp".into(),
            ..AgentConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn interval_out_of_range_is_refused() {
        let mut config = AgentConfig::default();
        config.probes.interval_ms = 0;
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("probes.interval_ms"), "{err}");
    }

    #[test]
    fn same_http_and_listen_address_is_refused() {
        let mut config = AgentConfig::default();
        config.transport.listen = config.http.addr;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("transport.listen")
        );
    }

    #[test]
    fn bad_log_filter_is_refused() {
        let mut config = AgentConfig::default();
        config.log.level = "info,=[".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("log.level")
        );
    }
}
