//! Helpers of the migration tests: agents that send and receive migrations (on loopback
//! or inside an emulated WAN link's namespaces), the dirtying guest, the guest's own
//! verdict on its memory, the migration API.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::vm::*;

/// An agent that can send and receive migrations, with its state and key.
pub struct Peer {
    pub agent: super::Agent,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Its DWCP listen address.
    pub listen: String,
    _reaper: QemuReaper,
}

/// Starts an agent on `dir/<tag>` receiving with the key in `psk`, on loopback.
pub fn peer(dir: &Path, tag: &str, psk: &Path) -> Peer {
    start_peer(dir, tag, psk, None)
}

/// Starts an agent inside `host`'s network namespace of an emulated WAN link, listening
/// on the host's address.
pub fn peer_in(dir: &Path, tag: &str, psk: &Path, host: &dwcp_wan::Host) -> Peer {
    start_peer(dir, tag, psk, Some(host))
}

/// A source and a destination agent at the two ends of a fresh emulated
/// `wan-1g-50ms-0.1pct` link, sharing the key `dir/psk`. Keep the link until the agents
/// are gone (drop them, then `link.stop()`).
pub struct WanPeers {
    pub link: dwcp_wan::WanLink,
    pub source: Peer,
    pub dest: Peer,
}

/// Starts [`WanPeers`] with their state, key and logs under `dir` (`src/`, `dst/`).
pub fn wan_peers(dir: &Path) -> WanPeers {
    let profile =
        dwcp_wan::profile::LinkProfile::builtin("wan-1g-50ms-0.1pct").expect("built-in profile");
    let link = dwcp_wan::WanLink::start(&profile).expect("emulated WAN link");
    let psk = key(dir, "psk", b'a');
    let source = peer_in(dir, "src", &psk, link.a());
    let dest = peer_in(dir, "dst", &psk, link.b());
    WanPeers { link, source, dest }
}

/// Starts an agent on `dir/<tag>`, in `host`'s namespace when given. There its HTTP port
/// is only reachable inside the namespace, so readiness is its control socket.
pub fn start_peer(dir: &Path, tag: &str, psk: &Path, host: Option<&dwcp_wan::Host>) -> Peer {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let state_dir = dir.join(tag);
    let receive = state_dir.join("incoming");
    std::fs::create_dir_all(&receive).expect("receive dir");
    let socket = state_dir.join("agent.sock");
    let addr = host.map_or_else(|| "127.0.0.1".to_owned(), |h| h.addr.to_string());
    let listen = format!("{addr}:{}", super::free_port());
    let reaper = QemuReaper(state_dir.clone());
    let netns =
        host.map(|h| std::fs::File::open(format!("/run/netns/{}", h.netns)).expect("netns file"));
    let in_netns = netns.is_some();
    let mut agent = super::Agent::start(
        &[
            "--no-probes",
            "--listen",
            &listen,
            "--state-dir",
            state_dir.to_str().expect("utf-8"),
            "--control-socket",
            socket.to_str().expect("utf-8"),
            "--receive-dir",
            receive.to_str().expect("utf-8"),
            "--psk-file",
            psk.to_str().expect("utf-8"),
        ],
        move |cmd| {
            if let Some(netns) = netns {
                // SAFETY: setns is async-signal-safe; the closure owns the namespace file.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        },
    );
    if !in_netns {
        agent.wait_ready();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "No control socket: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Peer {
        agent,
        state_dir,
        socket,
        listen,
        _reaper: reaper,
    }
}

pub fn key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, [byte; 32]).expect("psk");
    path
}

/// Creates `name` with the dirtying workload and starts it; waits for its first check.
///
/// The guest checks its 64 MiB continuously; `rate_mib_s` is how fast it also rewrites
/// them while a migration runs.
pub fn start_dirty_guest(peer: &Peer, name: &str, rate_mib_s: u32) {
    start_dirty_guest_with(peer, name, rate_mib_s, &[]);
}

/// [`start_dirty_guest`] with more `vm create` arguments (e.g. `--disk PATH`).
pub fn start_dirty_guest_with(peer: &Peer, name: &str, rate_mib_s: u32, extra: &[&str]) {
    let (kernel, initrd) = guest();
    let append =
        format!("console=ttyS0 dwcp.workload=dirty dwcp.mem_mib=64 dwcp.rate_mib_s={rate_mib_s}");
    let mut args = vec![
        "create",
        name,
        "--memory-mib",
        "192",
        "--kernel",
        kernel.to_str().expect("utf-8"),
        "--initrd",
        initrd.to_str().expect("utf-8"),
        "--append",
        &append,
    ];
    args.extend_from_slice(extra);
    cli(&peer.socket, &args).json();
    let started = cli(&peer.socket, &["start", name]).json();
    assert_eq!(started["state"], "running", "{started}");
    wait_serial(&peer.state_dir, name, "DWCP-VERIFY ok", BOOT_TIMEOUT);
}

/// Serial markers of a guest kernel that crashed.
pub const KERNEL_CRASH: [&str; 3] = ["Kernel panic", "Oops: ", "BUG: kernel NULL pointer"];

/// Asserts the moved guest checked its memory on the destination, found it intact
/// (`DWCP-VERIFY ok`) and keeps beating. A `DWCP-VERIFY FAIL`, a kernel crash or
/// silence fails the test. (Under TCG this holds because the VM driver sizes guest RAM
/// off QEMU 7.2's buggy dirty-bitmap fast path: `vm::process::TCG_MIGRATION_PAGE_KIB`.)
pub fn assert_intact(state_dir: &Path, vm: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = serial(state_dir, vm);
        assert!(
            !log.contains("DWCP-VERIFY FAIL"),
            "Guest memory damaged:\n{log}"
        );
        if let Some(line) = log
            .lines()
            .find(|l| KERNEL_CRASH.iter().any(|m| l.contains(m)))
        {
            panic!("{vm}'s kernel crashed on the destination: {line}\n{log}");
        }
        if log.contains("DWCP-VERIFY ok") {
            let beat = wait_heartbeat_after(state_dir, vm, None);
            wait_heartbeat_after(state_dir, vm, Some(beat));
            assert!(
                !serial(state_dir, vm).contains("DWCP-VERIFY FAIL"),
                "Guest memory damaged"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{vm} said nothing on the destination; it says:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The API's answer to `method path body` as (status, JSON).
pub fn call(peer: &Peer, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let client = dwcp_agent::api::client::ApiClient::new(&peer.socket);
    let (status, text) = client.raw(method, path, body).expect("request");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// Polls the migration report until it is final.
pub fn wait_migration_end(peer: &Peer, name: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, report) = call(peer, "GET", &format!("/v1/vms/{name}/migration"), None);
        assert_eq!(status, 200, "{report}");
        if report["phase"] == "completed" || report["phase"] == "rolled_back" {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "Migration still {report} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// No QEMU left that belongs to a VM directory under `state_dir`.
pub fn wait_no_qemu(state_dir: &Path, vm: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let dir = state_dir.join("vms").join(vm);
    while pid_of(&dir).is_some() {
        assert!(
            Instant::now() < deadline,
            "A QEMU for {vm} still runs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
