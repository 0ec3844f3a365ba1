//! One end of an emulated link: a network namespace with one address, and ways to run
//! programs and closures inside it.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::WanError;
use crate::netns;

/// A host at one end of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its network namespace (as `ip netns` names it).
    pub netns: String,
    /// Its address; the other host reaches it only through the emulated link.
    pub addr: Ipv4Addr,
}

impl Host {
    /// A command that runs `program` inside this host's namespace (`ip netns exec`);
    /// add arguments and run it as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(&self.netns)
            .arg(program);
        command
    }

    /// Runs `f` on a thread inside this host's namespace and returns its result; sockets
    /// it creates belong to the host (they keep working after `f` returns). A panic in
    /// `f` is resumed on the caller's thread.
    ///
    /// # Panics
    /// If the namespace cannot be entered, which cannot happen while the [`crate::WanLink`]
    /// that owns this host is alive (use [`Host::try_run_in`] otherwise).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.try_run_in(f) {
            Ok(value) => value,
            Err(error) => panic!("{error}: the link owning this host was torn down"),
        }
    }

    /// Like [`Host::run_in`], but failing to enter the namespace is an error.
    pub fn try_run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, WanError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns::enter(&self.netns)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}
