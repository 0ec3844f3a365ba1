//! The emulator's fidelity, measured across real namespaces with real traffic: RTT per
//! built-in profile, rate with iperf3, loss, and the bounded queue.
//!
//! Two kinds of checks. Invariants hold whatever the host does: no packet is delivered
//! before its delay, none faster than the rate, none reordered, the queue stays bounded,
//! the loss is the profile's. Tolerances (RTT within a floor of the profile, the rate
//! reached to 5%) are the emulator's specification of its timing, and timing is only as
//! exact as the CPU time its threads get: they are checked on a run during which the
//! hypervisor took less than [`steal::CONTENDED_PERCENT`] of the CPU. A contended run is
//! measured again (at most [`TRIES`] runs in all); when every run was contended the test
//! says so and checks the invariants alone.

mod support;

#[cfg(test)] // Marks the helpers below as test code for clippy (unwrap allowed).
mod privileged {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use dwcp_wan::{LinkProfile, QueueLimit, WanLink, steal};

    use crate::support::{self, iperf3, mean, udp_rtts, udp_socket};

    /// Runs of a timed measurement before its tolerances are given up on a host that
    /// keeps taking the CPU.
    const TRIES: usize = 3;

    /// How early the emulator may deliver a packet that follows another closely (its
    /// `TRAIN_EARLY_NS`): per direction, so twice this on a round trip.
    const TRAIN_EARLY: Duration = Duration::from_micros(20);

    /// Runs `measure` until a run loses less than [`steal::CONTENDED_PERCENT`] of the CPU
    /// to the hypervisor, at most [`TRIES`] times. Returns the last run and whether its
    /// timing may be held to the tolerances. `measure` checks the invariants itself, so
    /// every run is held to them.
    fn on_a_quiet_host<T>(what: &str, mut measure: impl FnMut() -> T) -> (T, bool) {
        let mut stolen = Vec::new();
        loop {
            let (value, percent) = steal::measure(&mut measure);
            match percent {
                Some(p) if p >= steal::CONTENDED_PERCENT => stolen.push(p),
                // Quiet, or a kernel that does not count steal (then nothing is known
                // about the host, and the tolerances are the specification).
                _ => return (value, true),
            }
            if stolen.len() == TRIES {
                eprintln!(
                    "{what}: the hypervisor took {stolen:.0?} % of the CPU in {TRIES} runs; \
                     timing tolerances not checked, invariants checked in every run"
                );
                return (value, false);
            }
            eprintln!(
                "{what}: the hypervisor took {p:.0} % of the CPU; measuring again",
                p = stolen[stolen.len() - 1]
            );
        }
    }

    /// Sorted UDP round trips of `count` probes on `profile` (made lossless); checks that
    /// none beat the profile's RTT.
    fn measured_rtts(profile: &LinkProfile, count: usize) -> Vec<Duration> {
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
            "{}: RTT min {:?} median {:?} mean {:?} p99 {:?} max {:?} (profile {:?})",
            profile.name,
            rtts[0],
            rtts[rtts.len() / 2],
            mean(&rtts),
            rtts[rtts.len() * 99 / 100],
            rtts[rtts.len() - 1],
            profile.rtt
        );
        assert!(
            rtts[0] + 2 * TRAIN_EARLY >= profile.rtt,
            "{}: a probe came back after {:?}, before the profile's RTT {:?}",
            profile.name,
            rtts[0],
            profile.rtt
        );
        rtts
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

    /// Probes over a link of the same rate with no delay: what the path itself costs.
    const FLOOR_PROBES: usize = 200;

    #[test]
    fn rtt_matches_every_builtin_profile() {
        for (profile, count) in LinkProfile::builtins().into_iter().zip([500, 200, 40, 20]) {
            let path = LinkProfile::new("path-floor", profile.rate_bps, Duration::ZERO);
            let ((floor, rtts), quiet) = on_a_quiet_host(&profile.name, || {
                let floor = measured_rtts(&path, FLOOR_PROBES);
                (floor[floor.len() / 2], measured_rtts(&profile, count))
            });
            if !quiet {
                continue;
            }
            let expected = profile.rtt.as_secs_f64() * 1e6;
            let floor = floor.as_secs_f64() * 1e6;
            let median = rtts[rtts.len() / 2].as_secs_f64() * 1e6;
            // The path itself (two veth hops, forwarding, the TUN device, and cross-CPU
            // wake-ups of the emulator's and the probe's threads) adds a floor no profile
            // controls; it is measured beside each profile, on the same link with no delay,
            // and the profile's RTT is held on top of it. A delay adds one more cost the
            // floor does not have: during a sleep of a millisecond or more an idle virtual
            // CPU halts, and waking it goes through the hypervisor (measured 0.2-0.4 ms).
            // So the bound is 5% or a margin, whichever is larger. It holds the median:
            // one probe that met a hypervisor hiccup of tens of milliseconds moves the
            // mean of 500.
            let margin = if profile.rtt < Duration::from_millis(1) {
                60.0
            } else {
                500.0
            };
            let slack = (expected * 0.05).max(margin);
            eprintln!(
                "{}: median {median:.1} µs = floor {floor:.1} + profile {expected:.1} + {:.1}",
                profile.name,
                median - floor - expected
            );
            assert!(
                median <= floor + expected + slack,
                "{}: median RTT {median:.1} µs, expected the path's {floor:.1} µs + \
                 {expected:.1} µs to +{slack:.0} µs",
                profile.name
            );
        }
    }

    /// Runs one iperf3 stream over a `rate_bps`, 2 ms link and checks both the wire rate
    /// the emulator forwarded and iperf3's goodput against the rate.
    fn rate_is_reached(rate_bps: u64) {
        // Full segments are 1500-byte IP packets carrying 1448 bytes (20 IP + 20 TCP +
        // 12 timestamp option bytes of headers).
        let expected_goodput = rate_bps as f64 * 1448.0 / 1500.0;
        let what = format!("rate {rate_bps}");
        let ((goodput, seconds), quiet) = on_a_quiet_host(&what, || {
            let profile = LinkProfile::new("rate-test", rate_bps, Duration::from_millis(2));
            let link = WanLink::start(&profile).unwrap();
            let report = iperf3(&link, 8, 2);
            let stats = link.stop().unwrap();
            let goodput = report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap();
            // The series starts when the link does.
            let seconds = stats.a_to_b.bytes_per_second;
            eprintln!(
                "{what}: iperf3 goodput {goodput:.0} bit/s, expected {expected_goodput:.0}; \
                 bytes per second {seconds:?}"
            );
            assert!(seconds.len() >= 8, "{seconds:?}");
            // However starved, no flow gets through faster than the link.
            assert!(
                goodput <= expected_goodput * 1.05,
                "iperf3 got {goodput:.0} bit/s through a {rate_bps} bit/s link"
            );
            (goodput, seconds)
        });
        if !quiet {
            return;
        }
        // Wire rate: the whole seconds after slow start.
        let steady = &seconds[3..seconds.len() - 1];
        let wire = steady.iter().sum::<u64>() as f64 * 8.0 / steady.len() as f64;
        assert_within(wire, rate_bps as f64, 0.05, "wire rate in bit/s");
        // A second after the emulator's threads were held up carries the packets that
        // waited: only a quiet run shows the rate second by second.
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
        // triangular on 16-24 ms (median 20 ms, 2nd, 90th and 98th percentiles near 16.8,
        // 22.2 and 23.2 ms) plus the path's floor (see `rtt_matches_every_builtin_profile`).
        // Single probes meet hypervisor hiccups of tens of milliseconds even on a run that
        // lost little CPU (the steal counters tick every 10 ms), so the timing checks hold
        // the median and the 90th percentile, which a few such probes do not move.
        let (rtts, quiet) = on_a_quiet_host("jitter", || {
            let mut rtts = udp_rtts(&link, 200, 3);
            rtts.sort();
            let (min, low, high) = (
                rtts[0],
                rtts[rtts.len() * 2 / 100],
                rtts[rtts.len() * 98 / 100],
            );
            eprintln!(
                "jitter: RTT mean {:?} min {min:?} p2 {low:?} median {:?} p90 {:?} p98 {high:?} \
                 max {:?}",
                mean(&rtts),
                rtts[rtts.len() / 2],
                rtts[rtts.len() * 90 / 100],
                rtts[rtts.len() - 1]
            );
            assert!(
                min + 2 * TRAIN_EARLY >= Duration::from_millis(16),
                "no probe beats the shortest delay: {min:?}"
            );
            // A busy host only adds delay: it widens the spread, never narrows it.
            assert!(
                high - low >= Duration::from_millis(4),
                "jitter spread only {:?}",
                high - low
            );
            rtts
        });
        if quiet {
            let median = rtts[rtts.len() / 2];
            assert_within(
                median.as_secs_f64() * 1e6,
                20_000.0,
                0.05,
                "median RTT in µs with jitter",
            );
            // 22.2 ms plus the path: measured 0.4-0.6 ms at the median, 0.7-1.0 ms at the
            // 90th percentile (a longer sleep costs a longer wake-up), so 1.5 ms of margin.
            let p90 = rtts[rtts.len() * 90 / 100];
            assert!(p90 <= Duration::from_micros(23_700), "p90 {p90:?}");
        }

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
