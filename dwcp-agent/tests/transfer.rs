//! Agent-to-agent transfers over real TCP: bit-exact results, failures that lose nothing.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use common::receiver::{KEY, TestReceiver, assert_same, psk, random_file};
use dwcp_agent::amst::{
    AmstError,
    sender::{Hooks, SendOptions, StreamCount, send_file, send_file_as},
    summary::Summary,
};
use dwcp_agent::protocol::handshake::Psk;

fn options(streams: usize) -> SendOptions {
    SendOptions {
        streams: StreamCount::Fixed(streams),
        block_size: 256 << 10,
        ..SendOptions::default()
    }
}

fn send(path: &Path, rx: &TestReceiver, opts: &SendOptions) -> Result<Summary, AmstError> {
    send_file(path, rx.addr, &psk(), opts, None, &Hooks::default())
}

#[test]
fn random_file_arrives_bit_exact_over_several_streams() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "random.bin", 20 * (1 << 20) + 12_345);
    let summary = send(&src, &rx, &options(4)).expect("send");
    assert_same(&src, &rx.path("random.bin"));
    assert_eq!(summary.bytes, 20 * (1 << 20) + 12_345);
    assert_eq!(summary.streams, 4);
    assert_eq!(
        summary.digest,
        dwcp_agent::amst::digest::file_digest(&src, 256 << 10).expect("digest")
    );
    assert_eq!(
        rx.names(),
        vec!["random.bin"],
        "No temporary files may remain"
    );
}

#[test]
fn receiving_on_tmpfs_with_an_unaligned_tail_stays_bit_exact() {
    // Whole blocks go out with O_DIRECT where the filesystem allows it (ext4, and tmpfs
    // since Linux 6.6), the unaligned tail through the page cache: both must agree.
    let shm = tempfile::tempdir_in("/dev/shm").expect("tempdir on /dev/shm");
    let rx = TestReceiver::start_in(TcpListener::bind("127.0.0.1:0").expect("bind"), shm);
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "shm.bin", 3 * (256 << 10) + 4096 + 17);
    send(&src, &rx, &options(2)).expect("send");
    assert_same(&src, &rx.path("shm.bin"));
}

#[test]
fn empty_file_arrives() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "empty", 0);
    let summary = send(&src, &rx, &options(2)).expect("send");
    assert_eq!(summary.bytes, 0);
    assert_eq!(std::fs::metadata(rx.path("empty")).expect("meta").len(), 0);
}

#[test]
fn sparse_multi_gib_file_arrives_bit_exact_with_auto_streams() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let path = src_dir.path().join("sparse.img");
    let f = std::fs::File::create(&path).expect("create");
    let size: u64 = 2 << 30;
    f.set_len(size).expect("set_len");
    use std::os::unix::fs::FileExt as _;
    for (i, offset) in [0, 1 << 30, size - 4096 - 7].into_iter().enumerate() {
        f.write_all_at(&[i as u8 + 1; 4096], offset).expect("write");
    }
    drop(f);
    let opts = SendOptions {
        streams: StreamCount::Auto { max: 16 },
        ..SendOptions::default()
    };
    let summary = send(&path, &rx, &opts).expect("send");
    assert_eq!(summary.bytes, size);
    let digest =
        dwcp_agent::amst::digest::file_digest(&rx.path("sparse.img"), 1 << 20).expect("digest");
    assert_eq!(digest, summary.digest);
}

#[test]
fn wrong_key_is_refused_and_nothing_is_written() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "secret.bin", 1000);
    let other = Psk::new(b"another-key-that-is-long-enough").expect("key");
    let err = send_file(&src, rx.addr, &other, &options(2), None, &Hooks::default())
        .expect_err("must fail");
    assert!(err.to_string().contains("Authentication failed"), "{err}");
    assert!(rx.names().is_empty(), "{:?}", rx.names());
}

#[test]
fn refuses_path_traversal_names_with_a_clear_error() {
    // The receiver refuses names it would not write; the sender sees the reason.
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), ".hidden", 10);
    let err = send(&src, &rx, &options(1)).expect_err("must fail");
    assert!(err.to_string().contains("refused file name"), "{err}");
}

#[test]
fn a_registered_name_goes_to_its_path_once_and_never_to_the_receive_directory() {
    let rx = TestReceiver::start();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "disk.raw", 3 << 20);
    let vm_dir = tempfile::tempdir().expect("tempdir");
    let target = vm_dir.path().join("root.raw");
    let send_as = |name: &str| {
        send_file_as(
            &src,
            name,
            rx.addr,
            &psk(),
            &options(2),
            None,
            &Hooks::default(),
        )
    };
    let err = rx
        .receiver
        .expect_file("plain", target.clone())
        .expect_err("plain names are not registrable");
    assert!(err.to_string().contains("starting with a dot"), "{err}");

    rx.receiver
        .expect_file(".migrate-vm1-disk", target.clone())
        .expect("register");
    send_as(".migrate-vm1-disk").expect("registered transfer");
    assert_same(&src, &target);
    assert!(rx.names().is_empty(), "{:?}", rx.names());
    // Used once: a second offer (or one after a withdrawal) is refused, not written.
    let err = send_as(".migrate-vm1-disk").expect_err("registration used up");
    assert!(err.to_string().contains("refused file name"), "{err}");
    rx.receiver
        .expect_file(".migrate-vm2-disk", vm_dir.path().join("other.raw"))
        .expect("register");
    assert!(rx.receiver.forget_file(".migrate-vm2-disk"));
    let err = send_as(".migrate-vm2-disk").expect_err("withdrawn");
    assert!(err.to_string().contains("refused file name"), "{err}");
    assert!(rx.names().is_empty(), "{:?}", rx.names());
    let mut left: Vec<String> = std::fs::read_dir(vm_dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["root.raw"]);
}

mod privileged {
    use std::{
        os::unix::process::CommandExt as _,
        process::{Command, Stdio},
        sync::Mutex,
        time::Duration,
    };

    use super::*;
    use crate::common::{self, NetNs};

    #[test]
    fn transfer_survives_a_stream_cut_mid_transfer() {
        common::require_root();
        let ns = NetNs::new("cut");
        // A 1 Gbit/s link keeps the transfer going long enough to cut a stream in its middle.
        common::run(
            "ip",
            &[
                "netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
                "rate", "1gbit", "burst", "512kb", "latency", "100ms",
            ],
        );
        let listener = ns.on_thread(|| TcpListener::bind("127.0.0.1:0").expect("bind in netns"));
        let rx = TestReceiver::start_with(listener);
        let src_dir = tempfile::tempdir().expect("tempdir");
        let src = random_file(src_dir.path(), "cut.bin", 256 << 20);
        let ports = Mutex::new(Vec::new());
        let cut = AtomicBool::new(false);
        let ns_name = ns.name.clone();
        let addr = rx.addr;
        let (summary, was_cut) = ns.on_thread({
            let src = src.clone();
            move || {
                let on_stream = |local: SocketAddr| ports.lock().expect("lock").push(local.port());
                let on_progress = |p: dwcp_agent::amst::sender::Progress| {
                    if p.done_bytes > p.total_bytes / 8 && !cut.swap(true, Ordering::SeqCst) {
                        let port = ports.lock().expect("lock")[0];
                        let script = format!(
                            "table inet dwcp_cut {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
                             tcp sport {port} reject with tcp reset\n }}\n}}\n"
                        );
                        let mut child = Command::new("ip")
                            .args(["netns", "exec", &ns_name, "nft", "-f", "-"])
                            .stdin(Stdio::piped())
                            .spawn()
                            .expect("nft");
                        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("script");
                        assert!(child.wait().expect("wait").success(), "nft failed");
                    }
                };
                let hooks = Hooks { on_stream: Some(&on_stream), on_progress: Some(&on_progress) };
                let opts = SendOptions { streams: StreamCount::Fixed(4), block_size: 256 << 10, ..SendOptions::default() };
                (send_file(&src, addr, &psk(), &opts, None, &hooks), cut.load(Ordering::SeqCst))
            }
        });
        assert!(was_cut, "The transfer ended before a stream could be cut");
        let summary = summary.expect("transfer must survive a dead stream");
        assert!(summary.failed_streams >= 1, "{summary:?}");
        assert_same(&src, &rx.path("cut.bin"));
    }

    #[test]
    fn killed_receiver_fails_cleanly_and_a_resend_resumes() {
        common::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("psk");
        std::fs::write(&key, KEY).expect("key");
        let rx_dir = dir.path().join("rx");
        std::fs::create_dir(&rx_dir).expect("mkdir");
        let port = common::free_port();
        let http: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .expect("addr");
        let start_agent = || {
            KillOnDrop(
                Command::new(common::agent_bin())
                    .args(["run", "--no-probes", "--http-addr", &http.to_string()])
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args([
                        "--receive-dir",
                        rx_dir.to_str().expect("utf-8"),
                        "--psk-file",
                        key.to_str().expect("utf-8"),
                    ])
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .expect("agent"),
            )
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let wait_listening = || {
            for _ in 0..100 {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            panic!("Agent not listening");
        };
        let mut agent = start_agent();
        wait_listening();
        let src = random_file(dir.path(), "vm.img", 256 << 20);
        let killed = AtomicBool::new(false);
        let agent_pid = agent.0.id();
        let state = rx_dir.join(".vm.img.dwcp-state");
        let on_progress = |p: dwcp_agent::amst::sender::Progress| {
            // Kill once a third has been sent and the receiver has saved a resume record.
            if p.done_bytes > p.total_bytes / 3
                && state.exists()
                && !killed.swap(true, Ordering::SeqCst)
            {
                // SAFETY: killing our own child process.
                unsafe { libc::kill(agent_pid as i32, libc::SIGKILL) };
            }
        };
        let hooks = Hooks {
            on_stream: None,
            on_progress: Some(&on_progress),
        };
        // Paced (4 × 50 MB/s, about 1.3 s in all) so that the kill lands mid-transfer
        // however fast this machine moves bytes on loopback.
        let opts = SendOptions {
            streams: StreamCount::Fixed(4),
            block_size: 1 << 20,
            tuning: dwcp_agent::amst::socket::SocketTuning {
                max_pacing_rate: Some(50_000_000),
                ..Default::default()
            },
            ..SendOptions::default()
        };
        let err = send_file(&src, addr, &psk(), &opts, None, &hooks).expect_err("receiver died");
        let _ = agent.0.wait();
        assert!(killed.load(Ordering::SeqCst));
        let message = dwcp_agent::error_chain(&err);
        assert!(
            message.contains("streams failed") || message.contains("closed"),
            "{message}"
        );
        assert!(
            !rx_dir.join("vm.img").exists(),
            "A partial file must not appear under the final name"
        );

        let _agent = start_agent();
        wait_listening();
        let summary =
            send_file(&src, addr, &psk(), &opts, None, &Hooks::default()).expect("resend");
        assert_same(&src, &rx_dir.join("vm.img"));
        assert!(
            summary.resumed_blocks > 0,
            "The resend should skip blocks already on disk: {summary:?}"
        );
        let (_, metrics) = common::http_get(http, "/metrics").expect("metrics");
        assert!(
            metrics.contains("dwcp_amst_transfers_total{outcome=\"completed\"} 1"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("\ndwcp_pba_blocks 0\n"),
            "The receiver's pool should be in use: {metrics}"
        );
    }

    /// A child process killed when the test ends, also on panic.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A hand-driven client for feeding the receiver bad frames.
mod raw {
    use std::net::TcpStream;

    use dwcp_agent::protocol::{
        ProtocolError,
        frame::{FrameReader, FrameType, FrameWriter},
        handshake::{self, Role},
        messages::{self, Control, MAX_CONTROL_LEN},
    };

    use super::*;

    pub fn conn(addr: SocketAddr, role: Role) -> (FrameReader<TcpStream>, FrameWriter<TcpStream>) {
        let mut s = TcpStream::connect(addr).expect("connect");
        handshake::client(&mut s, &psk(), role).expect("handshake");
        let r = s.try_clone().expect("clone");
        (FrameReader::new(r, MAX_CONTROL_LEN), FrameWriter::new(s))
    }

    /// Block size of the hand-driven transfer.
    pub const BLOCK: u64 = 64 << 10;

    /// Offers a two-block file and returns the control connection and session.
    pub fn offer(addr: SocketAddr) -> (FrameReader<TcpStream>, FrameWriter<TcpStream>, u64) {
        let (mut r, mut w) = conn(addr, Role::Control);
        let offer = Control::Offer {
            transfer_id: "t".into(),
            name: "raw.bin".into(),
            size: 2 * BLOCK,
            block_size: BLOCK as u32,
            stream: false,
            window: 0,
            codec: Default::default(),
        };
        messages::send(&mut w, &offer).expect("offer");
        match messages::recv(&mut r).expect("accept") {
            Control::Accept { session_id, .. } => (r, w, session_id),
            other => panic!("Expected accept, got {other:?}"),
        }
    }

    /// Whether the receiver closed the stream (instead of acknowledging).
    pub fn closed(r: &mut FrameReader<TcpStream>) -> bool {
        matches!(
            r.read_header(),
            Ok(None) | Err(ProtocolError::Closed | ProtocolError::Io(_))
        )
    }

    pub fn ack(r: &mut FrameReader<TcpStream>) -> u64 {
        let h = r.read_header().expect("ack").expect("ack frame");
        assert_eq!(h.kind, FrameType::Ack);
        h.seq
    }
}

#[test]
fn corrupted_replayed_and_truncated_frames_are_refused_and_nothing_is_finalized() {
    use dwcp_agent::protocol::{
        frame::FrameType,
        handshake::Role,
        messages::{self, Control},
    };
    let rx = TestReceiver::start();
    let (mut control_r, mut control_w, session) = raw::offer(rx.addr);
    let block = vec![7u8; raw::BLOCK as usize];

    // A good block is acknowledged; the same frame sent again (a replay) closes the stream.
    let (mut r, mut w) = raw::conn(rx.addr, Role::Data { session });
    let header = w.next_header(FrameType::Data, 0, 0, &block).encode();
    let mut frame = header.to_vec();
    frame.extend_from_slice(&block);
    w.get_mut().write_all(&frame).expect("write");
    assert_eq!(raw::ack(&mut r), 0);
    w.get_mut().write_all(&frame).expect("replay");
    assert!(
        raw::closed(&mut r),
        "A replayed frame must close the stream"
    );

    // A block whose payload does not match its checksum is refused.
    let (mut r, mut w) = raw::conn(rx.addr, Role::Data { session });
    let mut header = w.next_header(FrameType::Data, 1, raw::BLOCK, &block);
    header.payload_check ^= 1;
    w.get_mut().write_all(&header.encode()).expect("header");
    w.get_mut().write_all(&block).expect("payload");
    assert!(
        raw::closed(&mut r),
        "A corrupted block must close the stream"
    );

    // A block cut short by the sender's disappearance is never acknowledged.
    let (mut r, mut w) = raw::conn(rx.addr, Role::Data { session });
    let header = w
        .next_header(FrameType::Data, 1, raw::BLOCK, &block)
        .encode();
    w.get_mut().write_all(&header).expect("header");
    w.get_mut().write_all(&block[..100]).expect("half payload");
    w.get_mut()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert!(raw::closed(&mut r));

    // Block 1 never arrived intact: the end of the transfer is refused with the reason.
    messages::send(
        &mut control_w,
        &Control::End {
            size: 2 * raw::BLOCK,
            blake3: "00".into(),
        },
    )
    .expect("end");
    match messages::recv(&mut control_r).expect("reply") {
        Control::Abort { reason } => assert!(reason.contains("1 blocks never arrived"), "{reason}"),
        other => panic!("Expected abort, got {other:?}"),
    }
    assert!(
        !rx.path("raw.bin").exists(),
        "Nothing may appear under the final name"
    );
}

#[test]
fn data_stream_for_unknown_session_and_garbage_connections_are_refused() {
    let rx = TestReceiver::start();
    let mut s = std::net::TcpStream::connect(rx.addr).expect("connect");
    let err = dwcp_agent::protocol::handshake::client(
        &mut s,
        &psk(),
        dwcp_agent::protocol::handshake::Role::Data { session: 12345 },
    )
    .expect_err("unknown session");
    assert!(err.to_string().contains("Unknown session 12345"), "{err}");
    let mut g = std::net::TcpStream::connect(rx.addr).expect("connect");
    g.write_all(&[0xFF; 200]).expect("garbage");
    let mut buf = [0u8; 16];
    use std::io::Read as _;
    assert_eq!(
        g.read(&mut buf).unwrap_or(0),
        0,
        "Garbage must get the connection closed"
    );
    // The receiver still works afterwards.
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(src_dir.path(), "after.bin", 5000);
    send(&src, &rx, &options(1)).expect("send after garbage");
}
