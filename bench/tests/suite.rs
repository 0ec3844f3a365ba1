//! End to end: `dwcp-bench suite --suite smoke` runs real agents, iperf3 and socat on
//! loopback and writes a report whose files exist and parse.

mod common;

mod privileged {
    use std::process::Command;

    use crate::common::agent_binary;

    #[test]
    fn smoke_suite_on_loopback_writes_a_report_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("results");
        let output = Command::new(env!("CARGO_BIN_EXE_dwcp-bench"))
            .args(["suite", "--suite", "smoke", "--size-mib", "8"])
            .arg("--out")
            .arg(&out)
            .arg("--agent")
            .arg(agent_binary())
            .arg("--tmp-dir")
            .arg(dir.path())
            // No corpus, whatever this machine has cached: the codec rows stay unmeasured.
            .arg("--corpus")
            .arg(dir.path().join("no-corpus"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(stdout.contains("Verdict: "), "{stdout}");

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["plan"]["suite"], "smoke");
        assert_eq!(json["errors"].as_array().unwrap().len(), 0, "{json:#}");
        let cases = json["cases"].as_array().unwrap();
        // dwcp 1, 2, auto; iperf3 -P 1, 2 (and -P N for auto's count if new); the copy.
        assert!(cases.len() >= 6, "{cases:#?}");
        for case in cases {
            assert!(case["error"].is_null(), "{case:#}");
            assert!(case["goodput_bps"].as_f64().unwrap() > 0.0, "{case:#}");
            // iperf3 reports what its receiver counted in its intervals, which can end
            // before the last bytes of a tiny transfer; the files must be whole.
            if case["kind"] != "iperf3" {
                assert_eq!(case["bytes"], 8 << 20, "{case:#}");
            }
        }
        let kinds: Vec<&str> = cases.iter().map(|c| c["kind"].as_str().unwrap()).collect();
        for kind in ["dwcp", "iperf3", "copy"] {
            assert!(kinds.contains(&kind), "{kinds:?}");
        }
        let metrics = json["metrics"].as_array().unwrap();
        let status = |id: &str| {
            metrics.iter().find(|m| m["target"] == id).unwrap()["status"]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        // Loopback has no configured rate; there is no corpus for the codec rows.
        assert_eq!(status("bandwidth_utilization"), "not_measured");
        assert_eq!(status("hde_ratio"), "not_measured");
        assert_ne!(status("transfer_time_vs_v1"), "not_measured");
        assert_eq!(
            json["verdict"]["go"], false,
            "not-measured rows are never a pass"
        );

        let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let testcases = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .count();
        assert_eq!(testcases, metrics.len());
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(
            md.starts_with("# dwcp benchmark suite `smoke`: NO-GO"),
            "{md}"
        );
        assert!(md.contains("dwcp-agent run"), "commands are listed");
        for svg in ["goodput-loopback.svg", "utilization-loopback.svg"] {
            let text = std::fs::read_to_string(out.join(svg)).unwrap();
            assert!(text.starts_with("<svg"), "{svg}");
        }
    }

    #[test]
    fn smoke_suite_over_an_emulated_link_judges_utilization() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("results");
        let output = Command::new(env!("CARGO_BIN_EXE_dwcp-bench"))
            .args([
                "suite",
                "--suite",
                "smoke",
                "--profile",
                "lan-1g",
                "--size-mib",
                "8",
            ])
            .arg("--out")
            .arg(&out)
            .arg("--agent")
            .arg(agent_binary())
            .arg("--tmp-dir")
            .arg(dir.path())
            // No corpus, whatever this machine has cached: the codec rows stay unmeasured.
            .arg("--corpus")
            .arg(dir.path().join("no-corpus"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "stderr:\n{stderr}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["links"][0]["name"], "lan-1g");
        assert_eq!(json["links"][0]["rate_bps"], 1_000_000_000_u64);
        let utilization = json["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["target"] == "bandwidth_utilization")
            .unwrap();
        let status = utilization["status"]["status"].as_str().unwrap();
        assert!(status == "pass" || status == "fail", "{utilization:#}");
        assert!(utilization["value"].as_f64().unwrap() > 0.0);
        // The receiving agent ran in host B's namespace and was scraped there.
        let commands = json["commands"].as_array().unwrap();
        assert!(
            commands
                .iter()
                .any(|c| c.as_str().unwrap().starts_with("ip netns exec")),
            "{commands:#?}"
        );
    }
}
