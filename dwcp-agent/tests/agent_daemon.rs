//! `dwcp-agent` as a process: serving, stopping, privileges, systemd, bad configuration.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    process::Command,
    time::{Duration, Instant},
};

use common::Agent;

mod privileged {
    use std::os::unix::process::CommandExt as _;

    use super::*;

    #[test]
    fn serves_probe_up_and_leaves_nothing_loaded_after_sigterm() {
        common::require_root();
        let mut agent = Agent::start(&[], |_| {});
        agent.wait_ready();
        let metrics = agent.metrics();
        assert!(
            metrics.contains("\ndwcp_probe_up 1\n"),
            "{metrics}\n{}",
            agent.log_text()
        );
        // The scrape itself is traffic of the agent's own socket: after a second scrape
        // the kernel has counted the bytes of the first response.
        let again = agent.metrics();
        let tx = metric_value(&again, "dwcp_kernel_tx_bytes_total");
        assert!(
            tx >= metrics.len() as f64,
            "tx {tx} < first response {}",
            metrics.len()
        );
        assert!(again.contains("dwcp_probe_runs_total{program=\"sock_send_length\"}"));

        let ids = common::bpf_program_ids_of(agent.child.id());
        assert_eq!(ids.len(), dwcp_common::names::TRACEPOINTS.len(), "{ids:?}");
        let status = agent.terminate();
        assert!(status.success(), "exit {status}: {}", agent.log_text());
        let still = common::loaded_program_ids();
        let leaked: Vec<_> = ids.iter().filter(|id| still.contains(id)).collect();
        assert!(
            leaked.is_empty(),
            "Programs still loaded after stop: {leaked:?}"
        );
        assert!(
            agent.log_text().contains("detached"),
            "{}",
            agent.log_text()
        );
    }

    #[test]
    fn without_privileges_keeps_serving_with_probe_up_zero() {
        common::require_root();
        // A copy of the binary any user can run, wherever the checkout lives.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let bin = dir.path().join("dwcp-agent");
        std::fs::copy(common::agent_bin(), &bin).expect("copy binary");
        let log = dir.path().join("agent.log");
        let http = format!("127.0.0.1:{}", common::free_port());
        let child = Command::new(&bin)
            .args(["run", "--http-addr", &http])
            .uid(65534)
            .gid(65534)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn as nobody");
        let mut agent = Agent::adopt(child, http.parse().expect("addr"), log);
        agent.wait_ready();
        let metrics = agent.metrics();
        assert!(metrics.contains("\ndwcp_probe_up 0\n"), "{metrics}");
        let log = agent.log_text();
        assert!(log.contains("eBPF probes unavailable"), "{log}");
        assert!(
            log.contains("CAP_BPF"),
            "The log should say what is missing: {log}"
        );
        assert!(agent.terminate().success());
    }

    fn metric_value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
    }
}

#[test]
fn notifies_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut agent = Agent::start(&["--no-probes"], |cmd| {
        cmd.env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000");
    });
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "Got only {messages:?}");
        let n = socket.recv(&mut buf).expect("notification");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages[0].contains("READY=1"),
        "First message must be READY: {messages:?}"
    );
    assert!(agent.terminate().success());
    let n = socket.recv(&mut buf).expect("stopping notification");
    let mut last = String::from_utf8_lossy(&buf[..n]).into_owned();
    while last.contains("WATCHDOG=1") {
        let n = socket.recv(&mut buf).expect("stopping notification");
        last = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    assert!(last.contains("STOPPING=1"), "{last}");
}

mod bad_config {
    use super::*;

    /// Runs `dwcp-agent run --config <file with text>` and returns (exit code, stderr).
    fn run_with(text: &str) -> (Option<i32>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write config");
        run_args(&["run", "--config", path.to_str().expect("utf-8")])
    }

    fn run_args(args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(common::agent_bin())
            .args(args)
            .output()
            .expect("run agent");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let (code, err) = run_with("[http]\naddr = \"127.0.0.1:9477\"\nport = 1\n");
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("unknown field") && err.contains("port"),
            "{err}"
        );
    }

    #[test]
    fn unknown_section_is_refused() {
        let (code, err) = run_with("[htpp]\naddr = \"127.0.0.1:9477\"\n");
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("htpp"), "{err}");
    }

    #[test]
    fn bad_address_is_refused() {
        let (code, err) = run_with("[transport]\nlisten = \"0.0.0.0:port\"\n");
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("listen") && err.contains("Invalid config file"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_value_is_refused() {
        let (code, err) = run_with("[probes]\ninterval_ms = 0\n");
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("probes.interval_ms"), "{err}");
    }

    #[test]
    fn missing_file_is_refused_with_its_path() {
        let (code, err) = run_args(&["run", "--config", "/nonexistent/agent.toml"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("Cannot read config file /nonexistent/agent.toml"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_file_is_refused() {
        // Root reads any file regardless of mode; a directory is unreadable for everyone.
        let dir = tempfile::tempdir().expect("tempdir");
        let (code, err) = run_args(&["run", "--config", dir.path().to_str().expect("utf-8")]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("Cannot read config file"), "{err}");
    }

    #[test]
    fn bad_command_line_address_is_refused() {
        let (code, err) = run_args(&["run", "--http-addr", "nowhere"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("--http-addr"), "{err}");
    }

    #[test]
    fn check_config_prints_effective_values_with_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[probes]\ninterval_ms = 250\n").expect("write");
        let out = Command::new(common::agent_bin())
            .args(["check-config", "--config", path.to_str().expect("utf-8")])
            .args(["--listen", "127.0.0.1:7000"])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("interval_ms: 250") && text.contains("127.0.0.1:7000"),
            "{text}"
        );
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/dwcp-agent.service"
    ))
    .expect("unit file");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(needed), "Unit lacks {needed}");
    }
    // verify needs the ExecStart binary to exist: point it at the one under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dwcp-agent.service");
    let bin = common::agent_bin().to_str().expect("utf-8");
    std::fs::write(&path, unit.replace("/usr/local/bin/dwcp-agent", bin)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn metrics_doc_matches_the_exported_metrics() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let out = Command::new(common::agent_bin())
        .args(["metrics", "--markdown"])
        .output()
        .expect("dwcp-agent metrics");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        doc.contains(table.trim()),
        "docs/metrics.md is stale: regenerate its table with `dwcp-agent metrics --markdown`"
    );
    for def in dwcp_agent::metrics::names::ALL {
        assert!(
            doc.contains(&format!("`{}`", def.name)),
            "{} undocumented",
            def.name
        );
    }
}
