//! The data path: one reader thread takes every packet the router forwards into the TUN
//! device, picks its direction by destination, lets that direction's [`Shaper`] decide
//! its fate and copies admitted packets into the direction's [`ring`]; one delivery
//! thread per direction sleeps until the oldest packet is due and writes it back to the
//! TUN device, where the kernel routes it on to the far host.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crate::clock::{minimise_timer_slack, now_ns, raise_to_realtime, sleep_until};
use crate::error::WanError;
use crate::profile::LinkProfile;
use crate::ring::{Consumer, Producer, ring};
use crate::shaper::{Shaper, Verdict};
use crate::stats::{DirectionCounters, LinkCounters};
use crate::topology::{A_NET, B_NET, in_subnet};

/// The longest a delivery thread sleeps before looking at the stop flag again.
const MAX_NAP_NS: u64 = 50_000_000;
/// The most a delivery thread wakes before a packet is due (then spins the rest): waking
/// an idle virtual CPU from a timer takes tens of µs, more than a LAN's one-way delay
/// tolerates, so the thread learns how late its sleeps end and wakes that much earlier.
const MAX_EARLY_NS: u64 = 200_000;
/// Below this much time left, spinning is cheaper than a sleep's wake-up.
const MIN_SLEEP_NS: u64 = 5_000;
/// While packets stream (the last one left less than [`TRAIN_GAP_NS`] ago), a packet due
/// within this much is written at once, and a later one is slept for without spinning:
/// at 1 Gbit/s packets are 12 µs apart, and spinning through every gap would cost a core
/// for a timing difference no transport can see (the rate is kept by the due times, which
/// later packets catch up with). Only packets after a pause get the spin's precision.
const TRAIN_EARLY_NS: u64 = 20_000;
/// See [`TRAIN_EARLY_NS`].
const TRAIN_GAP_NS: u64 = 200_000;

/// The running data path; [`Engine::stop`] (or drop) joins every thread.
pub struct Engine {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    threads: Vec<JoinHandle<()>>,
    deliverers: Vec<Thread>,
}

/// A direction of the link.
#[derive(Clone, Copy)]
enum Direction {
    AToB = 0,
    BToA = 1,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::AToB => "a-to-b",
            Direction::BToA => "b-to-a",
        }
    }

    fn counters(self, counters: &LinkCounters) -> &DirectionCounters {
        match self {
            Direction::AToB => &counters.a_to_b,
            Direction::BToA => &counters.b_to_a,
        }
    }
}

/// Everything the reader thread owns for one direction.
struct Inbound {
    shaper: Shaper,
    ring: Producer,
    deliverer: Thread,
}

impl Engine {
    /// Starts the threads on `tun` for `profile`, counting into `counters`.
    pub fn start(
        tun: OwnedFd,
        profile: &LinkProfile,
        counters: Arc<LinkCounters>,
    ) -> Result<Engine, WanError> {
        let tun = Arc::new(tun);
        let stop = Arc::new(AtomicBool::new(false));
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(WanError::Engine(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut engine = Engine {
            stop: Arc::clone(&stop),
            wake,
            threads: Vec::new(),
            deliverers: Vec::new(),
        };

        let ring_bytes = ring_capacity(profile);
        let seed = profile.seed.unwrap_or_else(rand::random);
        let to_b =
            engine.start_direction(Direction::AToB, &tun, profile, seed, ring_bytes, &counters)?;
        let to_a =
            engine.start_direction(Direction::BToA, &tun, profile, seed, ring_bytes, &counters)?;
        let wake_fd = engine.wake.as_raw_fd();
        let reader = std::thread::Builder::new()
            .name("wan-reader".to_owned())
            .spawn(move || read(&tun, wake_fd, [to_b, to_a], &counters, &stop))
            .map_err(WanError::Engine)?;
        engine.threads.push(reader);
        Ok(engine)
    }

    /// Starts `direction`'s delivery thread; returns what the reader needs to feed it.
    fn start_direction(
        &mut self,
        direction: Direction,
        tun: &Arc<OwnedFd>,
        profile: &LinkProfile,
        seed: u64,
        ring_bytes: usize,
        counters: &Arc<LinkCounters>,
    ) -> Result<Inbound, WanError> {
        let (producer, consumer) = ring(ring_bytes);
        let (tun, stop, counters) = (
            Arc::clone(tun),
            Arc::clone(&self.stop),
            Arc::clone(counters),
        );
        let handle = std::thread::Builder::new()
            .name(format!("wan-{}", direction.name()))
            .spawn(move || {
                deliver(
                    consumer,
                    tun.as_raw_fd(),
                    direction.counters(&counters),
                    &stop,
                )
            })
            .map_err(WanError::Engine)?;
        let deliverer = handle.thread().clone();
        self.deliverers.push(deliverer.clone());
        self.threads.push(handle);
        Ok(Inbound {
            shaper: Shaper::new(profile, seed.wrapping_add(direction as u64)),
            ring: producer,
            deliverer,
        })
    }

    /// Stops and joins every thread (idempotent).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to the eventfd, as eventfd requires.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        for thread in &self.deliverers {
            thread.unpark();
        }
        for handle in self.threads.drain(..) {
            if let Err(panic) = handle.join() {
                eprintln!("dwcp-wan: a data-path thread panicked: {panic:?}");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ring bytes per direction: twice what can be in flight (queue plus delay at the rate)
/// so small packets' headers and padding fit too, plus a margin.
fn ring_capacity(profile: &LinkProfile) -> usize {
    let in_flight = (u128::from(profile.rate_bps)
        * (profile.one_way_delay() + profile.jitter).as_nanos()
        / 8_000_000_000) as u64;
    (2 * (in_flight + profile.queue_bytes()) + (1 << 20)) as usize
}

/// The reader thread: waits for packets (or the stop signal) and sorts them.
fn read(
    tun: &OwnedFd,
    wake: RawFd,
    mut directions: [Inbound; 2],
    counters: &LinkCounters,
    stop: &AtomicBool,
) {
    raise_to_realtime();
    let mut packet = vec![0u8; 65_536];
    let mut fds = [
        libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of two pollfd structures.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        loop {
            // SAFETY: reads at most `packet.len()` bytes into `packet`.
            let len =
                unsafe { libc::read(tun.as_raw_fd(), packet.as_mut_ptr().cast(), packet.len()) };
            if len < 0 {
                break; // EAGAIN (drained), or the device is going away.
            }
            sort(&packet[..len as usize], &mut directions, counters);
        }
    }
}

/// Hands one packet to its direction, or counts it as unroutable.
fn sort(packet: &[u8], directions: &mut [Inbound; 2], counters: &LinkCounters) {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        DirectionCounters::bump(&counters.unroutable);
        return;
    }
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let (inbound, direction) = if in_subnet(destination, B_NET) {
        (&mut directions[0], &counters.a_to_b)
    } else if in_subnet(destination, A_NET) {
        (&mut directions[1], &counters.b_to_a)
    } else {
        DirectionCounters::bump(&counters.unroutable);
        return;
    };
    match inbound.shaper.admit(now_ns(), packet.len()) {
        Verdict::Deliver { due_ns } => {
            if inbound.ring.push(due_ns, packet) {
                inbound.deliverer.unpark();
            } else {
                DirectionCounters::bump(&direction.dropped_queue);
            }
        }
        Verdict::QueueFull => DirectionCounters::bump(&direction.dropped_queue),
        Verdict::Lost => DirectionCounters::bump(&direction.dropped_loss),
    }
    direction
        .peak_queue_bytes
        .store(inbound.shaper.peak_queue_bytes(), Ordering::Relaxed);
}

/// A delivery thread: writes each packet back to the TUN device when it is due.
fn deliver(mut ring: Consumer, tun: RawFd, counters: &DirectionCounters, stop: &AtomicBool) {
    minimise_timer_slack();
    raise_to_realtime();
    let start = now_ns();
    let mut second = 0usize;
    let mut second_bytes = 0u64;
    let mut wake_lateness = WakeLateness::default();
    let mut last_write = 0u64;
    let mut roll = |now: u64, second_bytes: &mut u64| {
        let current = ((now - start) / 1_000_000_000) as usize;
        if current != second {
            counters.close_second(second, *second_bytes);
            second = current;
            *second_bytes = 0;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let Some((due, packet)) = ring.peek() else {
            roll(now_ns(), &mut second_bytes);
            std::thread::park_timeout(Duration::from_millis(100));
            continue;
        };
        let now = now_ns();
        if due > now {
            if now.saturating_sub(last_write) >= TRAIN_GAP_NS {
                wait_until(due, now, &mut wake_lateness);
                continue;
            }
            if due - now > TRAIN_EARLY_NS {
                sleep_until((due - TRAIN_EARLY_NS).min(now + MAX_NAP_NS));
                continue;
            }
        }
        roll(now, &mut second_bytes);
        // SAFETY: writes `packet.len()` bytes from `packet` to the TUN descriptor.
        let written = unsafe { libc::write(tun, packet.as_ptr().cast(), packet.len()) };
        last_write = now;
        if written == packet.len() as isize {
            DirectionCounters::bump(&counters.packets);
            counters
                .bytes
                .fetch_add(packet.len() as u64, Ordering::Relaxed);
            second_bytes += packet.len() as u64;
        }
        ring.pop();
    }
}

/// How late this thread's timed sleeps end, as a moving average.
#[derive(Default)]
struct WakeLateness {
    average_ns: u64,
}

impl WakeLateness {
    fn record(&mut self, late_ns: u64) {
        let sample = late_ns.min(MAX_EARLY_NS);
        // Exponential moving average with weight 1/8 for the new sample.
        self.average_ns = (self.average_ns * 7 + sample) / 8;
    }
}

/// Waits until `due` (ns): sleeps until the sleep's usual lateness before it, then spins.
fn wait_until(due: u64, now: u64, lateness: &mut WakeLateness) {
    let early = lateness.average_ns + MIN_SLEEP_NS;
    if due - now > early {
        let target = (due - early).min(now + MAX_NAP_NS);
        sleep_until(target);
        lateness.record(now_ns().saturating_sub(target));
        return;
    }
    while now_ns() < due {
        std::hint::spin_loop();
    }
}
