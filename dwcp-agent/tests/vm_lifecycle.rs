//! VM lifecycle end to end: a real agent process, the real CLI binary over the control
//! socket, real QEMU booting the test guest (`cargo xtask guest`) under the accelerator
//! the agent picks.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::vm::*;
use serde_json::Value;

mod privileged {
    use super::*;

    #[test]
    fn full_lifecycle_through_the_cli_with_refused_transitions() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let _reaper = QemuReaper(state_dir.clone());
        let agent = start_agent(&state_dir);
        let socket = state_dir.join("agent.sock");

        let created_at = Instant::now();
        let created = create(&socket, "life");
        assert_eq!(created["state"], "creating", "{created}");
        let started = cli(&socket, &["start", "life"]).json();
        let to_running = created_at.elapsed();
        assert_eq!(started["state"], "running", "{started}");
        let accel = started["accel"].as_str().expect("accel shown").to_owned();
        assert!(["kvm", "tcg"].contains(&accel.as_str()), "{started}");
        assert!(
            started["accel_reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{started}"
        );
        let pid = started["pid"].as_u64().expect("pid");
        wait_serial(
            &state_dir,
            "life",
            "DWCP-GUEST READY workload=idle",
            BOOT_TIMEOUT,
        );
        let to_ready = created_at.elapsed();
        eprintln!(
            "MEASURED accel={accel} create->running={:.2}s create->guest READY={:.2}s (agent start_seconds={})",
            to_running.as_secs_f64(),
            to_ready.as_secs_f64(),
            started["start_seconds"]
        );

        // Invalid transitions are refused with the state named.
        let refused = cli(&socket, &["resume", "life"]);
        assert!(!refused.ok);
        assert!(
            refused
                .stderr
                .contains("Cannot resume the VM while it is running (HTTP 409)"),
            "{}",
            refused.stderr
        );
        let refused = cli(&socket, &["delete", "life"]);
        assert!(
            refused
                .stderr
                .contains("Cannot delete the VM while it is running"),
            "{}",
            refused.stderr
        );

        // Pause: heartbeats stop. Resume: they continue.
        let before_pause = wait_heartbeat_after(&state_dir, "life", None);
        let paused = cli(&socket, &["pause", "life"]).json();
        assert_eq!(paused["state"], "paused");
        let at_pause = last_heartbeat(&state_dir, "life");
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            last_heartbeat(&state_dir, "life"),
            at_pause,
            "Heartbeats went on while paused"
        );
        assert!(at_pause >= Some(before_pause));
        let refused = cli(&socket, &["pause", "life"]);
        assert!(
            refused
                .stderr
                .contains("Cannot pause the VM while it is paused"),
            "{}",
            refused.stderr
        );
        let resumed = cli(&socket, &["resume", "life"]).json();
        assert_eq!(resumed["state"], "running");
        wait_heartbeat_after(&state_dir, "life", at_pause);

        // Stop: the guest powers off through ACPI and QEMU exits.
        let stopped = cli(&socket, &["stop", "life"]).json();
        assert_eq!(stopped["state"], "stopped", "{stopped}");
        assert_eq!(stopped["stopped_by"], "guest_power_off", "{stopped}");
        assert!(serial(&state_dir, "life").contains("DWCP-GUEST POWEROFF"));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "QEMU {pid} still runs after stop"
        );
        assert!(stopped["pid"].is_null());

        let refused = cli(&socket, &["pause", "life"]);
        assert!(
            refused
                .stderr
                .contains("Cannot pause the VM while it is stopped (HTTP 409)"),
            "{}",
            refused.stderr
        );
        let refused = cli(&socket, &["stop", "life"]);
        assert!(refused.stderr.contains("while it is stopped"));

        let list = cli(&socket, &["list"]);
        assert!(list.ok && list.stdout.contains("life") && list.stdout.contains("stopped"));
        let metrics = agent.metrics();
        assert!(
            metrics.contains("dwcp_vm_state{vm=\"life\",state=\"stopped\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("dwcp_vm_start_seconds_count 1"),
            "{metrics}"
        );

        cli(&socket, &["delete", "life"]).json();
        assert!(!state_dir.join("vms/life").exists());
        let gone = cli(&socket, &["status", "life"]);
        assert!(
            gone.stderr.contains("No VM named \"life\" (HTTP 404)"),
            "{}",
            gone.stderr
        );
        let metrics = agent.metrics();
        assert!(!metrics.contains("vm=\"life\""), "{metrics}");
    }

    #[test]
    fn concurrent_requests_on_one_vm_are_serialised() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let _reaper = QemuReaper(state_dir.clone());
        let _agent = start_agent(&state_dir);
        let socket = state_dir.join("agent.sock");
        create(&socket, "busy");

        // Eight starts at once: exactly one launches QEMU, the others are refused
        // because the VM is running by the time they get their turn.
        let results: Vec<CliOutput> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| cli(&socket, &["start", "busy"])))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let ok = results.iter().filter(|r| r.ok).count();
        assert_eq!(ok, 1, "Exactly one start must win");
        for refused in results.iter().filter(|r| !r.ok) {
            assert!(
                refused
                    .stderr
                    .contains("Cannot start the VM while it is running"),
                "{}",
                refused.stderr
            );
        }
        let qemus = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|p| {
                std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .contains(&*state_dir.join("vms/busy").to_string_lossy())
                })
            })
            .count();
        assert_eq!(qemus, 1, "One QEMU for the VM");

        // Pause and resume fired together, several times: every answer is a state the
        // machine allows, and the final state agrees with the last successful action.
        let results: Vec<(&str, CliOutput)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ["pause", "resume", "pause", "resume", "pause", "pause"]
                .into_iter()
                .map(|action| {
                    let socket = &socket;
                    scope.spawn(move || (action, cli(socket, &[action, "busy"])))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for (action, out) in &results {
            if out.ok {
                let want = if *action == "pause" {
                    "paused"
                } else {
                    "running"
                };
                assert_eq!(out.json()["state"], want, "{action}");
            } else {
                assert!(
                    out.stderr
                        .contains(&format!("Cannot {action} the VM while it is")),
                    "{action}: {}",
                    out.stderr
                );
            }
        }
        let now = state_of(&socket, "busy");
        assert!(
            ["paused", "running"].contains(&now["state"].as_str().unwrap_or("")),
            "{now}"
        );
        // The record on disk agrees with the API.
        let on_disk: Value = serde_json::from_str(
            &std::fs::read_to_string(state_dir.join("vms/busy/vm.json")).expect("vm.json"),
        )
        .expect("record is JSON");
        assert_eq!(on_disk["state"], now["state"]);
    }

    #[test]
    fn a_killed_qemu_marks_the_vm_failed_with_the_reason() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let _reaper = QemuReaper(state_dir.clone());
        let _agent = start_agent(&state_dir);
        let socket = state_dir.join("agent.sock");
        create(&socket, "victim");
        let started = cli(&socket, &["start", "victim"]).json();
        let pid = i32::try_from(started["pid"].as_u64().expect("pid")).expect("pid");
        // SAFETY: kill has no memory-safety preconditions; pid is the VM's QEMU.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let failed = loop {
            let now = state_of(&socket, "victim");
            if now["state"] == "failed" {
                break now;
            }
            assert!(Instant::now() < deadline, "Still not failed: {now}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let reason = failed["reason"].as_str().expect("reason");
        assert!(reason.contains(&format!("pid {pid}")), "{reason}");
        assert!(reason.contains("signal: 9"), "{reason}");
        assert!(failed["pid"].is_null());
        // A failed VM can be started again.
        let again = cli(&socket, &["start", "victim"]).json();
        assert_eq!(again["state"], "running");
        assert_ne!(
            again["pid"].as_u64(),
            Some(u64::try_from(pid).expect("pid"))
        );
        assert_eq!(again["last_error"].as_str(), Some(reason));
    }

    #[test]
    fn an_agent_restart_reattaches_to_a_running_vm() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let _reaper = QemuReaper(state_dir.clone());
        let socket = state_dir.join("agent.sock");
        let mut agent = start_agent(&state_dir);
        create(&socket, "survivor");
        let started = cli(&socket, &["start", "survivor"]).json();
        let pid = started["pid"].as_u64().expect("pid");
        create(&socket, "doomed");
        let doomed = cli(&socket, &["start", "doomed"]).json();
        let doomed_pid = i32::try_from(doomed["pid"].as_u64().expect("pid")).expect("pid");

        assert!(agent.terminate().success(), "{}", agent.log_text());
        drop(agent);
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "QEMU died with the agent"
        );
        // While the agent is away, one QEMU dies.
        // SAFETY: kill has no memory-safety preconditions; doomed_pid is a QEMU we started.
        unsafe { libc::kill(doomed_pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(500));

        let agent = start_agent(&state_dir);
        let now = state_of(&socket, "survivor");
        assert_eq!(now["state"], "running", "{now}\n{}", agent.log_text());
        assert_eq!(now["pid"].as_u64(), Some(pid));
        let gone = state_of(&socket, "doomed");
        assert_eq!(gone["state"], "failed", "{gone}");
        assert!(
            gone["reason"]
                .as_str()
                .is_some_and(|r| r.contains("QEMU is gone after an agent restart")),
            "{gone}"
        );

        // Still controllable.
        assert_eq!(
            cli(&socket, &["pause", "survivor"]).json()["state"],
            "paused"
        );
        assert_eq!(
            cli(&socket, &["resume", "survivor"]).json()["state"],
            "running"
        );
        wait_serial(&state_dir, "survivor", "DWCP-GUEST READY", BOOT_TIMEOUT);
        let stopped = cli(&socket, &["stop", "survivor"]).json();
        assert_eq!(stopped["state"], "stopped", "{stopped}");
        assert_eq!(stopped["stopped_by"], "guest_power_off", "{stopped}");
    }
}
