//! `dwcp-guest-workload`: the program the test guest's `/init` starts. Reads the
//! `dwcp.*` options of `/proc/cmdline` (or of its first argument, to try it on a host),
//! starts the heartbeat and runs the chosen workload forever; see the library's docs for
//! the command line and the console lines.

use std::{convert::Infallible, fs, path::Path, process::ExitCode};

use guest_workload::{
    PAGE_SIZE,
    cmdline::{self, CmdlineError, Config, Workload},
    compress::{Compress, CompressError},
    dirty::Pages,
    heartbeat,
    memory::{self, MemoryError},
    say,
    table::{RECORD_BYTES, Table},
    verify::Engine,
};

/// Why the workload cannot start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The kernel command line could not be read.
    #[error("Cannot read /proc/cmdline")]
    ReadCmdline(#[source] std::io::Error),
    /// A `dwcp.*` option is wrong.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// Not enough memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The heartbeat thread could not be started.
    #[error("Cannot start the heartbeat thread")]
    Heartbeat(#[source] std::io::Error),
    /// The compress workload could not set up its directory.
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Where `compress` works (tmpfs in the guest).
const COMPRESS_DIR: &str = "/tmp/dwcp-compress";
/// What `compress` archives along with its text.
const COMPRESS_EXTRA: &str = "/bin";
/// Seed for the order in which units are dirtied.
const SEED: u64 = 0x5EED_D3C9;

fn main() -> ExitCode {
    match start() {
        Ok(never) => match never {},
        Err(err) => {
            let mut line = format!("DWCP-GUEST ERROR {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                line.push_str(&format!(": {s}"));
                source = s.source();
            }
            say(line);
            ExitCode::from(2)
        }
    }
}

/// Reads the settings and runs the workload; returns only on error.
fn start() -> Result<Infallible, StartError> {
    let text = match std::env::args().nth(1) {
        Some(arg) => arg,
        None => fs::read_to_string("/proc/cmdline").map_err(StartError::ReadCmdline)?,
    };
    let config = cmdline::parse(&text)?;
    memory::check_here(u64::from(config.mem_mib))?;
    heartbeat::start().map_err(StartError::Heartbeat)?;
    run(config)
}

/// Sets up the workload's memory, says READY and runs the workload.
fn run(config: Config) -> Result<Infallible, StartError> {
    let mem_bytes = u64::from(config.mem_mib) << 20;
    let mem = usize::try_from(mem_bytes).unwrap_or(usize::MAX);
    let rate = u64::from(config.rate_mib_s) << 20;
    let ready = || {
        say(format!(
            "DWCP-GUEST READY workload={} mem_mib={}",
            config.workload, config.mem_mib
        ));
    };
    match config.workload {
        Workload::Idle => {
            ready();
            loop {
                std::thread::park();
            }
        }
        Workload::Compress => {
            let compress = Compress::new(
                Path::new(COMPRESS_DIR),
                Path::new(COMPRESS_EXTRA),
                mem_bytes,
            )?;
            ready();
            compress.run(say)
        }
        Workload::Table => {
            let engine = Engine::new(Table::new(mem / RECORD_BYTES, SEED), SEED);
            ready();
            engine.run(rate, |status| say(status))
        }
        Workload::Dirty => {
            let engine = Engine::new(Pages::new(mem / PAGE_SIZE), SEED);
            ready();
            engine.run(rate, |status| say(status))
        }
    }
}
