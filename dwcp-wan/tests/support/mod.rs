//! Helpers shared by the privileged tests: UDP probes and echo, iperf3, namespace lists.

#![expect(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic here is the test's failure report"
)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dwcp_wan::{Host, WanLink};

/// The real-time priority the tests' own traffic generators run at: the fidelity tests
/// measure the link, so the programs at its ends must not wait behind other work on a
/// busy 2-core machine (the emulator's data path runs at priority 10).
pub const GENERATOR_PRIORITY: i32 = 5;

/// Moves the calling thread to `SCHED_FIFO` at [`GENERATOR_PRIORITY`].
pub fn realtime() {
    let param = libc::sched_param {
        sched_priority: GENERATOR_PRIORITY,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    assert_eq!(
        result,
        0,
        "SCHED_FIFO needs root: {}",
        std::io::Error::last_os_error()
    );
}

/// A UDP socket bound in `host`'s namespace (the socket stays there when the thread
/// ends), with an 8 MiB receive buffer so bursts are not dropped by the receiver.
pub fn udp_socket(host: &Host, port: u16) -> UdpSocket {
    let addr = host.addr;
    let socket = host.run_in(move || UdpSocket::bind((addr, port)).unwrap());
    let size: libc::c_int = 8 << 20;
    // SAFETY: SO_RCVBUFFORCE reads one c_int from `size`; the descriptor is open.
    let result = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        result,
        0,
        "SO_RCVBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    socket
}

/// An echo server on `host:port` until dropped.
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    pub fn start(host: &Host, port: u16) -> Echo {
        let socket = udp_socket(host, port);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            realtime();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    socket.send_to(&buf[..len], from).unwrap();
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// Round-trip times of `count` sequential UDP probes from A to an echo in B (after
/// `warmup` unrecorded ones, which also resolve ARP on every hop).
pub fn udp_rtts(link: &WanLink, count: usize, warmup: usize) -> Vec<Duration> {
    let _echo = Echo::start(link.b(), 7007);
    std::thread::scope(|scope| scope.spawn(|| probe(link, count, warmup)).join().unwrap())
}

fn probe(link: &WanLink, count: usize, warmup: usize) -> Vec<Duration> {
    realtime();
    let client = udp_socket(link.a(), 0);
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let server = SocketAddr::from((link.b().addr, 7007));
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count + warmup {
        let probe = (i as u64).to_be_bytes();
        let start = Instant::now();
        client.send_to(&probe, server).unwrap();
        loop {
            let (len, _) = client.recv_from(&mut buf).expect("echo reply within 2 s");
            if buf[..len] == probe {
                break;
            }
        }
        if i >= warmup {
            rtts.push(start.elapsed());
        }
    }
    rtts
}

pub fn mean(values: &[Duration]) -> Duration {
    values.iter().sum::<Duration>() / values.len() as u32
}

/// The final JSON of a one-stream iperf3 run from A to B.
pub fn iperf3(link: &WanLink, seconds: u32, omit: u32) -> serde_json::Value {
    let mut server = link
        .b()
        .command("chrt")
        .args([
            "-f",
            &GENERATOR_PRIORITY.to_string(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            &link.b().addr.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 is installed by `cargo xtask setup`");
    std::thread::sleep(Duration::from_millis(300));
    let output = link
        .a()
        .command("chrt")
        .args([
            "-f",
            &GENERATOR_PRIORITY.to_string(),
            "iperf3",
            "-c",
            &link.b().addr.to_string(),
            "-t",
            &seconds.to_string(),
            "-O",
            &omit.to_string(),
            "-J",
        ])
        .output()
        .expect("iperf3 is installed by `cargo xtask setup`");
    let _ = server.wait();
    assert!(
        output.status.success(),
        "iperf3 client failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Our namespaces that belong to process `pid`.
pub fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}-", dwcp_wan::NETNS_PREFIX);
    dwcp_wan::existing_namespaces()
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// How many threads this process has.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
