//! Reading the TOML configuration file.

use std::path::{Path, PathBuf};

use super::{AgentConfig, ConfigError, DEFAULT_CONFIG_PATH};

/// Parses TOML text; `origin` names the source in errors.
pub fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::Parse {
        path: origin.to_owned(),
        message: match err.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                let source = text.lines().nth(line - 1).unwrap_or("").trim();
                format!(
                    "line {line}, column {column}: {} (in `{source}`)",
                    err.message()
                )
            }
            None => err.message().to_owned(),
        },
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// The file to read: the explicit one, else the default path if it exists, else none.
pub fn resolve(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("", "t").unwrap(), AgentConfig::default());
    }

    #[test]
    fn full_file_parses() {
        let config = parse(
            "[http]\naddr = \"127.0.0.1:1\"\n[transport]\nlisten = \"[::]:2\"\n\
             [probes]\nenabled = false\ninterval_ms = 250\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.http.addr.port(), 1);
        assert_eq!(config.transport.listen.to_string(), "[::]:2");
        assert!(!config.probes.enabled);
        assert_eq!(config.log.format, super::super::LogFormat::Json);
    }

    #[test]
    fn state_dir_and_control_socket_parse_as_top_level_keys() {
        let config = parse(
            "state_dir = \"/srv/dwcp\"\ncontrol_socket = \"/run/x.sock\"\n[http]\naddr = \"127.0.0.1:1\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.state_dir, Path::new("/srv/dwcp"));
        assert_eq!(config.control_socket, Path::new("/run/x.sock"));
        let err = parse("state_dirs = \"/x\"\n", "t").unwrap_err().to_string();
        assert!(err.contains("state_dirs"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = parse("[http]\nadress = \"127.0.0.1:1\"\n", "agent.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("agent.toml") && msg.contains("adress"),
            "{msg}"
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse("[http]\n\naddr = 5\n", "t").unwrap_err().to_string();
        assert!(
            err.starts_with("Invalid config file t: line 3, column 8:"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_is_refused() {
        let err = parse("[http]\naddr = \"localhost:99999\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("addr"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/dwcp.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dwcp.toml"), "{err}");
    }
}
