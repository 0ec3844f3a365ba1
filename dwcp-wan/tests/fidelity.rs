//! The emulator's fidelity, measured across real namespaces with real traffic: RTT per
//! built-in profile, rate with iperf3, loss, and the bounded queue. These are the only
//! tests that assert timing tolerances: they are the emulator's specification.

mod support;

#[cfg(test)] // Marks the helpers below as test code for clippy (unwrap allowed).
mod privileged {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use dwcp_wan::{LinkProfile, QueueLimit, WanLink};

    use crate::support::{self, iperf3, mean, udp_rtts, udp_socket};

    /// Mean UDP round trip over `count` probes on `profile` (made lossless).
    fn measured_rtt(profile: &LinkProfile, count: usize) -> Duration {
        let lossless = LinkProfile {
            loss: 0.0,
            ..profile.clone()
        };
        let link = WanLink::start(&lossless).unwrap();
        let mut rtts = udp_rtts(&link, count, 3);
        let stats = link.stop().unwrap();
        assert_eq!(stats.a_to_b.dropped_queue + stats.b_to_a.dropped_queue, 0);
        rtts.sort();
        eprintln!(
            "{}: RTT min {:?} median {:?} p99 {:?} max {:?}",
            profile.name,
            rtts[0],
            rtts[rtts.len() / 2],
            rtts[rtts.len() * 99 / 100],
            rtts[rtts.len() - 1]
        );
        mean(&rtts)
    }

    fn assert_within(measured: f64, expected: f64, tolerance: f64, what: &str) {
        let error = (measured - expected).abs() / expected;
        assert!(
            error <= tolerance,
            "{what}: measured {measured:.1}, expected {expected:.1} ± {:.0}% (off by {:.1}%)",
            tolerance * 100.0,
            error * 100.0
        );
    }

    #[test]
    fn rtt_matches_every_builtin_profile() {
        for (profile, count) in LinkProfile::builtins().into_iter().zip([500, 200, 40, 20]) {
            let measured = measured_rtt(&profile, count);
            eprintln!(
                "{}: mean RTT {:?} over {count} probes (profile {:?})",
                profile.name, measured, profile.rtt
            );
            let expected = profile.rtt.as_secs_f64() * 1e6;
            let measured = measured.as_secs_f64() * 1e6;
            // The path itself (two veth hops, forwarding, the TUN device, and cross-CPU
            // wake-ups of the emulator's and the probe's threads) adds a floor no profile
            // controls. Measured on the 2-vCPU VM with other builds running (load average
            // 11-15): 55-105 µs for sub-millisecond delays, 190-390 µs for longer ones
            // (the fastest single probe of metro-1g-5ms is already +200 µs: a floor, not
            // noise; it grows with the machine's load). So the bound is 5% or that floor
            // with some margin, whichever is larger.
            let floor = if profile.rtt < Duration::from_millis(1) {
                150.0
            } else {
                500.0
            };
            let slack = (expected * 0.05).max(floor);
            assert!(
                measured >= expected && measured <= expected + slack,
                "{}: mean RTT {measured:.1} µs, expected {expected:.1} µs to +{slack:.0} µs",
                profile.name
            );
        }
    }

    /// Runs one iperf3 stream over a `rate_bps`, 2 ms link and checks both the wire rate
    /// the emulator forwarded and iperf3's goodput against the rate.
    fn rate_is_reached(rate_bps: u64) {
        let profile = LinkProfile::new("rate-test", rate_bps, Duration::from_millis(2));
        let link = WanLink::start(&profile).unwrap();
        let report = iperf3(&link, 8, 2);
        let stats = link.stop().unwrap();
        let goodput = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap();
        // Full segments are 1500-byte IP packets carrying 1448 bytes (20 IP + 20 TCP +
        // 12 timestamp option bytes of headers).
        let expected_goodput = rate_bps as f64 * 1448.0 / 1500.0;
        eprintln!(
            "rate {rate_bps}: iperf3 goodput {goodput:.0} bit/s, expected {expected_goodput:.0}"
        );
        // Wire rate: the whole seconds after slow start (the series starts when the link does).
        let seconds = &stats.a_to_b.bytes_per_second;
        eprintln!("rate {rate_bps}: bytes per second {seconds:?}");
        assert!(seconds.len() >= 8, "{seconds:?}");
        let steady = &seconds[3..seconds.len() - 1];
        let wire = steady.iter().sum::<u64>() as f64 * 8.0 / steady.len() as f64;
        assert_within(wire, rate_bps as f64, 0.05, "wire rate in bit/s");
        let fastest = *steady.iter().max().unwrap() as f64 * 8.0;
        assert!(
            fastest <= rate_bps as f64 * 1.05,
            "a second carried {fastest} bit/s, above the rate"
        );
        assert_within(goodput, expected_goodput, 0.05, "iperf3 goodput in bit/s");
    }

    #[test]
    fn rate_of_1_gbit_is_reached_by_one_tcp_stream() {
        rate_is_reached(1_000_000_000);
    }

    #[test]
    fn rate_of_100_mbit_is_reached_by_one_tcp_stream() {
        rate_is_reached(100_000_000);
    }

    /// Sends `count` datagrams from A to B, `burst` at a time with `pause` between, and
    /// returns how many arrived and how long sending took.
    fn blast(
        link: &WanLink,
        count: u64,
        size: usize,
        burst: u64,
        pause: Duration,
    ) -> (u64, Duration) {
        let receiver = udp_socket(link.b(), 7100);
        receiver
            .set_read_timeout(Some(Duration::from_millis(300) + link.profile().rtt))
            .unwrap();
        let sender = udp_socket(link.a(), 0);
        let to = SocketAddr::from((link.b().addr, 7100));
        let payload = vec![0x5au8; size];
        let counter = std::thread::spawn(move || {
            support::realtime();
            let mut buf = [0u8; 2048];
            let mut received = 0u64;
            while receiver.recv(&mut buf).is_ok() {
                received += 1;
            }
            received
        });
        let sending = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    support::realtime();
                    let started = Instant::now();
                    for i in 0..count {
                        sender.send_to(&payload, to).unwrap();
                        if i % burst == burst - 1 {
                            std::thread::sleep(pause);
                        }
                    }
                    started.elapsed()
                })
                .join()
                .unwrap()
        });
        (counter.join().unwrap(), sending)
    }

    /// Whether `lost` of `count` is within 4 standard deviations of Binomial(count, p).
    fn assert_binomial(lost: u64, count: u64, p: f64, what: &str) {
        let mean = count as f64 * p;
        let sigma = (count as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (lost as f64 - mean).abs() <= 4.0 * sigma,
            "{what}: {lost} of {count} lost, expected {mean:.0} ± {:.0} (4 sigma)",
            4.0 * sigma
        );
    }

    #[test]
    fn loss_matches_the_lossy_builtin_profiles_and_a_custom_one() {
        let mut profiles: Vec<LinkProfile> = LinkProfile::builtins()
            .into_iter()
            .filter(|profile| profile.loss > 0.0)
            .collect();
        profiles.push(LinkProfile {
            loss: 0.02,
            ..LinkProfile::new("two-percent", 1_000_000_000, Duration::from_millis(1))
        });
        for profile in profiles {
            let link = WanLink::start(&profile).unwrap();
            const COUNT: u64 = 40_000;
            // 20 datagrams of 1000 B every 0.5 ms: ~330 Mbit/s, far below the rate, so
            // the queue never fills and only the profile's loss drops packets.
            let (received, _) = blast(&link, COUNT, 1000, 20, Duration::from_micros(500));
            let stats = link.stop().unwrap();
            let direction = &stats.a_to_b;
            eprintln!(
                "{}: {received} of {COUNT} received, emulator lost {}",
                profile.name, direction.dropped_loss
            );
            assert_eq!(direction.dropped_queue, 0, "{direction:?}");
            assert_eq!(
                direction.packets_seen(),
                COUNT,
                "every datagram reached the emulator: {direction:?}"
            );
            assert_eq!(
                received, direction.packets,
                "every forwarded datagram arrived"
            );
            assert_binomial(COUNT - received, COUNT, profile.loss, &profile.name);
        }
    }

    #[test]
    fn a_flow_faster_than_the_rate_is_tail_dropped_at_the_queue_limit() {
        let queue = 30_000;
        let profile = LinkProfile {
            queue: QueueLimit::Bytes(queue),
            ..LinkProfile::new("queue-test", 10_000_000, Duration::from_millis(2))
        };
        let link = WanLink::start(&profile).unwrap();
        // 4000 datagrams of 1400 B (1428 on the wire) as 100 Mbit/s: ten times the rate.
        let (received, sending) = blast(&link, 4000, 1400, 10, Duration::from_micros(1100));
        let stats = link.stop().unwrap();
        let direction = &stats.a_to_b;
        eprintln!("queue: {direction:?}, sending took {sending:?}");
        assert_eq!(direction.packets_seen(), 4000);
        assert!(
            direction.dropped_queue > 2000,
            "most of a 10x flow is dropped: {direction:?}"
        );
        assert!(
            direction.peak_queue_bytes <= queue,
            "the queue stayed bounded: {direction:?}"
        );
        assert!(
            direction.peak_queue_bytes > queue - 1428,
            "the queue filled: {direction:?}"
        );
        assert_eq!(received, direction.packets);
        // What got through is what the rate allows while the flow lasted, plus one queue.
        let allowed = 10_000_000.0 / 8.0 * sending.as_secs_f64() + queue as f64;
        assert!(
            (direction.bytes as f64) <= allowed * 1.05,
            "{} B forwarded, at most {allowed:.0} allowed",
            direction.bytes
        );
        assert!(
            (direction.bytes as f64) >= allowed * 0.8,
            "{} B forwarded, about {allowed:.0} expected",
            direction.bytes
        );
    }

    #[test]
    fn jitter_spreads_the_rtt_without_reordering() {
        let profile = LinkProfile {
            jitter: Duration::from_millis(2),
            seed: Some(11),
            ..LinkProfile::new("jitter-test", 1_000_000_000, Duration::from_millis(20))
        };
        let link = WanLink::start(&profile).unwrap();
        // Isolated probes: each direction's delay is 10 ms ± 2 ms, uniform, so the RTT is
        // triangular on 16-24 ms (2nd and 98th percentiles near 16.8 and 23.2 ms) plus the
        // path's floor (see `rtt_matches_every_builtin_profile`). Single probes can meet a
        // hypervisor hiccup, so the upper checks use the 98th percentile.
        let mut rtts = udp_rtts(&link, 200, 3);
        rtts.sort();
        let (min, low, high) = (
            rtts[0],
            rtts[rtts.len() * 2 / 100],
            rtts[rtts.len() * 98 / 100],
        );
        eprintln!(
            "jitter: RTT mean {:?} min {min:?} p2 {low:?} p98 {high:?} max {:?}",
            mean(&rtts),
            rtts[rtts.len() - 1]
        );
        assert_within(
            mean(&rtts).as_secs_f64() * 1e6,
            20_000.0,
            0.05,
            "mean RTT in µs with jitter",
        );
        assert!(
            min >= Duration::from_millis(16),
            "no probe beats the shortest delay: {min:?}"
        );
        assert!(high <= Duration::from_micros(24_350), "p98 {high:?}");
        assert!(
            high - low >= Duration::from_millis(4),
            "jitter spread only {:?}",
            high - low
        );

        // A stream of numbered datagrams 20 µs apart (far closer than the jitter range)
        // arrives in order.
        let receiver = udp_socket(link.b(), 7200);
        receiver
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let sender = udp_socket(link.a(), 0);
        let to = SocketAddr::from((link.b().addr, 7200));
        let counter = std::thread::spawn(move || {
            support::realtime();
            let mut buf = [0u8; 64];
            let mut order = Vec::new();
            while let Ok(len) = receiver.recv(&mut buf) {
                order.push(u32::from_be_bytes(buf[..len].try_into().unwrap()));
            }
            order
        });
        std::thread::scope(|scope| {
            scope.spawn(|| {
                support::realtime();
                for i in 0..5000u32 {
                    sender.send_to(&i.to_be_bytes(), to).unwrap();
                    let until = Instant::now() + Duration::from_micros(20);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            });
        });
        let order = counter.join().unwrap();
        link.stop().unwrap();
        assert_eq!(order.len(), 5000);
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "datagrams were reordered"
        );
    }
}
