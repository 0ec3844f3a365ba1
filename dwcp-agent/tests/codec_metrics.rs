//! The stream codec on a running agent's `/metrics`: `dwcp-agent send --codec hde` and
//! `--codec auto` to a `dwcp-agent run` show up as per-codec block and byte counters
//! (`dwcp_codec_*{direction="rx"}`) that add up to what was sent.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _};

const KEY: &[u8] = b"codec-metrics-test-key-of-32-bytes!!";

/// The value of the series `name{labels}` in a Prometheus text body (0 when absent).
fn series(metrics: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

/// Blocks, raw bytes and encoded bytes the agent's receiver counted for `codec`.
fn rx_counts(metrics: &str, codec: &str) -> (u64, u64, u64) {
    let labels = |kind: &str| format!("direction=\"rx\",codec=\"{codec}\",kind=\"{kind}\"");
    (
        series(
            metrics,
            "dwcp_codec_blocks_total",
            &format!("direction=\"rx\",codec=\"{codec}\""),
        ),
        series(metrics, "dwcp_codec_bytes_total", &labels("raw")),
        series(metrics, "dwcp_codec_bytes_total", &labels("encoded")),
    )
}

/// Raw bytes over every codec of the receiver.
fn rx_raw_total(metrics: &str) -> u64 {
    ["none", "zstd", "hde"]
        .iter()
        .map(|c| rx_counts(metrics, c).1)
        .sum()
}

/// Polls `/metrics` until the receiver's raw byte count reaches `bytes` (the agent
/// exports once per second).
fn metrics_after(agent: &common::Agent, bytes: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = agent.metrics();
        if rx_raw_total(&metrics) >= bytes || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dwcp-agent send FILE --codec CODEC` to the agent at `to`; fails with its output.
fn send(file: &Path, to: SocketAddr, key: &Path, codec: &str) -> String {
    let out = Command::new(common::agent_bin())
        .arg("send")
        .arg(file)
        .args([
            "--to",
            &to.to_string(),
            "--streams",
            "2",
            "--block-kib",
            "256",
        ])
        .arg("--psk-file")
        .arg(key)
        .args(["--codec", codec, "--json"])
        .output()
        .expect("dwcp-agent send");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "send --codec {codec} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hde_and_auto_streams_show_per_codec_counters_on_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("psk");
    std::fs::write(&key, KEY).expect("key");
    let rx_dir = dir.path().join("rx");
    std::fs::create_dir(&rx_dir).expect("mkdir");
    let listen: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .expect("addr");
    let mut agent = common::Agent::start(
        &[
            "--no-probes",
            "--listen",
            &listen.to_string(),
            "--receive-dir",
            rx_dir.to_str().expect("utf-8"),
            "--psk-file",
            key.to_str().expect("utf-8"),
        ],
        |_| {},
    );
    agent.wait_ready();
    let before = agent.metrics();
    assert_eq!(rx_counts(&before, "hde"), (0, 0, 0), "{before}");

    // Compressible, guest-memory-like data with --codec hde: every block is HDE.
    let text: Vec<u8> = (0..4096u32 * 3)
        .flat_map(|i| {
            if i % 3 == 0 {
                vec![0u8; 4096]
            } else {
                format!("page {i:08} of a table of records; ")
                    .bytes()
                    .cycle()
                    .take(4096)
                    .collect()
            }
        })
        .collect();
    let memory = dir.path().join("memory.bin");
    std::fs::write(&memory, &text).expect("write");
    let summary = send(&memory, listen, &key, "hde");
    let metrics = metrics_after(&agent, text.len() as u64);
    let (blocks, raw, encoded) = rx_counts(&metrics, "hde");
    assert_eq!(raw, text.len() as u64, "{summary}\n{metrics}");
    assert_eq!(blocks, raw.div_ceil(256 << 10), "{metrics}");
    assert!(encoded > 0 && encoded * 4 < raw, "{encoded} for {raw}");
    assert_eq!(rx_counts(&metrics, "none").0, 0, "{metrics}");
    assert!(
        std::fs::read(rx_dir.join("memory.bin")).expect("received") == text,
        "memory.bin differs"
    );

    // Random data with --codec auto: the sample blocks are HDE, then it goes raw
    // (until its first decision, and after it: the data does not compress).
    let mut random = vec![0u8; 48 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut random[..]);
    let noise = dir.path().join("noise.bin");
    std::fs::write(&noise, &random).expect("write");
    let summary = send(&noise, listen, &key, "auto");
    assert!(summary.contains("auto: "), "{summary}");
    let after = metrics_after(&agent, (text.len() + random.len()) as u64);
    let hde = rx_counts(&after, "hde");
    let none = rx_counts(&after, "none");
    assert!(hde.0 > blocks, "auto's sample blocks are HDE: {after}");
    assert!(none.0 > 0, "auto sent raw blocks: {after}");
    assert_eq!(none.1, none.2, "raw blocks carry their bytes as they are");
    assert_eq!(
        hde.1 - raw + none.1,
        random.len() as u64,
        "every byte of the auto stream is counted once: {after}"
    );
    assert_eq!(
        hde.0 - blocks + none.0,
        (random.len() as u64).div_ceil(256 << 10),
        "{after}"
    );
    assert!(
        std::fs::read(rx_dir.join("noise.bin")).expect("received") == random,
        "noise.bin differs"
    );
}
