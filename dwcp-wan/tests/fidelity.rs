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
        let rtts = udp_rtts(&link, count, 3);
        let stats = link.stop().unwrap();
        assert_eq!(stats.a_to_b.dropped_queue + stats.b_to_a.dropped_queue, 0);
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
            if profile.rtt < Duration::from_millis(1) {
                // Sub-millisecond: the kernel path (veth, forwarding, TUN, thread wake-ups)
                // adds tens of µs on its own, so the bound is absolute: +100 µs, never less.
                assert!(
                    measured >= expected && measured <= expected + 100.0,
                    "{}: measured {measured:.1} µs, expected {expected:.1} µs to +100 µs",
                    profile.name
                );
            } else {
                assert_within(
                    measured,
                    expected,
                    0.05,
                    &format!("{} RTT in µs", profile.name),
                );
            }
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
}
