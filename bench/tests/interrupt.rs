//! A `dwcp-bench` stopped by a signal stops the agents and iperf3 servers it started and
//! removes its temporary files.

mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::common::agent_binary;

/// Every process below `pid`, through `pgrep -P`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let listed = Command::new("pgrep")
            .args(["-P", &parent.to_string()])
            .output()
            .map(|out| out.stdout)
            .unwrap_or_default();
        for child in String::from_utf8_lossy(&listed)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            found.push(child);
            next.push(child);
        }
    }
    found
}

fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn sigterm_stops_the_agents_it_started_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["tmp", "recv"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let mut bench = Command::new(env!("CARGO_BIN_EXE_dwcp-bench"))
        .args(["transfer", "--size-mib", "64", "--rounds", "1000"])
        .args(["--streams", "1", "--goal-percent", "90"])
        .arg("--agent")
        .arg(agent_binary())
        .arg("--tmp-dir")
        .arg(dir.path().join("tmp"))
        .arg("--receive-dir")
        .arg(dir.path().join("recv"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the receiving agent (it runs for the whole benchmark).
    let deadline = Instant::now() + Duration::from_secs(60);
    let agents = loop {
        let agents: Vec<u32> = descendants(bench.id())
            .into_iter()
            .filter(|&p| command_name(p) == "dwcp-agent")
            .collect();
        if !agents.is_empty() {
            break agents;
        }
        assert!(Instant::now() < deadline, "No agent started within 60 s");
        assert!(
            bench.try_wait().unwrap().is_none(),
            "dwcp-bench exited early"
        );
        thread::sleep(Duration::from_millis(50));
    };
    thread::sleep(Duration::from_millis(500));
    let started = descendants(bench.id());
    let pid = libc::pid_t::try_from(bench.id()).unwrap();
    // SAFETY: kill(2) with the pid of our own running child and a valid signal.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("interrupted (signal 15)"), "{stderr}");
    // Its source file and its receive directory (with any partial file) are gone.
    for sub in ["tmp", "recv"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "dwcp-bench left {left:?}");
    }
    // Everything it had started is gone (reaped by init, or a zombie at most briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in started.iter().chain(&agents) {
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(
                Instant::now() < deadline,
                "Process {pid} ({}) still runs after dwcp-bench stopped",
                command_name(*pid)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}
