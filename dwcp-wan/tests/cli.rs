//! The binary's handling of bad input (no privileges needed: it refuses before setting
//! anything up) and its profile list.

use std::process::Command;

#[expect(
    clippy::expect_used,
    reason = "test helper: a panic is the test's failure report"
)]
fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dwcp-wan"))
        .args(args)
        .output()
        .expect("the test binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn list_shows_every_builtin() {
    let (ok, stdout, _) = run(&["--list"]);
    assert!(ok);
    for name in [
        "lan-1g",
        "metro-1g-5ms",
        "wan-1g-50ms-0.1pct",
        "intercontinental-500m-150ms-0.5pct",
    ] {
        assert!(stdout.contains(&format!("{name}: ")), "{stdout}");
    }
    assert!(
        stdout.contains("intercontinental-500m-150ms-0.5pct: 500 Mbit/s, RTT 150 ms"),
        "{stdout}"
    );
}

#[test]
fn bad_flags_and_profiles_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_key = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown_key,
        "name = \"x\"\nrate = \"1gbit\"\nrtt = \"1ms\"\ndelay = \"3ms\"\n",
    )
    .unwrap();
    let unknown = unknown_key.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--profile", "moon"],
            "No built-in profile `moon`; there are: lan-1g, metro-1g-5ms",
        ),
        (
            &["--rate", "0", "--rtt", "1ms"],
            "Rate must be above 0 bit/s",
        ),
        (
            &["--rate", "1gbit", "--rtt", "1ms", "--loss", "1"],
            "Loss 1 is not in [0, 1)",
        ),
        (
            &["--rate", "1gbit", "--rtt", "1ms", "--loss", "150%"],
            "Loss 1.5 is not in [0, 1)",
        ),
        (
            &["--rate", "1gbit", "--rtt", "-1ms"],
            "Negative duration `-1ms`",
        ),
        (
            &["--rate", "1gbit", "--rtt", "10ms", "--jitter", "6ms"],
            "Jitter 6 ms is above half the RTT (5 ms)",
        ),
        (
            &["--rate", "1gbit", "--rtt", "1ms", "--queue", "100B"],
            "Queue of 100 B is outside",
        ),
        (&["--rate", "1gbit"], "at least --rate and --rtt"),
        (&["--profile-file", unknown], "unknown field `delay`"),
        (
            &["--profile-file", "/nonexistent.toml"],
            "Cannot read profile /nonexistent.toml",
        ),
    ];
    for (args, expected) in cases {
        let (ok, _, stderr) = run(args);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} should contain {expected:?}"
        );
    }
}
