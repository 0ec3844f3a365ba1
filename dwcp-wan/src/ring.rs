//! A single-producer, single-consumer ring of packets, preallocated once: the reader thread
//! copies each admitted packet in with its due time, the direction's delivery thread takes
//! them out in order. No allocation per packet.
//!
//! Entries are laid out contiguously: a 16-byte header (length, due time) then the packet,
//! padded to 16 bytes. An entry never wraps: when the space left before the end is too
//! small, the producer writes a wrap marker there and starts again at offset 0.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const HEADER: usize = 16;
const ALIGN: usize = 16;
const WRAP: u32 = u32::MAX;

struct Ring {
    buf: Box<[UnsafeCell<u8>]>,
    /// Bytes ever written (producer's position); `% capacity` is the offset.
    write: AtomicU64,
    /// Bytes ever consumed (consumer's position).
    read: AtomicU64,
}

// SAFETY: the buffer is shared by exactly one `Producer` and one `Consumer` (neither is
// Clone). The producer only writes bytes in `[write, read + capacity)`, which the consumer
// does not read; the consumer only reads bytes in `[read, write)`, published by the
// producer's Release store of `write` and acquired before reading. The regions never overlap.
unsafe impl Sync for Ring {}

impl Ring {
    fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr())
    }
}

/// Writes packets into the ring (the reader thread's end).
pub struct Producer(Arc<Ring>);

/// Reads packets out of the ring in order (a delivery thread's end).
pub struct Consumer(Arc<Ring>);

/// Creates a ring holding about `capacity` bytes of packets and headers.
pub fn ring(capacity: usize) -> (Producer, Consumer) {
    let capacity = capacity.max(64 * 1024).next_multiple_of(ALIGN);
    let zeroed: Box<[u8]> = vec![0u8; capacity].into_boxed_slice();
    // SAFETY: UnsafeCell<u8> is repr(transparent) over u8, so the slice has the same
    // layout, length and allocation; ownership moves from one box to the other.
    let buf = unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [UnsafeCell<u8>]) };
    let ring = Arc::new(Ring {
        buf,
        write: AtomicU64::new(0),
        read: AtomicU64::new(0),
    });
    (Producer(Arc::clone(&ring)), Consumer(ring))
}

fn entry_size(len: usize) -> usize {
    HEADER + len.next_multiple_of(ALIGN)
}

impl Producer {
    /// Appends `packet`, due at `due_ns`; `false` (nothing written) when the ring is full.
    pub fn push(&mut self, due_ns: u64, packet: &[u8]) -> bool {
        let ring = &*self.0;
        let capacity = ring.capacity();
        let need = entry_size(packet.len());
        let mut write = ring.write.load(Ordering::Relaxed);
        let read = ring.read.load(Ordering::Acquire);
        let offset = (write % capacity as u64) as usize;
        let to_end = capacity - offset;
        let wrap = to_end < need;
        let total = if wrap { to_end + need } else { need };
        if (write + total as u64 - read) as usize > capacity || need > capacity {
            return false;
        }
        let mut offset = offset;
        if wrap {
            // SAFETY: `offset` is 16-aligned and below capacity (a multiple of 16), so at
            // least HEADER bytes remain; they lie in the free region (checked above).
            unsafe { write_header(ring.base().add(offset), WRAP, 0) };
            write += to_end as u64;
            offset = 0;
        }
        // SAFETY: `need` bytes from `offset` are inside the buffer (no wrap needed) and in
        // the free region [write, read + capacity), which the consumer does not touch.
        unsafe {
            let at = ring.base().add(offset);
            write_header(at, packet.len() as u32, due_ns);
            std::ptr::copy_nonoverlapping(packet.as_ptr(), at.add(HEADER), packet.len());
        }
        ring.write.store(write + need as u64, Ordering::Release);
        true
    }
}

/// SAFETY (caller): `at` points at HEADER writable bytes no other thread accesses.
unsafe fn write_header(at: *mut u8, len: u32, due_ns: u64) {
    // SAFETY: per the caller's contract; unaligned writes need no alignment.
    unsafe {
        std::ptr::write_unaligned(at.cast::<u32>(), len);
        std::ptr::write_unaligned(at.add(8).cast::<u64>(), due_ns);
    }
}

impl Consumer {
    /// The oldest packet's due time and bytes, without removing it.
    pub fn peek(&mut self) -> Option<(u64, &[u8])> {
        let ring = &*self.0;
        let capacity = ring.capacity();
        loop {
            let read = ring.read.load(Ordering::Relaxed);
            let write = ring.write.load(Ordering::Acquire);
            if read == write {
                return None;
            }
            let offset = (read % capacity as u64) as usize;
            // SAFETY: [read, write) was published by the producer (Acquire above) and the
            // producer does not write there until `read` moves past it.
            let (len, due) = unsafe {
                let at = ring.base().add(offset);
                (
                    std::ptr::read_unaligned(at.cast::<u32>()),
                    std::ptr::read_unaligned(at.add(8).cast::<u64>()),
                )
            };
            if len == WRAP {
                ring.read
                    .store(read + (capacity - offset) as u64, Ordering::Release);
                continue;
            }
            // SAFETY: as above; the entry's `len` bytes follow its header within the buffer.
            let packet = unsafe {
                std::slice::from_raw_parts(ring.base().add(offset + HEADER), len as usize)
            };
            return Some((due, packet));
        }
    }

    /// Removes the packet `peek` returned.
    pub fn pop(&mut self) {
        let ring = &*self.0;
        let capacity = ring.capacity();
        let read = ring.read.load(Ordering::Relaxed);
        if read == ring.write.load(Ordering::Acquire) {
            return;
        }
        let offset = (read % capacity as u64) as usize;
        // SAFETY: the entry at `read` is published (see `peek`).
        let len = unsafe { std::ptr::read_unaligned(ring.base().add(offset).cast::<u32>()) };
        debug_assert_ne!(
            len, WRAP,
            "peek consumes wrap markers before returning an entry"
        );
        ring.read
            .store(read + entry_size(len as usize) as u64, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_out_in_order_across_wraps() {
        let (mut producer, mut consumer) = ring(64 * 1024);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        for round in 0..10_000u64 {
            // Varying sizes so entries land at every offset and wrap often.
            while {
                let len = (next_in * 37 % 1500) as usize + 1;
                let packet = vec![(next_in % 251) as u8; len];
                producer.push(next_in, &packet)
            } {
                next_in += 1;
                if next_in % 7 == round % 7 {
                    break;
                }
            }
            for _ in 0..(round % 5 + 1) {
                let Some((due, packet)) = consumer.peek() else {
                    break;
                };
                assert_eq!(due, next_out);
                assert_eq!(packet.len(), (next_out * 37 % 1500) as usize + 1);
                assert!(packet.iter().all(|&b| b == (next_out % 251) as u8));
                consumer.pop();
                next_out += 1;
            }
        }
        while let Some((due, _)) = consumer.peek() {
            assert_eq!(due, next_out);
            consumer.pop();
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 10_000);
    }

    #[test]
    fn a_full_ring_refuses_without_losing_what_it_holds() {
        let (mut producer, mut consumer) = ring(64 * 1024);
        let packet = [7u8; 1500];
        let mut pushed = 0;
        while producer.push(pushed, &packet) {
            pushed += 1;
        }
        assert_eq!(pushed, (64 * 1024 / entry_size(1500)) as u64);
        for expected in 0..pushed {
            assert_eq!(
                consumer.peek().map(|(due, p)| (due, p.len())),
                Some((expected, 1500))
            );
            consumer.pop();
        }
        assert!(consumer.peek().is_none());
        assert!(producer.push(99, &packet));
    }

    #[test]
    fn threads_pass_a_million_packets_intact() {
        let (mut producer, mut consumer) = ring(64 * 1024);
        const COUNT: u64 = 1_000_000;
        let writer = std::thread::spawn(move || {
            let mut n = 0;
            while n < COUNT {
                let len = (n % 97 + 1) as usize;
                let packet = [(n % 256) as u8; 97];
                if producer.push(n, &packet[..len]) {
                    n += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut n = 0;
        while n < COUNT {
            if let Some((due, packet)) = consumer.peek() {
                assert_eq!(due, n);
                assert_eq!(packet.len(), (n % 97 + 1) as usize);
                assert!(packet.iter().all(|&b| b == (n % 256) as u8));
                consumer.pop();
                n += 1;
            } else {
                std::thread::yield_now();
            }
        }
        writer.join().unwrap();
    }
}
