//! The kernel probes measure exactly what the agent's sockets and threads do.
//!
//! Each test loads the probes tracking its own process (nextest runs every test in its
//! own process), so "the agent" here is the test process itself and every other process
//! is a stranger whose traffic must not be counted.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

mod privileged {
    use std::{
        io::{Read, Write},
        net::{Shutdown, TcpListener, TcpStream},
        os::fd::AsRawFd,
        process::{Command, Stdio},
        thread,
        time::{Duration, Instant},
    };

    use dwcp_agent::probe::{Flow, Probes};

    use crate::common::{self, NetNs};

    fn load_probes() -> Probes {
        common::require_root();
        Probes::load(&[std::process::id()]).expect("load probes")
    }

    /// Writes `len` bytes in chunks of irregular sizes.
    fn write_pattern(stream: &mut TcpStream, len: usize) {
        let chunk = vec![0xA5u8; 1 << 20];
        let mut left = len;
        let mut step = 4093;
        while left > 0 {
            let n = left.min(step).min(chunk.len());
            stream.write_all(&chunk[..n]).expect("write");
            left -= n;
            step = (step * 7 + 1) % chunk.len() + 1;
        }
    }

    fn read_to_end_count(stream: &mut TcpStream) -> usize {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match stream.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n,
            }
        }
    }

    fn flow_by_local(flows: &[Flow], local: std::net::SocketAddr) -> &Flow {
        flows
            .iter()
            .find(|f| f.local == local)
            .unwrap_or_else(|| panic!("No flow with local address {local} in {flows:#?}"))
    }

    /// A stranger process pair (iperf3) moving data over loopback during the test.
    struct Stranger {
        server: std::process::Child,
        client: std::process::Child,
        port: u16,
    }

    impl Stranger {
        fn start() -> Self {
            let port = common::free_port();
            let server = Command::new("iperf3")
                .args(["-s", "-1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("iperf3 (run `cargo xtask setup`)");
            thread::sleep(Duration::from_millis(300));
            let client = Command::new("iperf3")
                .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-n", "200M"])
                .stdout(Stdio::null())
                .spawn()
                .expect("iperf3 client");
            Self {
                server,
                client,
                port,
            }
        }

        fn finish(mut self) {
            let status = self.client.wait().expect("iperf3 client");
            assert!(status.success(), "iperf3 client failed");
            let _ = self.server.wait();
        }
    }

    #[test]
    fn counts_exact_bytes_of_own_sockets_and_none_of_other_processes() {
        let probes = load_probes();
        let stranger = Stranger::start();
        const UP: usize = 100 * 1024 * 1024 + 12_345;
        const DOWN: usize = 4 * 1024 + 7;

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let received = read_to_end_count(&mut conn);
            write_pattern(&mut conn, DOWN);
            conn.shutdown(Shutdown::Write).expect("shutdown");
            (received, conn.local_addr().expect("addr"))
        });
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        write_pattern(&mut client, UP);
        client.shutdown(Shutdown::Write).expect("shutdown");
        let got_back = read_to_end_count(&mut client);
        let (received, accepted_addr) = server.join().expect("server");
        assert_eq!((received, got_back), (UP, DOWN));
        drop(client);
        stranger_finish_then_check(stranger, &probes, |flows| {
            let c = flow_by_local(flows, client_addr);
            assert_eq!(
                (c.tx_bytes, c.rx_bytes),
                (UP as u64, DOWN as u64),
                "client flow"
            );
            let s = flow_by_local(flows, accepted_addr);
            assert_eq!(
                (s.tx_bytes, s.rx_bytes),
                (DOWN as u64, UP as u64),
                "server flow"
            );
            assert_eq!(s.remote, client_addr);
            let tx: u64 = flows.iter().map(|f| f.tx_bytes).sum();
            let rx: u64 = flows.iter().map(|f| f.rx_bytes).sum();
            assert_eq!(
                (tx, rx),
                ((UP + DOWN) as u64, (UP + DOWN) as u64),
                "{flows:#?}"
            );
        });
    }

    fn stranger_finish_then_check(stranger: Stranger, probes: &Probes, check: impl Fn(&[Flow])) {
        let port = stranger.port;
        stranger.finish();
        let flows = probes.flows().expect("read flows");
        let me = std::process::id();
        for flow in &flows {
            assert_eq!(flow.tgid, me, "Flow of another process counted: {flow:?}");
            assert!(
                flow.local.port() != port && flow.remote.port() != port,
                "iperf3 traffic counted: {flow:?}"
            );
        }
        check(&flows);
    }

    #[test]
    fn counts_retransmissions_under_packet_loss() {
        let probes = load_probes();
        let ns = NetNs::new("retx");
        let port = 7001;
        // Drop on input (the receiver's side): a drop on output is reported to TCP as a
        // local send error and retried, not lost and retransmitted.
        ns.nft(&format!(
            "table inet dwcp_loss {{\n chain inbound {{\n  type filter hook input priority 0; policy accept;\n  \
             tcp dport {port} numgen random mod 100 < 5 drop\n }}\n}}\n"
        ));
        let (listener, client) = ns.on_thread(move || {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind in netns");
            let client = TcpStream::connect(("127.0.0.1", port)).expect("connect in netns");
            (listener, client)
        });
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            read_to_end_count(&mut conn)
        });
        let mut client = client;
        const LEN: usize = 16 * 1024 * 1024;
        write_pattern(&mut client, LEN);
        client.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(server.join().expect("server"), LEN);
        let kernel_total_retrans = tcp_total_retrans(&client);
        let local = client.local_addr().expect("addr");
        let flows = probes.flows().expect("flows");
        let flow = flow_by_local(&flows, local);
        assert!(
            flow.retransmits > 0,
            "No retransmission counted under 5% loss: {flow:?}"
        );
        // The tracepoint fires once per retransmitted skb; TCP_INFO counts segments,
        // and one skb may carry several.
        assert!(
            flow.retransmits <= u64::from(kernel_total_retrans),
            "Counted {} retransmissions, kernel says {kernel_total_retrans} segments",
            flow.retransmits
        );
        assert_eq!(flow.tx_bytes, LEN as u64);
    }

    fn tcp_total_retrans(stream: &TcpStream) -> u32 {
        // SAFETY: tcp_info is plain data; zeroed is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: valid socket fd, `info` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_total_retrans
    }

    fn thread_cpu_time() -> Duration {
        // SAFETY: rusage is plain data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut usage) };
        assert_eq!(rc, 0);
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }

    #[test]
    fn accounts_thread_cpu_time_within_ten_percent_of_getrusage() {
        let probes = load_probes();
        let burner = thread::Builder::new()
            .name("dwcp-burn".into())
            .spawn(|| {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as u32;
                let start = Instant::now();
                let mut x = 0u64;
                while thread_cpu_time() < Duration::from_millis(1500) {
                    for i in 0..10_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                    assert!(start.elapsed() < Duration::from_secs(60), "Burner starved");
                }
                (tid, thread_cpu_time())
            })
            .expect("spawn");
        let (tid, rusage) = burner.join().expect("burner");
        let threads = probes.threads().expect("threads");
        let sample = threads
            .iter()
            .find(|t| t.tid == tid)
            .unwrap_or_else(|| panic!("Thread {tid} not accounted: {threads:#?}"));
        assert_eq!(sample.name, "dwcp-burn");
        let measured = sample.on_cpu.as_secs_f64();
        let expected = rusage.as_secs_f64();
        let error = (measured - expected).abs() / expected;
        assert!(
            error < 0.10,
            "eBPF says {measured:.3}s, getrusage {expected:.3}s ({:.1}% off)",
            error * 100.0
        );
    }
}
