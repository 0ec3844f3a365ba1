//! Cold migration of a VM with a local disk between two real agents: the paused guest's
//! disk image goes over AMST into the destination VM's directory (byte-identical, the
//! spec pointing at the copy) before the destination QEMU starts with it; the guest then
//! reports its memory intact there. Killing the destination agent during the disk copy,
//! or the destination QEMU after it, rolls back: the source VM runs on with its disk
//! untouched, and neither a VM nor a disk file stays on the destination.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    io::{Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{migrate::*, vm::*};
use serde_json::Value;

/// Writes a raw image of `size` bytes at `path`: random bytes in `chunk`-sized pieces
/// every `stride` bytes, holes (zeros) between them; returns its BLAKE3 digest.
fn make_disk(path: &Path, size: u64, chunk: usize, stride: u64) -> String {
    let mut file = std::fs::File::create(path).expect("create disk image");
    file.set_len(size).expect("size disk image");
    let mut buf = vec![0u8; chunk];
    let mut offset = 0;
    while offset < size {
        rand::fill(&mut buf[..]);
        let len = usize::try_from((size - offset).min(chunk as u64)).expect("chunk fits");
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.write_all(&buf[..len]).expect("write disk image");
        offset += stride;
    }
    file.sync_all().expect("sync disk image");
    digest(path)
}

fn digest(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path).expect("open disk image");
    std::io::copy(&mut file, &mut hasher).expect("hash disk image");
    hasher.finalize().to_hex().to_string()
}

/// Starts the migration over the API; returns the accepted report.
fn start_cold(source: &Peer, vm: &str, to: &str) -> Value {
    let (status, report) = call(
        source,
        "POST",
        &format!("/v1/vms/{vm}/migrate"),
        Some(&format!(r#"{{"to":"{to}","mode":"cold"}}"#)),
    );
    assert_eq!(status, 202, "{report}");
    report
}

/// Polls the source's report until `phase` (or fails the test at the end of the move).
fn wait_phase(peer: &Peer, vm: &str, phase: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, report) = call(peer, "GET", &format!("/v1/vms/{vm}/migration"), None);
        assert_eq!(status, 200, "{report}");
        if report["phase"] == phase {
            return report;
        }
        assert!(
            report["phase"] != "completed" && report["phase"] != "rolled_back",
            "The migration ended before {phase}: {report}"
        );
        assert!(Instant::now() < deadline, "Still not {phase}: {report}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The source rolled back: the VM runs there again (heartbeats continue, memory
/// intact) with its own disk unchanged; the destination keeps no VM and no disk file,
/// also after its agent restarts. Returns the rollback reason.
fn assert_rolled_back(
    (source, dest): (&Peer, Option<&Peer>),
    vm: &str,
    (disk, sum): (&Path, &str),
    dest_dir: &Path,
) -> String {
    let report = wait_migration_end(source, vm, Duration::from_secs(180));
    assert_eq!(report["phase"], "rolled_back", "{report}");
    let reason = report["error"].as_str().expect("reason").to_owned();
    let here = state_of(&source.socket, vm);
    assert_eq!(here["state"], "running", "{here}");
    assert_eq!(here["spec"]["disk"].as_str(), disk.to_str(), "{here}");
    let beat = last_heartbeat(&source.state_dir, vm);
    wait_heartbeat_after(&source.state_dir, vm, beat);
    assert!(!serial(&source.state_dir, vm).contains("DWCP-VERIFY FAIL"));
    assert_eq!(digest(disk), sum, "the source's disk changed");
    if let Some(dest) = dest {
        let deadline = Instant::now() + Duration::from_secs(30);
        while dest_dir.exists() {
            assert!(
                Instant::now() < deadline,
                "{} left behind: {:?}",
                dest_dir.display(),
                std::fs::read_dir(dest_dir).map(|d| d.flatten().count())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, answer) = call(dest, "GET", &format!("/v1/vms/{vm}"), None);
        assert_eq!(status, 404, "{answer}");
    }
    reason
}

mod privileged {
    use super::*;

    #[test]
    fn cold_migration_moves_the_disk_with_the_guest() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = key(dir.path(), "psk", b'a');
        let source = peer(dir.path(), "src", &psk);
        let dest = peer(dir.path(), "dst", &psk);
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        let disk = images.join("data.raw");
        let sum = make_disk(&disk, 64 << 20, 1 << 20, 1 << 20);
        start_dirty_guest_with(
            &source,
            "carrier",
            4,
            &["--disk", disk.to_str().expect("utf-8")],
        );

        let accepted = start_cold(&source, "carrier", &dest.listen);
        assert_eq!(accepted["phase"], "copying_disk", "{accepted}");
        assert_eq!(accepted["disk"]["file"], "data.raw", "{accepted}");
        assert_eq!(accepted["disk"]["total_bytes"], 64 << 20, "{accepted}");
        let report = wait_migration_end(&source, "carrier", Duration::from_secs(180));
        eprintln!(
            "MEASURED cold with a 64 MiB disk: total {} s, downtime {} ms, wire {} bytes",
            report["total_seconds"], report["progress"]["downtime_ms"], report["wire_bytes"]
        );
        assert_eq!(
            report["phase"],
            "completed",
            "{report}\nsource log:\n{}\ndest log:\n{}",
            source.agent.log_text(),
            dest.agent.log_text()
        );
        assert_eq!(report["paused_by_agent"], true, "{report}");
        assert_eq!(report["disk"]["done_bytes"], 64 << 20, "{report}");
        let wire = report["wire_bytes"].as_u64().expect("wire bytes");
        assert!(wire > 64 << 20, "the disk counts on the wire: {report}");

        let left = state_of(&source.socket, "carrier");
        assert_eq!(left["state"], "stopped", "{left}");
        assert_eq!(left["stopped_by"], "migrated", "{left}");
        assert_eq!(digest(&disk), sum, "the source's disk changed");
        let arrived = state_of(&dest.socket, "carrier");
        assert_eq!(arrived["state"], "running", "{arrived}");
        let copy: PathBuf = dest.state_dir.join("vms/carrier/data.raw");
        assert_eq!(arrived["spec"]["disk"].as_str(), copy.to_str(), "{arrived}");
        assert_eq!(digest(&copy), sum, "the copied disk differs");
        assert_intact(&dest.state_dir, "carrier");
        cli(&dest.socket, &["stop", "carrier"]).json();
    }

    #[test]
    fn killing_the_destination_agent_during_the_disk_copy_rolls_back() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let WanPeers {
            link,
            source,
            mut dest,
        } = wan_peers(dir.path());
        let disk = dir.path().join("big.raw");
        // 512 MiB, 16 MiB of it random: over the emulated WAN the copy takes seconds.
        let sum = make_disk(&disk, 512 << 20, 1 << 20, 32 << 20);
        start_dirty_guest_with(
            &source,
            "anchor",
            4,
            &["--disk", disk.to_str().expect("utf-8")],
        );

        start_cold(&source, "anchor", &dest.listen);
        let copying = wait_phase(&source, "anchor", "copying_disk");
        let dest_dir = dest.state_dir.join("vms/anchor");
        let part = dest_dir.join(".big.raw.dwcp-part");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !part.exists() {
            assert!(
                Instant::now() < deadline,
                "The disk copy never began: {copying}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            pid_of(&dest_dir).is_none(),
            "the destination QEMU started before its disk arrived"
        );
        dest.agent.child.kill().expect("kill the destination agent");
        let _ = dest.agent.child.wait();

        let reason = assert_rolled_back((&source, None), "anchor", (&disk, &sum), &dest_dir);
        assert!(reason.contains("disk copy"), "{reason}");
        let report = state_of(&source.socket, "anchor")["migration"].clone();
        let done = report["disk"]["done_bytes"].as_u64().expect("done bytes");
        assert!(done < 512 << 20, "killed after the copy: {report}");
        // A restarted destination agent drops the half-received VM with its partial disk.
        let dest = peer_in(dir.path(), "dst", &dir.path().join("psk"), link.b());
        assert_rolled_back((&source, Some(&dest)), "anchor", (&disk, &sum), &dest_dir);
        cli(&source.socket, &["stop", "anchor"]).json();
        drop((source, dest));
        link.stop().expect("link teardown");
    }

    #[test]
    fn a_destination_qemu_dying_after_the_copy_removes_the_copied_disk() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let WanPeers { link, source, dest } = wan_peers(dir.path());
        let disk = dir.path().join("data.raw");
        let sum = make_disk(&disk, 64 << 20, 1 << 20, 1 << 20);
        start_dirty_guest_with(
            &source,
            "phoenix",
            16,
            &["--disk", disk.to_str().expect("utf-8")],
        );

        start_cold(&source, "phoenix", &dest.listen);
        let transferring = wait_phase(&source, "phoenix", "transferring");
        assert_eq!(
            transferring["disk"]["done_bytes"],
            64 << 20,
            "{transferring}"
        );
        let dest_dir = dest.state_dir.join("vms/phoenix");
        let copy = dest_dir.join(disk.file_name().expect("file name"));
        assert_eq!(digest(&copy), sum, "the copied disk differs");
        let pid = pid_of(&dest_dir).expect("the destination QEMU runs");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };

        assert_rolled_back((&source, Some(&dest)), "phoenix", (&disk, &sum), &dest_dir);
        cli(&source.socket, &["stop", "phoenix"]).json();
        drop((source, dest));
        link.stop().expect("link teardown");
    }
}
