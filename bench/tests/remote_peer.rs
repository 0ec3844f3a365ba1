//! End to end: `dwcp-bench suite --peer HOST` against a receiving agent and an `iperf3 -s`
//! that run on another host. The other host is network namespace B of an emulated
//! `lan-1g` link; the suite runs in namespace A, so every byte crosses the link, exactly
//! as it would between two machines prepared as `docs/benchmarks.md` describes.

mod common;

mod privileged {
    use std::{
        net::{SocketAddr, TcpStream},
        process::{Child, Stdio},
        thread,
        time::{Duration, Instant},
    };

    use dwcp_wan::{LinkProfile, WanLink};

    use crate::common::agent_binary;

    /// A process on the remote side, killed when the test ends (even by a panic).
    struct Remote(Child);

    impl Drop for Remote {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Waits until something inside namespace `host` listens on `addr`.
    fn wait_listening(link: &WanLink, addr: SocketAddr, what: &str, child: &mut Remote) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.0.try_wait() {
                Ok(Some(status)) => panic!("{what} exited before listening: {status}"),
                Ok(None) => {}
                Err(error) => panic!("Cannot poll {what}: {error}"),
            }
            let up = link
                .a()
                .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok());
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "{what} never listened on {addr}");
            thread::sleep(Duration::from_millis(200));
        }
    }

    #[test]
    fn smoke_suite_against_a_remote_peer_runs_over_that_host() {
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("psk");
        std::fs::write(&psk, "a remote peer's shared key, 32+ bytes long").unwrap();
        let receive = dir.path().join("remote-incoming");
        std::fs::create_dir(&receive).unwrap();

        let link = WanLink::start(&LinkProfile::builtin("lan-1g").unwrap()).unwrap();
        let b = link.b().clone();
        let data = SocketAddr::from((b.addr, 19478));
        let http = SocketAddr::from((b.addr, 19477));
        let iperf = SocketAddr::from((b.addr, 15201));

        let mut agent = Remote(
            b.command(agent_binary())
                .arg("run")
                .arg("--receive-dir")
                .arg(&receive)
                .arg("--psk-file")
                .arg(&psk)
                .arg("--listen")
                .arg(data.to_string())
                .arg("--http-addr")
                .arg(http.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut iperf3 = Remote(
            b.command("iperf3")
                .args(["-s", "-p", "15201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 (installed by `cargo xtask setup`)"),
        );
        wait_listening(&link, data, "the remote agent", &mut agent);
        wait_listening(&link, http, "the remote agent's metrics", &mut agent);
        wait_listening(&link, iperf, "iperf3 -s", &mut iperf3);

        let out = dir.path().join("results");
        let output = link
            .a()
            .command(env!("CARGO_BIN_EXE_dwcp-bench"))
            .args(["suite", "--suite", "smoke", "--size-mib", "8"])
            .args(["--peer", &b.addr.to_string()])
            .args(["--peer-data-port", "19478", "--peer-http-port", "19477"])
            .args(["--peer-iperf3-port", "15201"])
            .arg("--psk-file")
            .arg(&psk)
            .arg("--out")
            .arg(&out)
            .arg("--agent")
            .arg(agent_binary())
            .arg("--tmp-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["errors"].as_array().unwrap().len(), 0, "{json:#}");
        let link_name = json["links"][0]["name"].as_str().unwrap();
        assert_eq!(link_name, format!("remote:{}", b.addr));
        assert!(
            json["links"][0]["rate_bps"].is_null(),
            "a real link's rate is unknown"
        );

        let cases = json["cases"].as_array().unwrap();
        let kinds: Vec<&str> = cases.iter().map(|c| c["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"dwcp"), "{kinds:?}");
        assert!(kinds.contains(&"iperf3"), "{kinds:?}");
        assert!(
            !kinds.contains(&"copy"),
            "the copy needs a listener on the remote host: {kinds:?}"
        );
        for case in cases {
            assert!(case["error"].is_null(), "{case:#}");
            assert!(case["goodput_bps"].as_f64().unwrap() > 0.0, "{case:#}");
        }

        // The files really arrived on the remote host, whole.
        let mut arrived = 0;
        for entry in std::fs::read_dir(&receive).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            assert_eq!(entry.metadata().unwrap().len(), 8 << 20, "{name:?}");
            arrived += 1;
        }
        let dwcp_cases = kinds.iter().filter(|k| **k == "dwcp").count();
        assert_eq!(arrived, dwcp_cases, "one file per dwcp case");

        // Packets crossed the emulated link (not a shortcut through loopback).
        let stats = link.stats();
        assert!(
            stats.a_to_b.bytes >= (dwcp_cases as u64) * (8 << 20),
            "{stats:?}"
        );
        drop(agent);
        drop(iperf3);
    }
}
