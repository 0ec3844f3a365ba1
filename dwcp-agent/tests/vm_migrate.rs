//! VM migration between two real agents (on this host's loopback, or across an emulated
//! WAN link): a TCG guest that checks its memory continuously moves live, warm and cold
//! and keeps running on the destination; killing the destination agent mid-migration
//! (guest dirtying 16 MiB/s) rolls back; bad requests are refused with clear errors and
//! leave the VM running. After every migration the guest itself must report its
//! memory intact on the destination.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::time::{Duration, Instant};

use common::{migrate::*, vm::*};
use serde_json::Value;

/// Requests refused before any QEMU is involved: clear errors, nothing changed.
#[test]
fn requests_without_a_running_vm_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let psk = key(dir.path(), "psk", b'a');
    let source = peer(dir.path(), "src", &psk);
    // Never booted: any readable files do.
    let (kernel, initrd) = (dir.path().join("vmlinuz"), dir.path().join("initrd"));
    std::fs::write(&kernel, b"kernel").expect("kernel");
    std::fs::write(&initrd, b"initrd").expect("initrd");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk");
    let body = |to: &str| format!(r#"{{"to":"{to}"}}"#);

    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/ghost/migrate",
        Some(&body("127.0.0.1:1")),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("No VM named \"ghost\""))
    );

    cli(
        &source.socket,
        &[
            "create",
            "idle",
            "--kernel",
            kernel.to_str().expect("utf-8"),
            "--initrd",
            initrd.to_str().expect("utf-8"),
        ],
    )
    .json();
    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/idle/migrate",
        Some(&body(&source.listen)),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("Cannot migrate the VM while it is creating")),
    );
    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/idle/migrate",
        Some(r#"{"to":"127.0.0.1:1","mode":"hot"}"#),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .starts_with("Invalid migration request: unknown variant `hot`"),
        "{answer}"
    );
    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/idle/migrate",
        Some(&body("no-port")),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .starts_with("Bad destination \"no-port\""),
        "{answer}"
    );
    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/idle/migrate",
        Some(r#"{"to":"127.0.0.1:1","codec":"lz4"}"#),
    );
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        "Invalid migration request: \"lz4\" is not a codec (auto, hde, zstd, none)"
    );

    cli(
        &source.socket,
        &[
            "create",
            "disky",
            "--kernel",
            kernel.to_str().expect("utf-8"),
            "--disk",
            disk.to_str().expect("utf-8"),
        ],
    )
    .json();
    for mode in ["live", "warm"] {
        let (status, answer) = call(
            &source,
            "POST",
            "/v1/vms/disky/migrate",
            Some(&format!(r#"{{"to":"{}","mode":"{mode}"}}"#, source.listen)),
        );
        assert_eq!(status, 400);
        let msg = answer["error"].as_str().expect("error");
        assert!(
            msg.starts_with(&format!("VM disky has a local disk: {mode} migration")),
            "{answer}"
        );
        assert!(msg.contains("cold migration moves the disk"), "{msg}");
    }
    // Cold moves disks, but only of a running VM.
    let (status, answer) = call(
        &source,
        "POST",
        "/v1/vms/disky/migrate",
        Some(&format!(r#"{{"to":"{}","mode":"cold"}}"#, source.listen)),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("Cannot migrate the VM while it is creating")),
    );

    let (status, answer) = call(&source, "GET", "/v1/vms/idle/migration", None);
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("VM \"idle\" has never been migrated"))
    );
    assert_eq!(state_of(&source.socket, "idle")["state"], "creating");
}

mod privileged {
    use super::*;

    #[test]
    fn live_migration_moves_a_running_guest_that_checks_its_memory() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = key(dir.path(), "psk", b'a');
        let source = peer(dir.path(), "src", &psk);
        let dest = peer(dir.path(), "dst", &psk);
        start_dirty_guest(&source, "mover", 8);

        let began = Instant::now();
        let out = cli(
            &source.socket,
            &["migrate", "mover", "--to", &dest.listen, "--mode", "live"],
        );
        let took = began.elapsed();
        assert!(
            out.ok,
            "migrate failed: {}\n{}\nsource log:\n{}\ndest log:\n{}",
            out.stdout,
            out.stderr,
            source.agent.log_text(),
            dest.agent.log_text()
        );
        eprintln!(
            "MEASURED live migration ({took:.2?} by the CLI):\n{}",
            out.stdout
        );
        assert!(
            out.stdout
                .starts_with(&format!("mover migrated to {}", dest.listen)),
            "{}",
            out.stdout
        );

        let here = state_of(&source.socket, "mover");
        assert_eq!(here["state"], "stopped", "{here}");
        assert_eq!(here["stopped_by"], "migrated", "{here}");
        assert_eq!(here["migration"]["phase"], "completed", "{here}");
        let downtime = here["migration"]["progress"]["downtime_ms"]
            .as_u64()
            .expect("downtime");
        assert!(
            here["migration"]["wire_bytes"]
                .as_u64()
                .expect("wire bytes")
                > 0,
            "{here}"
        );
        assert!(
            pid_of(&source.state_dir.join("vms/mover")).is_none(),
            "source QEMU still runs"
        );

        let there = state_of(&dest.socket, "mover");
        assert_eq!(there["state"], "running", "{there}");
        assert_eq!(there["migration"]["direction"], "incoming", "{there}");
        // The guest goes on checking its memory on the destination: every check passes.
        assert_intact(&dest.state_dir, "mover");
        eprintln!("MEASURED downtime {downtime} ms (QEMU)");

        let metrics = source.agent.metrics();
        assert!(
            metrics.contains(r#"dwcp_migrations_total{outcome="completed"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("dwcp_migration_downtime_seconds_count 1"),
            "{metrics}"
        );
        cli(&dest.socket, &["stop", "mover"]).json();
    }

    #[test]
    fn live_migration_across_an_emulated_wan() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let WanPeers { link, source, dest } = wan_peers(dir.path());
        start_dirty_guest(&source, "farther", 8);

        let out = cli(
            &source.socket,
            &["migrate", "farther", "--to", &dest.listen, "--json"],
        );
        assert!(
            out.ok,
            "migrate failed: {}\n{}\nsource log:\n{}\ndest log:\n{}",
            out.stdout,
            out.stderr,
            source.agent.log_text(),
            dest.agent.log_text()
        );
        let report: Value = serde_json::from_str(&out.stdout).expect("JSON report");
        eprintln!(
            "MEASURED live over {}: total {} s, downtime {} ms, rounds {}, RAM sent {} bytes, wire {} bytes",
            link.profile().name,
            report["total_seconds"],
            report["progress"]["downtime_ms"],
            report["progress"]["round"],
            report["progress"]["transferred_bytes"],
            report["wire_bytes"]
        );
        assert_eq!(report["phase"], "completed", "{report}");
        // The guest's own downtime: STOP event here to RESUME there.
        let guest_downtime = report["guest_downtime_ms"]
            .as_u64()
            .expect("guest downtime");
        eprintln!("MEASURED guest downtime {guest_downtime} ms (STOP to RESUME events)");
        assert_eq!(state_of(&dest.socket, "farther")["state"], "running");
        assert_intact(&dest.state_dir, "farther");
        cli(&dest.socket, &["stop", "farther"]).json();
        drop((source, dest));
        link.stop().expect("link teardown");
    }

    #[test]
    fn cold_there_and_warm_back() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = key(dir.path(), "psk", b'a');
        let a = peer(dir.path(), "a", &psk);
        let b = peer(dir.path(), "b", &psk);
        start_dirty_guest(&a, "pingpong", 4);

        for (from, to, mode) in [(&a, &b, "cold"), (&b, &a, "warm")] {
            let out = cli(
                &from.socket,
                &[
                    "migrate", "pingpong", "--to", &to.listen, "--mode", mode, "--json",
                ],
            );
            assert!(
                out.ok,
                "{mode} migration failed: {}\n{}",
                out.stdout, out.stderr
            );
            let report: Value = serde_json::from_str(&out.stdout).expect("JSON report");
            eprintln!(
                "MEASURED {mode}: total {} s, downtime {} ms, rounds {}, wire {} bytes",
                report["total_seconds"],
                report["progress"]["downtime_ms"],
                report["progress"]["round"],
                report["wire_bytes"]
            );
            assert_eq!(report["phase"], "completed", "{report}");
            assert_eq!(report["mode"], mode, "{report}");
            // Cold pauses first. Warm pauses when pre-copy stops gaining (its policy is
            // unit-tested in `migrate::warm`); a guest that dirties nothing converges
            // before that, so here either is right.
            if mode == "cold" {
                assert_eq!(
                    report["paused_by_agent"], true,
                    "{mode}: the agent pauses the guest: {report}"
                );
            }
            let left = state_of(&from.socket, "pingpong");
            assert_eq!(left["stopped_by"], "migrated", "{left}");
            let arrived = state_of(&to.socket, "pingpong");
            assert_eq!(arrived["state"], "running", "{arrived}");
            // A fresh serial log on arrival: the guest's own verdict there.
            assert_intact(&to.state_dir, "pingpong");
        }
        cli(&a.socket, &["stop", "pingpong"]).json();
    }

    #[test]
    fn killing_the_destination_agent_rolls_back_to_the_source() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = key(dir.path(), "psk", b'a');
        let source = peer(dir.path(), "src", &psk);
        let mut dest = peer(dir.path(), "dst", &psk);
        start_dirty_guest(&source, "stayer", 16);
        let before = last_heartbeat(&source.state_dir, "stayer");

        let (status, report) = call(
            &source,
            "POST",
            "/v1/vms/stayer/migrate",
            Some(&format!(r#"{{"to":"{}","mode":"live"}}"#, dest.listen)),
        );
        assert_eq!(status, 202, "{report}");
        assert_eq!(report["phase"], "transferring", "{report}");
        // The destination's QEMU waits with -incoming; now its agent dies.
        let dest_dir = dest.state_dir.join("vms/stayer");
        assert!(
            pid_of(&dest_dir).is_some(),
            "no destination QEMU while transferring"
        );
        dest.agent.child.kill().expect("kill the destination agent");
        let _ = dest.agent.child.wait();

        let report = wait_migration_end(&source, "stayer", Duration::from_secs(120));
        assert_eq!(report["phase"], "rolled_back", "{report}");
        let reason = report["error"].as_str().expect("reason");
        assert!(!reason.is_empty(), "{report}");
        let here = state_of(&source.socket, "stayer");
        assert_eq!(here["state"], "running", "{here}");
        assert_eq!(here["last_error"].as_str(), Some(reason), "{here}");
        // The guest keeps running at the source, its memory intact.
        wait_heartbeat_after(&source.state_dir, "stayer", before);
        let after = last_heartbeat(&source.state_dir, "stayer");
        wait_heartbeat_after(&source.state_dir, "stayer", after);
        assert!(!serial(&source.state_dir, "stayer").contains("DWCP-VERIFY FAIL"));
        // Nothing runs on the destination; a restarted agent drops the half-made VM.
        wait_no_qemu(&dest.state_dir, "stayer");
        let dest = peer(dir.path(), "dst", &psk);
        let (status, answer) = call(&dest, "GET", "/v1/vms/stayer", None);
        assert_eq!(status, 404, "{answer}");
        assert!(!dest_dir.exists(), "{} left behind", dest_dir.display());

        let metrics = source.agent.metrics();
        assert!(
            metrics.contains(r#"dwcp_migrations_total{outcome="rolled_back"} 1"#),
            "{metrics}"
        );
        cli(&source.socket, &["stop", "stayer"]).json();
    }

    #[test]
    fn refused_destinations_leave_the_vm_running() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let psk = key(dir.path(), "psk", b'a');
        let other_psk = key(dir.path(), "other", b'b');
        let source = peer(dir.path(), "src", &psk);
        let stranger = peer(dir.path(), "stranger", &other_psk);
        start_dirty_guest(&source, "home", 16);

        let closed = format!("127.0.0.1:{}", common::free_port());
        let (status, answer) = call(
            &source,
            "POST",
            "/v1/vms/home/migrate",
            Some(&format!(r#"{{"to":"{closed}"}}"#)),
        );
        assert_eq!(status, 502, "{answer}");
        let msg = answer["error"].as_str().expect("error");
        assert!(
            msg.starts_with(&format!("Cannot reach the destination agent at {closed}")),
            "{msg}"
        );

        let (status, answer) = call(
            &source,
            "POST",
            "/v1/vms/home/migrate",
            Some(&format!(r#"{{"to":"{}"}}"#, stranger.listen)),
        );
        assert_eq!(status, 502, "{answer}");
        let msg = answer["error"].as_str().expect("error");
        assert!(msg.contains("pre-shared key"), "{msg}");

        let here = state_of(&source.socket, "home");
        assert_eq!(here["state"], "running", "{here}");
        assert_eq!(here["migration"]["phase"], "rolled_back", "{here}");
        assert!(
            stranger
                .state_dir
                .join("vms")
                .read_dir()
                .map_or(true, |d| d.flatten().all(|e| !e.path().is_dir()))
        );
        let beat = last_heartbeat(&source.state_dir, "home");
        wait_heartbeat_after(&source.state_dir, "home", beat);
        cli(&source.socket, &["stop", "home"]).json();
    }
}
