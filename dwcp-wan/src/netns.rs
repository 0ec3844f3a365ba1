//! Network namespaces of emulated links: their names (`dwcpwan-<pid>-<n>-<role>`), creating
//! and deleting them with `ip netns`, entering one from a thread, running commands in
//! them, and removing those left behind by processes that died without tearing down.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::error::WanError;

/// Every namespace this crate creates starts with this.
pub const PREFIX: &str = "dwcpwan-";

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The name of one of instance `instance`'s namespaces in process `pid` (`role` is `a`, `r` or `b`).
pub fn name(pid: u32, instance: u64, role: char) -> String {
    format!("{PREFIX}{pid}-{instance}-{role}")
}

/// The pid that owns a namespace of ours, read from its name.
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The namespaces of ours that exist now.
pub fn existing() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    names.sort();
    names
}

/// Deletes the namespaces whose owning process is gone; returns their names.
pub fn remove_stale() -> Result<Vec<String>, WanError> {
    let stale: Vec<String> = existing()
        .into_iter()
        .filter(|name| owner(name).is_none_or(|pid| !alive(pid)))
        .collect();
    for name in &stale {
        if let Err(error) = delete(name) {
            // Another process cleaning up at the same time may have deleted it first.
            if std::path::Path::new(NETNS_DIR).join(name).exists() {
                return Err(error);
            }
        }
    }
    Ok(stale)
}

/// Creates namespace `name`.
pub fn create(name: &str) -> Result<(), WanError> {
    run(Command::new("ip").args(["netns", "add", name]))
}

/// Deletes namespace `name` (its interfaces go with it).
pub fn delete(name: &str) -> Result<(), WanError> {
    run(Command::new("ip").args(["netns", "delete", name]))
}

/// Runs `ip -n <netns> <args>`.
pub fn ip(netns: &str, args: &[&str]) -> Result<(), WanError> {
    run(Command::new("ip").args(["-n", netns]).args(args))
}

/// Runs `program args` inside `netns` through `ip netns exec`.
pub fn exec(netns: &str, program: &str, args: &[&str]) -> Result<(), WanError> {
    run(Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args))
}

/// Moves the calling thread into namespace `netns` (for good: use a dedicated thread).
pub fn enter(netns: &str) -> Result<(), WanError> {
    let error = |source| WanError::EnterNetns {
        netns: netns.to_owned(),
        source,
    };
    let file = File::open(format!("{NETNS_DIR}/{netns}")).map_err(error)?;
    // SAFETY: `file` is an open namespace file; setns only changes this thread's network
    // namespace and reads nothing from our memory.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(error(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs a command to completion; a failure carries the command line and its stderr.
pub fn run(command: &mut Command) -> Result<(), WanError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| WanError::Spawn { program, source })?;
    if !output.status.success() {
        return Err(WanError::Command {
            command: line,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        let name = name(4242, 7, 'r');
        assert_eq!(name, "dwcpwan-4242-7-r");
        assert_eq!(owner(&name), Some(4242));
        assert_eq!(owner("dwcpwan-x-1-a"), None);
        assert!(alive(std::process::id()));
    }

    #[test]
    fn a_failing_command_reports_its_line_and_stderr() {
        let error =
            run(Command::new("ip").args(["link", "show", "dev", "no-such-device-x"])).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("`ip link show dev no-such-device-x` failed"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
        let missing = run(&mut Command::new("dwcp-no-such-program")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("Cannot run `dwcp-no-such-program`"),
            "{missing}"
        );
    }
}
