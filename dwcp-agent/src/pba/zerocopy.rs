//! Zero-copy sending of blocks with io_uring (`IORING_OP_SEND_ZC` from fixed buffers).
//!
//! ```text
//! send_with_header(fd, header, block)
//!   [Send(header) --IO_LINK-->] SendZc(block, fixed buffer block.buf_index())
//!   <- CQE header: bytes sent
//!   <- CQE block:  bytes sent, IORING_CQE_F_MORE = a notification follows
//!   <- CQE block:  IORING_CQE_F_NOTIF = the kernel let go of the pages
//!   short result -> submit the rest again; error -> PbaError::Send
//! ```
//!
//! Both sends carry `MSG_WAITALL` (the kernel itself retries partial sends on a stream
//! socket) and `MSG_NOSIGNAL` (a closed peer is an `EPIPE` error, not a signal). A short
//! result is submitted again from where it stopped; if a short header send breaks the
//! link, the block's request is cancelled and goes again too.
//!
//! The call returns only after the notification, so the block may be refilled or dropped
//! at once. The notification comes when the kernel frees the socket buffers that point at
//! the block, for TCP when the peer has acknowledged the data: one send takes at least a
//! round trip, so one sender's throughput on one socket is bounded by `block_size / RTT`
//! (on loopback, microseconds; over a WAN, spread the data over many streams). If the
//! socket fails or is shut down while the data waits for its acknowledgement, the send
//! stops waiting and returns an error (while waiting, the sender checks the socket every
//! 50 ms); the stream is lost, and the notification, arriving later, is ignored.
//!
//! Blocks are registered lazily in a sparse buffer table of the pool's size, each on its
//! first send and again after the pool released its pages (its generation moved); slots
//! of released blocks are emptied when the pool reports a release, so their pinned pages
//! go back to the system too. In steady state a send makes one or two `io_uring_enter`
//! calls (submit and wait for the completion, then for the notification) and no heap
//! allocation.
//!
//! On loopback the kernel copies zero-copy data anyway when it reaches the local
//! receiver; [`SenderStats::copied_notifications`] counts such sends.

use std::{io, os::fd::RawFd};

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use super::{Block, BlockPool, PbaError};

/// `IORING_RECVSEND_POLL_FIRST`: wait for the socket to be writable before trying.
const RECVSEND_POLL_FIRST: u16 = 1 << 0;
/// `IORING_SEND_ZC_REPORT_USAGE`: the notification tells whether data was copied.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a notification's result.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// `user_data` = round sequence number << `TAG_BITS` | which request.
const TAG_HEADER: u64 = 1;
const TAG_BLOCK: u64 = 2;
const TAG_BITS: u32 = 2;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const SEQ_MASK: u64 = u64::MAX >> TAG_BITS;
const RING_ENTRIES: u32 = 8;
/// How often a send waiting for the peer to acknowledge checks that the socket lives.
const NOTIFICATION_CHECK: types::Timespec = types::Timespec::new().nsec(50_000_000);
/// `TCP_ESTABLISHED` and `TCP_CLOSE_WAIT` of `enum tcp_state`.
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

/// Counters of one [`ZeroCopySender`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Completed sends (a header and its block count once).
    pub sends: u64,
    /// Bytes sent, headers included.
    pub bytes: u64,
    /// Extra submissions after short sends, `EAGAIN`, or a broken link.
    pub resubmits: u64,
    /// Notifications saying the kernel copied the data instead (loopback, or a device
    /// without scatter-gather).
    pub copied_notifications: u64,
    /// Blocks registered as fixed buffers (first use or after a release).
    pub registrations: u64,
    /// Registrations dropped because the pool released the block's pages.
    pub unregistrations: u64,
    /// Notifications not waited for because the socket failed or was shut down first.
    pub abandoned_notifications: u64,
    /// Notifications of such sends that arrived later.
    pub late_notifications: u64,
}

/// Sends a pool's blocks over sockets with io_uring zero-copy, one at a time.
///
/// Each sender owns its ring and its registrations: make one per sending thread. It is
/// [`Send`], so it can be created on one thread and used on another.
pub struct ZeroCopySender {
    /// Declared first so it is dropped first: its registrations point into the pool's
    /// arena, which `pool` keeps alive.
    ring: IoUring,
    pool: BlockPool,
    /// Per buffer slot, the block generation registered there; 0 = empty slot.
    registered: Box<[u32]>,
    seen_release_epoch: u64,
    /// Sequence number of the current round, in every `user_data`.
    seq: u64,
    broken: bool,
    stats: SenderStats,
}

/// Results of one submission round: the completions of the header's and the block's
/// requests (`None` when not submitted), as bytes sent or a negated errno.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    header: Option<i32>,
    block: Option<i32>,
    /// The round returned without the block's notification: the socket failed or was
    /// shut down while the kernel still held the data for a peer that will not take it.
    abandoned: bool,
}

/// What to do after a round.
#[derive(Debug)]
enum Next {
    /// Submit what is left, if anything; wait for the socket to be writable first.
    Continue { poll_first: bool },
    /// Give up with this socket error.
    Fail(io::Error),
}

impl Round {
    /// Whether a request of this round failed with a socket error (one that ends the
    /// send, not one that asks to submit again).
    fn failed(&self) -> bool {
        [self.header, self.block]
            .into_iter()
            .flatten()
            .any(|n| n < 0 && !matches!(-n, libc::ECANCELED | libc::EINTR | libc::EAGAIN))
    }

    /// Adds the bytes sent to `done` (header, block) and decides how to go on.
    fn apply(self, done: &mut [usize; 2]) -> Next {
        let mut progressed = false;
        let mut retry = false;
        let mut poll_first = false;
        let mut failure = None;
        for (part, result) in [self.header, self.block].into_iter().enumerate() {
            match result {
                None | Some(0) => {}
                Some(n) if n > 0 => {
                    done[part] += n as usize;
                    progressed = true;
                }
                Some(n) => match -n {
                    // The link broke after a short header: submit the rest again.
                    libc::ECANCELED | libc::EINTR => retry = true,
                    libc::EAGAIN => {
                        retry = true;
                        poll_first = true;
                    }
                    errno => failure = failure.or(Some(io::Error::from_raw_os_error(errno))),
                },
            }
        }
        match failure {
            Some(err) => Next::Fail(err),
            None if self.abandoned => Next::Fail(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "The socket was shut down before the peer acknowledged the data",
            )),
            // Nothing sent, nothing refused: a socket that accepts zero bytes.
            None if !progressed && !retry => Next::Fail(io::ErrorKind::WriteZero.into()),
            None => Next::Continue { poll_first },
        }
    }
}

impl ZeroCopySender {
    /// Sets up a ring for `pool`'s blocks: checks that the kernel has zero-copy send,
    /// reserves a sparse fixed-buffer table of [`BlockPool::capacity`] slots and registers
    /// block 0 to find out now whether pinning is allowed.
    ///
    /// A [`PbaError::is_zero_copy_unavailable`] error means: use plain `write` instead.
    pub fn new(pool: &BlockPool) -> Result<Self, PbaError> {
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))
            .map_err(PbaError::RingSetup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(PbaError::RingSetup)?;
        if !probe.is_supported(opcode::SendZc::CODE) {
            return Err(PbaError::Unsupported("IORING_OP_SEND_ZC"));
        }
        if !probe.is_supported(opcode::Send::CODE) {
            return Err(PbaError::Unsupported("IORING_OP_SEND"));
        }
        let capacity = pool.capacity();
        // At most `MAX_BLOCKS` = 2^14 slots (validated by the pool's configuration).
        ring.submitter()
            .register_buffers_sparse(capacity as u32)
            .map_err(PbaError::RingSetup)?;
        let mut sender = Self {
            ring,
            pool: pool.clone(),
            registered: vec![0; capacity].into_boxed_slice(),
            seen_release_epoch: pool.inner().release_epoch(),
            seq: 0,
            broken: false,
            stats: SenderStats::default(),
        };
        sender.ensure_registered(0)?;
        Ok(sender)
    }

    /// Sends the block's filled bytes; returns once the kernel no longer needs them.
    pub fn send(&mut self, fd: RawFd, block: &Block) -> Result<(), PbaError> {
        self.send_with_header(fd, &[], block)
    }

    /// Sends `header` (copied by the kernel, as with `send(2)`), then the block's filled
    /// bytes (zero-copy), back to back on the stream; returns once the kernel no longer
    /// needs either. Blocks the thread until then, like a blocking `write`; shutting the
    /// socket down from another thread ends a send stuck on a stalled peer.
    ///
    /// Errors: [`PbaError::Send`] when the socket fails (part of the data may have been
    /// sent, so the stream is lost); [`PbaError::Register`] when the kernel refuses to pin
    /// this block (without `CAP_IPC_LOCK`, pinned memory counts against
    /// `RLIMIT_MEMLOCK`): nothing was sent, so the caller can send this block and the
    /// following ones with plain `write` instead.
    pub fn send_with_header(
        &mut self,
        fd: RawFd,
        header: &[u8],
        block: &Block,
    ) -> Result<(), PbaError> {
        if self.broken {
            return Err(PbaError::SenderBroken);
        }
        if !self.pool.owns(block) {
            return Err(PbaError::ForeignBlock {
                index: block.buf_index(),
            });
        }
        if u32::try_from(header.len()).is_err() {
            return Err(PbaError::HeaderTooLong(header.len()));
        }
        self.sync_registrations()?;
        self.ensure_registered(block.index())?;

        let total = header.len() + block.len();
        // Bytes done of the header and of the block.
        let mut done = [0usize; 2];
        let mut poll_first = false;
        let mut first = true;
        while done[0] < header.len() || done[1] < block.len() {
            if !first {
                self.stats.resubmits += 1;
            }
            first = false;
            let round = self.round(fd, &header[done[0]..], block, done[1], poll_first)?;
            match round.apply(&mut done) {
                Next::Continue { poll_first: poll } => poll_first = poll,
                Next::Fail(source) => {
                    return Err(PbaError::Send {
                        sent: done[0] + done[1],
                        total,
                        source,
                    });
                }
            }
        }
        self.stats.sends += 1;
        self.stats.bytes += total as u64;
        Ok(())
    }

    /// Empties the buffer slots of blocks the pool released since the last check, so the
    /// pages they pinned go back to the system. Sends do this themselves; an idle sender
    /// can call it after [`BlockPool::adapt`].
    pub fn sync_registrations(&mut self) -> Result<(), PbaError> {
        let pool = self.pool.inner();
        let epoch = pool.release_epoch();
        if epoch == self.seen_release_epoch {
            return Ok(());
        }
        for (index, registered) in self.registered.iter_mut().enumerate() {
            // Slots are block indices, below 2^14.
            if *registered == 0 || *registered == pool.generation(index as u32) {
                continue;
            }
            let empty = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            // SAFETY: An empty iovec clears the slot; the kernel keeps no pointer from it.
            unsafe {
                self.ring
                    .submitter()
                    .register_buffers_update(index as u32, &[empty], None)
            }
            .map_err(|source| PbaError::Register {
                index: index as u16,
                source,
            })?;
            *registered = 0;
            self.stats.unregistrations += 1;
        }
        self.seen_release_epoch = epoch;
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// Blocks currently registered in this sender's ring.
    pub fn registered_blocks(&self) -> usize {
        self.registered.iter().filter(|g| **g != 0).count()
    }

    /// Registers block `index` in slot `index` unless its current pages are registered.
    fn ensure_registered(&mut self, index: u32) -> Result<(), PbaError> {
        let pool = self.pool.inner();
        // Read before pinning: if the pool releases the block after this read, the
        // generation moves and the next send registers it again.
        let generation = pool.generation(index);
        let slot = &mut self.registered[index as usize];
        if *slot == generation {
            return Ok(());
        }
        let iovec = pool.arena.iovec(index);
        // SAFETY: The iovec covers block `index` of the pool's arena, which stays mapped
        // while `self.pool` lives; `self.ring`, which holds the registration, is dropped
        // before `self.pool`. The kernel pins the pages and only reads them (sends).
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(index, &[iovec], None)
        }
        .map_err(|source| PbaError::Register {
            index: index as u16,
            source,
        })?;
        *slot = generation;
        self.stats.registrations += 1;
        Ok(())
    }

    /// Submits `header` (if not empty) linked to the block from `block_done` on (if any
    /// left), and waits for every completion and notification of the round.
    fn round(
        &mut self,
        fd: RawFd,
        header: &[u8],
        block: &Block,
        block_done: usize,
        poll_first: bool,
    ) -> Result<Round, PbaError> {
        let msg_flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let ioprio = if poll_first { RECVSEND_POLL_FIRST } else { 0 };
        let with_header = !header.is_empty();
        let with_block = block_done < block.len();
        let mut outstanding = 0u32;
        {
            let mut sq = self.ring.submission();
            if with_header {
                let mut entry =
                    opcode::Send::new(types::Fd(fd), header.as_ptr(), header.len() as u32)
                        .flags(msg_flags)
                        .ioprio(ioprio)
                        .build()
                        .user_data(self.seq << TAG_BITS | TAG_HEADER);
                if with_block {
                    entry = entry.flags(squeue::Flags::IO_LINK);
                }
                // SAFETY: `header` stays borrowed until this round has collected the
                // request's completion below; the kernel only reads it. The queue is
                // empty (every round drains it), so the push cannot fail.
                unsafe { sq.push(&entry) }.map_err(|_| ring_full())?;
                outstanding += 1;
            }
            if with_block {
                // Blocks are at most 16 MiB, so lengths fit in u32.
                let len = (block.len() - block_done) as u32;
                // SAFETY: `block_done < block.len() <= capacity`: inside the block.
                let start = unsafe { block.ptr().add(block_done) };
                let entry = opcode::SendZc::new(types::Fd(fd), start, len)
                    .buf_index(Some(block.buf_index()))
                    .flags(msg_flags)
                    .zc_flags(SEND_ZC_REPORT_USAGE | ioprio)
                    .build()
                    .user_data(self.seq << TAG_BITS | TAG_BLOCK);
                // SAFETY: The range lies in block `buf_index`, registered in that slot
                // with its current pages (`ensure_registered`). The kernel only reads
                // them. `block` stays borrowed until the round has collected the
                // completion and the notification, after which the kernel no longer
                // touches the pages. Only when the stream is lost (socket error or shut
                // down) does the round return without the notification: the kernel then
                // still holds its own references to the pages (the registration and the
                // queued socket buffers), so they stay allocated however the block is
                // reused or released, and a later write into the block can change only
                // what a dead connection might still carry.
                unsafe { sq.push(&entry) }.map_err(|_| ring_full())?;
                outstanding += 1;
            }
        }
        let mut round = Round::default();
        // Notifications announced (IORING_CQE_F_MORE) and not yet seen.
        let mut notifications: u32 = 0;
        loop {
            if outstanding == 0 && notifications == 0 {
                break;
            }
            if outstanding == 0 && round.failed() {
                // The stream is lost: do not wait for the kernel to let go of data that
                // no one will acknowledge (see `Round::abandoned`).
                round.abandoned = true;
                self.stats.abandoned_notifications += u64::from(notifications);
                break;
            }
            // Completions come by themselves (success or a socket error). Once only
            // notifications are left, they come when the peer acknowledged the data,
            // which may be never: wake up now and then to check the socket.
            let timed_out = if outstanding > 0 {
                self.wait(None)?
            } else {
                self.wait(Some(&NOTIFICATION_CHECK))?
            };
            for cqe in self.ring.completion() {
                let (flags, result, user_data) = (cqe.flags(), cqe.result(), cqe.user_data());
                if user_data >> TAG_BITS != self.seq {
                    // A notification of an abandoned round, arriving late.
                    self.stats.late_notifications += 1;
                    continue;
                }
                match user_data & TAG_MASK {
                    TAG_BLOCK if cqueue::notif(flags) => {
                        notifications = notifications.saturating_sub(1);
                        if result as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
                            self.stats.copied_notifications += 1;
                        }
                    }
                    TAG_BLOCK => {
                        outstanding = outstanding.saturating_sub(1);
                        round.block = Some(result);
                        if cqueue::more(flags) {
                            notifications += 1;
                        }
                    }
                    TAG_HEADER => {
                        outstanding = outstanding.saturating_sub(1);
                        round.header = Some(result);
                    }
                    _ => {}
                }
            }
            if timed_out && outstanding == 0 && notifications > 0 && !can_still_send(fd) {
                // Shut down or reset while the data waited for its acknowledgement.
                round.abandoned = true;
                self.stats.abandoned_notifications += u64::from(notifications);
                break;
            }
        }
        self.seq = self.seq.wrapping_add(1) & SEQ_MASK;
        Ok(round)
    }

    /// Submits what is queued and waits for a completion, or at most `timeout`.
    /// Returns whether the timeout expired.
    fn wait(&mut self, timeout: Option<&types::Timespec>) -> Result<bool, PbaError> {
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(timespec) => {
                let args = types::SubmitArgs::new().timespec(timespec);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(false),
            Err(err) if err.raw_os_error() == Some(libc::ETIME) => Ok(true),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(false)
            }
            Err(err) => {
                // Requests may still be in flight: refuse further use rather than guess.
                self.broken = true;
                Err(PbaError::Ring(err))
            }
        }
    }
}

/// Whether `fd`'s TCP connection can still carry data out (established, or closed by the
/// peer only). Other sockets are assumed to: their errors come back as completions.
fn can_still_send(fd: RawFd) -> bool {
    // The first byte of `struct tcp_info` is the connection state.
    let mut state: u8 = 0;
    let mut len: libc::socklen_t = 1;
    // SAFETY: `getsockopt` writes at most `len` = 1 byte to `state`, which is valid and
    // writable, and stores the length written in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut state).cast(),
            &raw mut len,
        )
    };
    rc != 0 || matches!(state, TCP_ESTABLISHED | TCP_CLOSE_WAIT)
}

fn ring_full() -> PbaError {
    PbaError::Ring(io::Error::other("Submission queue unexpectedly full"))
}

impl std::fmt::Debug for ZeroCopySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroCopySender")
            .field("registered_blocks", &self.registered_blocks())
            .field("broken", &self.broken)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(header: Option<i32>, block: Option<i32>, done: &mut [usize; 2]) -> Next {
        Round {
            header,
            block,
            abandoned: false,
        }
        .apply(done)
    }

    #[test]
    fn full_round_adds_both_parts() {
        let mut done = [0, 0];
        assert!(matches!(
            apply(Some(8), Some(4096), &mut done),
            Next::Continue { poll_first: false }
        ));
        assert_eq!(done, [8, 4096]);
    }

    #[test]
    fn short_header_breaks_the_link_and_both_go_again() {
        let mut done = [0, 0];
        let next = apply(Some(3), Some(-libc::ECANCELED), &mut done);
        assert!(
            matches!(next, Next::Continue { poll_first: false }),
            "{next:?}"
        );
        assert_eq!(done, [3, 0]);
        // The next round: the rest of the header, then a short block.
        apply(Some(5), Some(1000), &mut done);
        assert_eq!(done, [8, 1000]);
    }

    #[test]
    fn eagain_waits_for_room() {
        let mut done = [8, 0];
        let next = apply(None, Some(-libc::EAGAIN), &mut done);
        assert!(
            matches!(next, Next::Continue { poll_first: true }),
            "{next:?}"
        );
        assert_eq!(done, [8, 0]);
    }

    #[test]
    fn error_after_partial_progress_keeps_the_count() {
        let mut done = [0, 0];
        let next = apply(Some(8), Some(-libc::EPIPE), &mut done);
        assert_eq!(done, [8, 0]);
        let Next::Fail(err) = next else {
            panic!("{next:?}")
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn abandoned_round_is_a_broken_pipe_after_counting_its_bytes() {
        let mut done = [0, 0];
        let round = Round {
            header: Some(4),
            block: Some(1 << 20),
            abandoned: true,
        };
        let Next::Fail(err) = round.apply(&mut done) else {
            panic!("expected a failure")
        };
        assert_eq!(done, [4, 1 << 20]);
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(!round.failed());
        let reset = Round {
            block: Some(-libc::ECONNRESET),
            ..round
        };
        assert!(reset.failed());
        let cancelled = Round {
            block: Some(-libc::ECANCELED),
            ..round
        };
        assert!(!cancelled.failed());
    }

    #[test]
    fn zero_bytes_and_no_error_is_a_failure_not_a_loop() {
        let mut done = [0, 0];
        let Next::Fail(err) = apply(None, Some(0), &mut done) else {
            panic!("expected a failure")
        };
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
