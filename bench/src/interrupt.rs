//! Ctrl-C, `kill` and hang-ups: stop every process the benchmark started, then exit.
//!
//! Benchmarks run agents, iperf3 servers and QEMU guests (some started by those agents).
//! Killed by a signal, `dwcp-bench` would leave them running, holding ports, memory and
//! network namespaces. [`install`] blocks `SIGINT`, `SIGTERM` and `SIGHUP` in every thread
//! (children start with an empty mask: the standard library resets it) and waits for
//! them on a thread of its own. On one, it sends `SIGTERM` to every descendant process
//! (found through `/proc/<pid>/task/<tid>/children`, deepest first), gives them a few
//! seconds, kills what is left, removes the temporary directories registered with
//! [`remove_on_signal`] (a tmpfs receive directory would otherwise keep its partial files
//! in memory) and exits with `128 + signal`.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::process;

/// How long descendants get to stop after `SIGTERM` before `SIGKILL`.
const GRACE: Duration = Duration::from_secs(5);

/// Directories to remove when a signal stops the benchmark.
static REMOVE_ON_SIGNAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes `dir` with everything in it if a signal stops the benchmark. On a normal exit
/// its owner cleans up (a `TempDir` removes itself), and a missing directory is skipped.
pub fn remove_on_signal(dir: &Path) {
    REMOVE_ON_SIGNAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.to_path_buf());
}

/// Blocks the signals in this thread (call it before starting any other) and starts the
/// thread that handles them.
pub fn install() -> anyhow::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for.
    let rc =
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("Cannot block SIGINT/SIGTERM");
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` is initialised and blocked in every thread; `signal` is a
            // valid out-pointer.
            if unsafe { libc::sigwait(&raw const set, &raw mut signal) } == 0 {
                stop_and_exit(signal);
            }
        })
        .context("Cannot start the signal thread")?;
    Ok(())
}

/// `SIGINT`, `SIGTERM` and `SIGHUP`.
fn signal_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset only adds valid signal numbers.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    }
}

fn stop_and_exit(signal: libc::c_int) -> ! {
    let pids = descendants(std::process::id());
    eprintln!(
        "\ndwcp-bench: interrupted (signal {signal}); stopping {} process(es) it started",
        pids.len()
    );
    // Deepest first: an agent's QEMU before the agent.
    for &pid in pids.iter().rev() {
        process::signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && pids.iter().any(|&p| is_running(p)) {
        thread::sleep(Duration::from_millis(50));
    }
    for &pid in &pids {
        if is_running(pid) {
            process::signal(pid, libc::SIGKILL);
        }
    }
    let dirs = std::mem::take(
        &mut *REMOVE_ON_SIGNAL
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for dir in dirs.iter().filter(|d| d.exists()) {
        if let Err(err) = std::fs::remove_dir_all(dir) {
            eprintln!("dwcp-bench: cannot remove {}: {err}", dir.display());
        }
    }
    std::process::exit(128 + signal);
}

/// Every process below `root`, parents before their children.
fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for child in children(pid) {
            if !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// The direct children of `pid`, from every one of its threads.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_children_and_grandchildren() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let shell_pid = shell.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut found = Vec::new();
        while Instant::now() < deadline {
            found = descendants(std::process::id());
            if found.len() >= 3 {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(found.contains(&shell_pid), "{found:?}");
        assert_eq!(descendants(shell_pid).len(), 2, "{found:?}");
        for &pid in found.iter().rev() {
            process::signal(pid, libc::SIGKILL);
        }
        shell.wait().unwrap();
        assert!(!is_running(shell_pid));
    }
}
