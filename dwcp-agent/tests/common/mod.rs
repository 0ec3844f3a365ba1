//! Helpers shared by the integration tests: root check, network namespaces, the agent
//! process, a minimal HTTP client.

#![expect(dead_code, reason = "each test binary uses a different subset")]

pub mod counting_alloc;
pub mod migrate;
pub mod receiver;
pub mod vm;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Fails the test (never skips it) when not running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "This privileged test needs root (eBPF, network namespaces); run it via `cargo xtask test` as root"
    );
}

/// Runs a command to completion, failing the test with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("Cannot run {program} (run `cargo xtask setup`): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace made for one test and deleted when dropped (also on panic).
pub struct NetNs {
    /// Name under /run/netns.
    pub name: String,
}

impl NetNs {
    /// Creates `dwcp-<tag>-<pid>` with its loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!("dwcp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `nft -f -` inside the namespace with `script` on stdin.
    pub fn nft(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft (run `cargo xtask setup`)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a new thread that has entered the namespace; sockets it creates live
    /// there. Other threads of the process stay in the original namespace.
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: `file` is an open namespace file; setns affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Minimal HTTP/1.0 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The agent binary built for this test run.
pub fn agent_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dwcp-agent"))
}

/// A running `dwcp-agent run`, killed when dropped. Its stderr goes to a file.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// Log file (stderr).
    pub log: PathBuf,
    /// Its control socket (in the temporary directory unless `extra` names one).
    pub control_socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `--http-addr` on a free port plus `extra` arguments; `setup`
    /// may adjust the command (environment, user). Unless `extra` sets them, the state
    /// directory and the control socket are in a temporary directory of this agent.
    pub fn start(extra: &[&str], setup: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = Command::new(agent_bin());
        cmd.args(["run", "--http-addr", &http.to_string()])
            .args(extra);
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        let control_socket = match extra.iter().position(|a| *a == "--control-socket") {
            Some(at) => PathBuf::from(extra[at + 1]),
            None => {
                let socket = dir.path().join("agent.sock");
                cmd.arg("--control-socket").arg(&socket);
                socket
            }
        };
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        setup(&mut cmd);
        let child = cmd.spawn().expect("spawn dwcp-agent");
        Self {
            child,
            http,
            log,
            control_socket,
            _dir: dir,
        }
    }

    /// Waits until `/healthz` answers 200; fails with the log if the agent exits or hangs.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.http, "/healthz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Agent exited early ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Agent not ready after 30 s: {}", self.log_text());
    }

    /// GET /metrics body.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.http, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Sends SIGTERM and waits (up to 20 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "Agent ignored SIGTERM: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ids of the BPF programs a process holds open (from /proc/PID/fdinfo).
pub fn bpf_program_ids_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:bpf-prog" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            ids.push(id.trim().parse().expect("prog id"));
        }
    }
    ids
}

/// Ids of every BPF program loaded in the kernel.
pub fn loaded_program_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

impl Agent {
    /// Wraps an agent process started by the test itself.
    pub fn adopt(child: Child, http: SocketAddr, log: PathBuf) -> Self {
        Self {
            child,
            http,
            log,
            control_socket: PathBuf::from("/nonexistent/adopted-agent.sock"),
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}
