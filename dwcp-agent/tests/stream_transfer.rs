//! Streamed transfers (a pipe read once, delivered in order): bit-exact under irregular
//! input, failed streams and killed peers; bad parameters refused.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::unix::net::UnixStream,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use common::receiver::{TestReceiver, psk};
use dwcp_agent::{
    amst::{
        AmstError,
        sender::{Hooks, SendOptions, StreamCount},
        stream::send::send_stream,
        summary::Summary,
    },
    protocol::{
        frame::{FrameReader, FrameWriter},
        handshake::{self, Role},
        messages::{self, Control, MAX_CONTROL_LEN},
    },
};
use rand::{Rng as _, SeedableRng as _};

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A socket pair whose far end a thread feeds with `bytes` in irregular chunks and
/// pauses (so blocks are flushed partly filled), then closes.
fn feed(bytes: Vec<u8>, pause_every: usize) -> (UnixStream, thread::JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
    let feeder = thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut at = 0;
        let mut writes = 0usize;
        while at < bytes.len() {
            let n = rng.random_range(1..=200_000).min(bytes.len() - at);
            if theirs.write_all(&bytes[at..at + n]).is_err() {
                return;
            }
            at += n;
            writes += 1;
            if pause_every > 0 && writes.is_multiple_of(pause_every) {
                thread::sleep(Duration::from_millis(5));
            }
        }
    });
    (ours, feeder)
}

fn options(streams: usize, block: usize) -> SendOptions {
    SendOptions {
        streams: StreamCount::Fixed(streams),
        block_size: block,
        ..SendOptions::default()
    }
}

fn stream_to(
    rx: &TestReceiver,
    name: &str,
    bytes: Vec<u8>,
    opts: &SendOptions,
) -> Result<Summary, AmstError> {
    let (source, feeder) = feed(bytes, 7);
    let result = send_stream(source, name, rx.addr, &psk(), opts, &Hooks::default());
    feeder.join().expect("feeder");
    result
}

#[test]
fn irregular_stream_arrives_in_order_and_bit_exact() {
    let rx = TestReceiver::start();
    let bytes = data(24 * (1 << 20) + 4321, 1);
    let summary = stream_to(&rx, "vm.stream", bytes.clone(), &options(4, 256 << 10))
        .expect("stream transfer");
    assert_eq!(summary.bytes, bytes.len() as u64);
    let got = std::fs::read(rx.path("vm.stream")).expect("received file");
    assert!(got == bytes, "Received stream differs");
    assert_eq!(
        rx.names(),
        vec!["vm.stream"],
        "No temporary files may remain"
    );
}

#[test]
fn one_stream_and_many_streams_agree_on_the_digest() {
    let rx = TestReceiver::start();
    let bytes = data(3 << 20, 2);
    let one = stream_to(&rx, "a", bytes.clone(), &options(1, 64 << 10)).expect("1 stream");
    let many = stream_to(&rx, "b", bytes, &options(16, 64 << 10)).expect("16 streams");
    // Block boundaries depend on timing, so digests may differ; the content may not.
    assert_eq!(
        std::fs::read(rx.path("a")).expect("a"),
        std::fs::read(rx.path("b")).expect("b")
    );
    assert_eq!(one.bytes, many.bytes);
}

#[test]
fn a_registered_consumer_gets_the_stream_in_order_and_then_end_of_file() {
    // What the destination of a migration does: QEMU's incoming socket is the consumer.
    let rx = TestReceiver::start();
    let (consumer, mut qemu_side) = UnixStream::pair().expect("socketpair");
    rx.receiver
        .expect_stream("vm-7.migration", Box::new(consumer));
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        qemu_side
            .read_to_end(&mut all)
            .expect("read until the receiver closes");
        all
    });
    let bytes = data(9 * (1 << 20) + 77, 8);
    stream_to(&rx, "vm-7.migration", bytes.clone(), &options(4, 128 << 10)).expect("send");
    let got = reader.join().expect("reader");
    assert!(got == bytes, "Consumer got different bytes");
    assert!(
        rx.names().is_empty(),
        "A consumed stream writes no file: {:?}",
        rx.names()
    );
    // The registration is used once: the next stream of that name is a file again.
    stream_to(&rx, "vm-7.migration", data(10, 9), &options(1, 64 << 10)).expect("send");
    assert_eq!(rx.names(), vec!["vm-7.migration"]);
}

#[test]
fn a_consumer_that_goes_away_fails_the_stream_with_a_clear_error() {
    let rx = TestReceiver::start();
    let (consumer, qemu_side) = UnixStream::pair().expect("socketpair");
    rx.receiver
        .expect_stream("vm-8.migration", Box::new(consumer));
    drop(qemu_side); // QEMU died before the stream started
    let err = stream_to(
        &rx,
        "vm-8.migration",
        data(4 << 20, 10),
        &options(2, 64 << 10),
    )
    .expect_err("must fail");
    assert!(
        err.to_string().contains("vm-8.migration"),
        "The error names the stream: {err}"
    );
}

/// Memory-like data: zero pages, repeated pages, pages that change a little, noise.
fn memory_like(pages: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = data(4096, seed + 1);
    let mut out = Vec::with_capacity(pages * 4096);
    for i in 0..pages {
        match i % 4 {
            0 => out.extend(std::iter::repeat_n(0u8, 4096)),
            1 => out.extend_from_slice(&base),
            2 => {
                let mut page = base.clone();
                page[rng.random_range(0..4096)] ^= 0xff;
                out.extend_from_slice(&page);
            }
            _ => out.extend_from_slice(&data(4096, seed + 2 + i as u64)),
        }
    }
    out
}

#[test]
fn zstd_and_hde_streams_arrive_bit_exact_and_smaller_on_the_wire() {
    use dwcp_agent::protocol::messages::CodecChoice;
    let rx = TestReceiver::start();
    let bytes = memory_like(4096, 11); // 16 MiB
    for (name, codec) in [
        ("zstd.img", CodecChoice::Zstd { level: 1 }),
        (
            "hde.img",
            CodecChoice::Hde {
                config: dwcp_hde::HdeConfig {
                    workers: 1,
                    ..dwcp_hde::HdeConfig::default()
                },
            },
        ),
    ] {
        let opts = SendOptions {
            codec,
            ..options(4, 256 << 10)
        };
        let wire_before = rx.receiver.stats().payload_bytes.load(Ordering::Relaxed);
        let summary = stream_to(&rx, name, bytes.clone(), &opts).expect(name);
        let wire = rx.receiver.stats().payload_bytes.load(Ordering::Relaxed) - wire_before;
        assert_eq!(summary.bytes, bytes.len() as u64, "{name}");
        // Half the pages are zero or repeats: any codec worth its name halves the bytes.
        assert!(
            wire * 2 < bytes.len() as u64,
            "{name}: {wire} bytes on the wire for {} bytes",
            bytes.len()
        );
        let got = std::fs::read(rx.path(name)).expect("received");
        assert!(got == bytes, "{name}: received bytes differ");
    }
}

/// A socket pair whose far end a thread feeds with `bytes` in 1 MiB writes spread evenly
/// over at least `over` (a source-limited stream, like a migration's dirty pages).
fn feed_paced(bytes: Vec<u8>, over: Duration) -> (UnixStream, thread::JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
    let feeder = thread::spawn(move || {
        let chunks = bytes.chunks(1 << 20);
        let pause = over / u32::try_from(chunks.len().max(1)).expect("chunk count");
        for chunk in chunks {
            if theirs.write_all(chunk).is_err() {
                return;
            }
            thread::sleep(pause);
        }
    });
    (ours, feeder)
}

#[test]
fn auto_adds_streams_mid_transfer_sheds_them_and_arrives_bit_exact() {
    let rx = TestReceiver::start();
    // Paced over 3.5 s, so the controller (one sample per second) decides at least
    // twice: its first sample always doubles the count (no best yet), so streams join
    // mid-transfer; a source-limited stream does not go faster with them, so it goes
    // back to the best count, shedding streams that still have blocks in flight.
    let bytes = data(40 << 20, 11);
    let (source, feeder) = feed_paced(bytes.clone(), Duration::from_millis(3500));
    let opened = AtomicUsize::new(0);
    let on_stream = |_: std::net::SocketAddr| {
        opened.fetch_add(1, Ordering::SeqCst);
    };
    let hooks = Hooks {
        on_stream: Some(&on_stream),
        on_progress: None,
    };
    let opts = SendOptions {
        streams: StreamCount::Auto { max: 16 },
        block_size: 256 << 10,
        ..SendOptions::default()
    };
    let summary =
        send_stream(source, "auto.stream", rx.addr, &psk(), &opts, &hooks).expect("auto stream");
    feeder.join().expect("feeder");
    let got = std::fs::read(rx.path("auto.stream")).expect("received file");
    assert!(got == bytes, "Received stream differs");
    assert_eq!(summary.bytes, bytes.len() as u64);
    let opened = opened.load(Ordering::SeqCst);
    assert!(
        opened >= 2 * dwcp_agent::amst::auto::INITIAL_STREAMS,
        "Streams were never added: {opened} opened"
    );
    assert!(
        (1..=16).contains(&summary.streams),
        "Streams used: {}",
        summary.streams
    );
    // Shed streams finished their blocks: nothing failed, nothing went out twice.
    assert_eq!((summary.failed_streams, summary.resent_blocks), (0, 0));
    println!(
        "auto: {opened} streams opened, settled on {}, {:.1} s",
        summary.streams, summary.seconds
    );
}

#[test]
fn empty_stream_creates_an_empty_file() {
    let rx = TestReceiver::start();
    let summary = stream_to(&rx, "empty", Vec::new(), &options(2, 64 << 10)).expect("send");
    assert_eq!(summary.bytes, 0);
    assert_eq!(std::fs::read(rx.path("empty")).expect("file").len(), 0);
}

#[test]
fn oversized_reorder_window_and_bad_names_are_refused_with_a_reason() {
    let rx = TestReceiver::start();
    // A hand-made offer asking for more reorder memory than a receiver grants.
    let mut control = std::net::TcpStream::connect(rx.addr).expect("connect");
    handshake::client(&mut control, &psk(), Role::Control).expect("handshake");
    let mut reader = FrameReader::new(control.try_clone().expect("clone"), MAX_CONTROL_LEN);
    let mut writer = FrameWriter::new(control);
    messages::send(
        &mut writer,
        &Control::Offer {
            transfer_id: "x".into(),
            name: "big".into(),
            size: 0,
            block_size: 16 << 20,
            stream: true,
            window: 1024,
            codec: Default::default(),
        },
    )
    .expect("offer");
    match messages::recv(&mut reader).expect("reply") {
        Control::Abort { reason } => assert!(reason.contains("reorder window"), "{reason}"),
        other => panic!("Expected abort, got {other:?}"),
    }
    let err = stream_to(&rx, "../escape", data(10, 3), &options(1, 64 << 10))
        .expect_err("must be refused");
    assert!(err.to_string().contains("refused file name"), "{err}");
    assert!(rx.names().is_empty(), "{:?}", rx.names());
}

mod privileged {
    use std::{
        process::{Command, Stdio},
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use super::*;
    use crate::common::{self, NetNs};

    #[test]
    fn stream_survives_a_cut_data_stream_bit_exact() {
        common::require_root();
        let ns = NetNs::new("scut");
        common::run(
            "ip",
            &[
                "netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
                "rate", "1gbit", "burst", "512kb", "latency", "100ms",
            ],
        );
        let listener = ns.on_thread(|| TcpListener::bind("127.0.0.1:0").expect("bind in netns"));
        let rx = TestReceiver::start_with(listener);
        let bytes = data(128 << 20, 5);
        let ports = Mutex::new(Vec::new());
        let cut = AtomicBool::new(false);
        let ns_name = ns.name.clone();
        let addr = rx.addr;
        let expected = bytes.clone();
        let (summary, was_cut) = ns.on_thread(move || {
            let (source, feeder) = feed(bytes, 0);
            let on_stream = |local: std::net::SocketAddr| {
                ports.lock().expect("lock").push(local.port());
            };
            let on_progress = |p: dwcp_agent::amst::sender::Progress| {
                if p.done_bytes > 16 << 20 && !cut.swap(true, Ordering::SeqCst) {
                    let port = ports.lock().expect("lock")[0];
                    let script = format!(
                        "table inet dwcp_scut {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
                         tcp sport {port} reject with tcp reset\n }}\n}}\n"
                    );
                    let mut child = Command::new("ip")
                        .args(["netns", "exec", &ns_name, "nft", "-f", "-"])
                        .stdin(Stdio::piped())
                        .spawn()
                        .expect("nft");
                    child
                        .stdin
                        .take()
                        .expect("stdin")
                        .write_all(script.as_bytes())
                        .expect("script");
                    assert!(child.wait().expect("wait").success(), "nft failed");
                }
            };
            let hooks = Hooks {
                on_stream: Some(&on_stream),
                on_progress: Some(&on_progress),
            };
            let result = send_stream(source, "cut.stream", addr, &psk(), &options(4, 256 << 10), &hooks);
            feeder.join().expect("feeder");
            (result, cut.load(Ordering::SeqCst))
        });
        assert!(
            was_cut,
            "The stream ended before a data stream could be cut"
        );
        let summary = summary.expect("a stream must survive one dead data stream");
        assert!(summary.failed_streams >= 1, "{summary:?}");
        // The cut stream's unacknowledged blocks go out again on the others; when the
        // reset finds it waiting with everything acknowledged there is nothing to resend
        // (`Outbox`'s unit tests cover the resend itself), so only the data is checked.
        eprintln!("resent after the cut: {}", summary.resent_blocks);
        let got = std::fs::read(rx.path("cut.stream")).expect("received");
        assert!(got == expected, "Received stream differs after the cut");
    }

    #[test]
    fn killed_receiving_agent_fails_the_sender_clearly_and_leaves_no_file() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("psk");
        std::fs::write(&key, common::receiver::KEY).expect("key");
        let rx_dir = dir.path().join("rx");
        std::fs::create_dir(&rx_dir).expect("mkdir");
        let port = common::free_port();
        let listen = format!("127.0.0.1:{port}");
        let (rx_arg, key_arg) = (
            rx_dir.to_str().expect("utf-8 path").to_owned(),
            key.to_str().expect("utf-8 path").to_owned(),
        );
        let mut agent = common::Agent::start(
            &[
                "--no-probes",
                "--listen",
                &listen,
                "--receive-dir",
                &rx_arg,
                "--psk-file",
                &key_arg,
            ],
            |_| {},
        );
        agent.wait_ready();
        // `dwcp-agent send -` fed by a slow writer: still running when the agent dies.
        let mut sender = Command::new(common::agent_bin())
            .args(["send", "-", "--name", "victim", "--streams", "4", "--json"])
            .args(["--to", &format!("127.0.0.1:{port}")])
            .arg("--psk-file")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sender");
        let mut stdin = sender.stdin.take().expect("stdin");
        let writer = thread::spawn(move || {
            let chunk = data(1 << 20, 6);
            for _ in 0..400 {
                if stdin.write_all(&chunk).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        thread::sleep(Duration::from_millis(800));
        agent.child.kill().expect("kill agent");
        let _ = agent.child.wait();
        let status = sender.wait().expect("sender exit");
        let _ = writer.join();
        let mut stderr = String::new();
        sender
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        assert!(
            !status.success(),
            "The sender must fail when its receiver dies"
        );
        assert!(stderr.contains("Error:"), "No clear error: {stderr}");
        assert!(
            !rx_dir.join("victim").exists(),
            "A partial stream got its final name"
        );
    }
}
