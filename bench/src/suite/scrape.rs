//! Reading the receiving agent's `/metrics` once a second while a case runs: the
//! kernel-measured bytes for link utilization over time, the agent's CPU and its block
//! pools.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::link::Link;
use crate::agent;

/// How often the agent is scraped.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The figures of one scrape (sums over label sets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the case started.
    pub t: f64,
    /// `dwcp_kernel_rx_bytes_total` (`None` without probes).
    pub kernel_rx_bytes: Option<f64>,
    /// `dwcp_amst_payload_bytes_total`.
    pub payload_bytes: f64,
    /// `dwcp_agent_cpu_seconds_total` (`None` without probes).
    pub cpu_seconds: Option<f64>,
    /// `dwcp_pba_blocks`.
    pub pba_blocks: f64,
    /// `dwcp_pba_blocks_in_use`.
    pub pba_blocks_in_use: f64,
}

/// Reads the figures from a Prometheus text exposition.
pub fn parse(body: &str, t: f64) -> Sample {
    let sum = |name: &str| -> Option<f64> {
        let mut found = None;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok());
            if let Some(v) = value {
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    };
    let probes = sum("dwcp_probe_up") == Some(1.0);
    Sample {
        t,
        kernel_rx_bytes: sum("dwcp_kernel_rx_bytes_total").filter(|_| probes),
        payload_bytes: sum("dwcp_amst_payload_bytes_total").unwrap_or(0.0),
        cpu_seconds: sum("dwcp_agent_cpu_seconds_total").filter(|_| probes),
        pba_blocks: sum("dwcp_pba_blocks").unwrap_or(0.0),
        pba_blocks_in_use: sum("dwcp_pba_blocks_in_use").unwrap_or(0.0),
    }
}

/// Scrapes `http_addr` once a second while `work` runs (and once before and after);
/// returns what `work` returned and the samples. Scrapes that fail are skipped.
pub fn during<T: Send>(
    link: &Link,
    http_addr: SocketAddr,
    work: impl FnOnce() -> T + Send,
) -> (T, Vec<Sample>) {
    let start = Instant::now();
    let scrape = || {
        link.in_receiver_ns(|| agent::http_get(http_addr, "/metrics"))
            .ok()
            .map(|body| parse(&body, start.elapsed().as_secs_f64()))
    };
    let stop = AtomicBool::new(false);
    let first = scrape();
    let (out, mut samples) = thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut samples = Vec::new();
            let mut next = start + PERIOD;
            while !stop.load(Ordering::Acquire) {
                if Instant::now() >= next {
                    samples.extend(scrape());
                    next += PERIOD;
                }
                thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        let out = work();
        stop.store(true, Ordering::Release);
        (out, sampler.join().unwrap_or_default())
    });
    samples.extend(scrape());
    samples.splice(0..0, first);
    (out, samples)
}

/// What a send stopped at the cap moved between the first and the last scrape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moved {
    /// Bytes moved.
    pub bytes: f64,
    /// Seconds between the two scrapes.
    pub seconds: f64,
    /// Counted by the receiver's kernel (eBPF) because not one block completed.
    pub from_kernel: bool,
}

/// What the receiver got between the first and the last sample: its payload bytes, or,
/// when not one block completed (a slow single stream on a starved machine), the bytes
/// its kernel received. An error says why nothing can be measured: nothing arrived at
/// all, which no slowness explains.
pub fn moved_by_cap(samples: &[Sample]) -> Result<Moved, String> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err("no scrape of the receiver's metrics to measure what it moved".into());
    };
    let seconds = last.t - first.t;
    if seconds <= 0.0 {
        return Err("a single scrape of the receiver's metrics".into());
    }
    let payload = last.payload_bytes - first.payload_bytes;
    if payload > 0.0 {
        return Ok(Moved {
            bytes: payload,
            seconds,
            from_kernel: false,
        });
    }
    match (first.kernel_rx_bytes, last.kernel_rx_bytes) {
        (Some(a), Some(b)) if b > a => Ok(Moved {
            bytes: b - a,
            seconds,
            from_kernel: true,
        }),
        (Some(_), Some(_)) => {
            Err("nothing reached the receiver: no payload and no bytes in its kernel's count".into())
        }
        _ => Err("no payload reached the receiver, and no kernel count to look at (eBPF probes not loaded)".into()),
    }
}

/// Per-interval kernel receive rate in bits per second, at the end of each interval.
pub fn rx_rate_series(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let bytes = b.kernel_rx_bytes? - a.kernel_rx_bytes?;
            let dt = b.t - a.t;
            (dt > 0.0).then(|| (b.t, bytes * 8.0 / dt))
        })
        .collect()
}

/// Growth of the agent's CPU seconds from the first to the last sample.
pub fn cpu_growth(samples: &[Sample]) -> Option<f64> {
    Some(samples.last()?.cpu_seconds? - samples.first()?.cpu_seconds?)
}

/// Idle pool blocks per block in use, over the samples with blocks in use, as a
/// percentage (`None` when no sample had a block in use).
pub fn pba_overhead_percent(samples: &[Sample]) -> Option<f64> {
    let busy: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.pba_blocks_in_use > 0.0)
        .collect();
    let in_use: f64 = busy.iter().map(|s| s.pba_blocks_in_use).sum();
    let idle: f64 = busy
        .iter()
        .map(|s| (s.pba_blocks - s.pba_blocks_in_use).max(0.0))
        .sum();
    (in_use > 0.0).then(|| idle / in_use * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP dwcp_probe_up x\n# TYPE dwcp_probe_up gauge\ndwcp_probe_up 1\n\
        dwcp_kernel_rx_bytes_total 1000\n\
        dwcp_kernel_rx_bytes_total_created 17\n\
        dwcp_agent_cpu_seconds_total{thread=\"a\"} 1.5\n\
        dwcp_agent_cpu_seconds_total{thread=\"b\"} 0.5\n\
        dwcp_amst_payload_bytes_total{direction=\"rx\"} 900\n\
        dwcp_pba_blocks 10\ndwcp_pba_blocks_in_use 8\n";

    #[test]
    fn sums_series_and_ignores_lookalike_names() {
        let s = parse(BODY, 2.0);
        assert_eq!(s.kernel_rx_bytes, Some(1000.0));
        assert_eq!(s.cpu_seconds, Some(2.0));
        assert_eq!(s.payload_bytes, 900.0);
        assert_eq!((s.pba_blocks, s.pba_blocks_in_use), (10.0, 8.0));
    }

    #[test]
    fn kernel_figures_need_the_probes() {
        let s = parse(&BODY.replace("dwcp_probe_up 1", "dwcp_probe_up 0"), 0.0);
        assert_eq!((s.kernel_rx_bytes, s.cpu_seconds), (None, None));
    }

    fn sample(t: f64, rx: f64, cpu: f64, blocks: f64, in_use: f64) -> Sample {
        Sample {
            t,
            kernel_rx_bytes: Some(rx),
            payload_bytes: rx,
            cpu_seconds: Some(cpu),
            pba_blocks: blocks,
            pba_blocks_in_use: in_use,
        }
    }

    #[test]
    fn rates_cpu_and_pool_overhead_from_samples() {
        let samples = [
            sample(0.0, 0.0, 1.0, 4.0, 0.0),
            sample(1.0, 125e6, 1.2, 12.0, 10.0),
            sample(2.0, 250e6, 1.5, 11.0, 10.0),
        ];
        assert_eq!(rx_rate_series(&samples), [(1.0, 1e9), (2.0, 1e9)]);
        assert!((cpu_growth(&samples).unwrap() - 0.5).abs() < 1e-9);
        assert!((pba_overhead_percent(&samples).unwrap() - 15.0).abs() < 1e-9);
        assert_eq!(pba_overhead_percent(&samples[..1]), None);
    }

    #[test]
    fn a_capped_send_is_measured_by_payload_else_by_the_kernel() {
        let at = |t: f64, payload: f64, rx: Option<f64>| Sample {
            t,
            payload_bytes: payload,
            kernel_rx_bytes: rx,
            ..Sample::default()
        };
        let by_payload = moved_by_cap(&[at(0.0, 0.0, Some(0.0)), at(2.0, 4e6, Some(5e6))]);
        assert_eq!(
            by_payload,
            Ok(Moved {
                bytes: 4e6,
                seconds: 2.0,
                from_kernel: false
            })
        );
        // Not one block completed, but bytes arrived: a slow send, measured.
        let by_kernel = moved_by_cap(&[at(1.0, 0.0, Some(100.0)), at(26.0, 0.0, Some(900.0))]);
        assert_eq!(
            by_kernel,
            Ok(Moved {
                bytes: 800.0,
                seconds: 25.0,
                from_kernel: true
            })
        );
        // Nothing at all, or nothing to look at: an error that says which.
        let dead = moved_by_cap(&[at(0.0, 0.0, Some(7.0)), at(25.0, 0.0, Some(7.0))]);
        assert!(dead.unwrap_err().contains("nothing reached"));
        let blind = moved_by_cap(&[at(0.0, 0.0, None), at(25.0, 0.0, None)]);
        assert!(blind.unwrap_err().contains("probes not loaded"));
        assert!(moved_by_cap(&[at(0.0, 5.0, None)]).is_err());
        assert!(moved_by_cap(&[]).is_err());
    }

    #[test]
    fn samples_before_during_and_after_the_work() {
        use std::sync::{Arc, atomic::AtomicUsize};
        // A tiny HTTP server answering every request with BODY, counting requests.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        thread::spawn(move || {
            for conn in listener.incoming() {
                use std::io::{Read as _, Write as _};
                let mut conn = conn.unwrap();
                // Read the whole request: closing with unread bytes would reset.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n{BODY}");
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        // The work lasts until the sampler has scraped during it (the first scrape is
        // made before the work starts).
        let (out, samples) = during(&Link::Loopback, addr, || {
            while served.load(Ordering::SeqCst) < 2 {
                thread::sleep(Duration::from_millis(10));
            }
            7
        });
        assert_eq!(out, 7);
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(samples[0].cpu_seconds, Some(2.0));
    }
}
