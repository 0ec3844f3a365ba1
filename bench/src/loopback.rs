//! One loopback TCP stream pumped as fast as possible for a fixed time.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Size of each `write` and `read`.
const CHUNK: usize = 128 * 1024;

/// Sends for `duration` over one loopback connection; returns received bytes per second.
pub fn throughput(duration: Duration) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("Bind loopback listener")?;
    let addr = listener.local_addr()?;
    let receiver = thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
        let (mut conn, _) = listener.accept().context("Accept")?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            match conn.read(&mut buf).context("Read")? {
                0 => return Ok((total, start.elapsed())),
                n => total += n as u64,
            }
        }
    });
    let mut sender = TcpStream::connect(addr).context("Connect")?;
    let chunk = vec![0x5Au8; CHUNK];
    let start = Instant::now();
    while start.elapsed() < duration {
        sender.write_all(&chunk).context("Write")?;
    }
    sender.shutdown(Shutdown::Write).context("Shutdown")?;
    let (bytes, elapsed) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("Receiver thread panicked"))??;
    Ok(bytes as f64 / elapsed.as_secs_f64())
}
