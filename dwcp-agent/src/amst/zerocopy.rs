//! `MSG_ZEROCOPY` sends on a data stream: the kernel transmits payload straight from the
//! pool block instead of copying it into socket buffers, and reports on the socket's
//! error queue when it no longer needs the pages. A block may go back to its pool only
//! once it is both acknowledged by the receiver and released by the kernel
//! ([`ZeroCopy::is_released`]).
//!
//! Where the kernel has to copy anyway (loopback, veth into another namespace: the
//! receiving socket is local), every notification says so; after the first such
//! batch the stream stops asking for zero-copy, as the kernel documentation advises,
//! because a deferred copy costs more than a plain send.

use std::{io::ErrorKind, net::TcpStream, os::fd::AsRawFd as _};

use crate::protocol::{
    ProtocolError,
    frame::{Codec, FrameType, FrameWriter, PayloadHash},
};

/// `SO_EE_ORIGIN_ZEROCOPY` from `linux/errqueue.h`.
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED` from `linux/errqueue.h`.
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
/// Notifications read before deciding whether the kernel copies.
const VERDICT_AFTER: u64 = 4;

/// Zero-copy state of one data stream.
#[derive(Debug, Default)]
pub struct ZeroCopy {
    /// Whether sends still ask for zero-copy.
    enabled: bool,
    /// Zero-copy send calls issued (the kernel numbers them from 0).
    issued: u32,
    /// Send calls the kernel has released (TCP releases in order).
    released: u32,
    /// Notifications read, and how many said the kernel copied.
    notifications: u64,
    copied: u64,
}

/// What zero-copy did on a stream, for the transfer summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroCopyStats {
    /// Send calls made with `MSG_ZEROCOPY`.
    pub sends: u64,
    /// Completion notifications in which the kernel reported a copy.
    pub copied: u64,
}

impl ZeroCopy {
    /// Turns zero-copy on for `socket` (`SO_ZEROCOPY`); off if the kernel refuses.
    pub fn enable(socket: &TcpStream) -> Self {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call and the length
        // passed is its size; the fd is borrowed from a live socket.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Self {
            enabled: r == 0,
            ..Self::default()
        }
    }

    /// Whether sends still ask for zero-copy.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Figures so far.
    pub fn stats(&self) -> ZeroCopyStats {
        ZeroCopyStats {
            sends: u64::from(self.issued),
            copied: self.copied,
        }
    }

    /// Writes one frame whose payload hash the caller computed (`coding`: the payload's
    /// codec and decoded length): the header with a plain send, the payload with
    /// `MSG_ZEROCOPY` while enabled. Returns the ticket to pass to [`Self::is_released`]
    /// (`None` when the payload went by plain send and the block is free once
    /// acknowledged).
    pub fn write_frame(
        &mut self,
        writer: &mut FrameWriter<TcpStream>,
        (kind, seq, offset): (FrameType, u64, u64),
        (coding, payload): ((Codec, u32), &[u8]),
        hash: &PayloadHash,
    ) -> Result<Option<u32>, ProtocolError> {
        if !self.enabled || payload.is_empty() {
            writer.write_hashed_frame(kind, seq, offset, (coding, payload), hash)?;
            return Ok(None);
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let header = writer
            .next_hashed_header(kind, seq, offset, coding, (len, hash))
            .encode();
        let socket = writer.get_ref();
        send_all(socket, &header, 0)?;
        let mut rest = payload;
        while !rest.is_empty() {
            let n = send_once(socket, rest, libc::MSG_ZEROCOPY)?;
            self.issued = self.issued.wrapping_add(1);
            rest = &rest[n..];
        }
        Ok(Some(self.issued.wrapping_sub(1)))
    }

    /// True once the kernel has released every send up to `ticket` (reads pending
    /// notifications first, without blocking).
    pub fn is_released(&mut self, socket: &TcpStream, ticket: Option<u32>) -> bool {
        let Some(ticket) = ticket else {
            return true;
        };
        if self.released_past(ticket) {
            return true;
        }
        self.reap(socket);
        self.released_past(ticket)
    }

    fn released_past(&self, ticket: u32) -> bool {
        // Both counters wrap at 2^32; a ticket is released when it lies behind `released`.
        self.released.wrapping_sub(ticket).wrapping_sub(1) < u32::MAX / 2
    }

    /// Waits up to `timeout_ms` for a notification to arrive, then reads what is there.
    pub fn wait(&mut self, socket: &TcpStream, timeout_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: 0, // POLLERR is always reported: it means the error queue has entries.
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let _ = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        self.reap(socket);
    }

    /// Reads every pending completion notification (non-blocking).
    pub fn reap(&mut self, socket: &TcpStream) {
        loop {
            let mut control = [0u64; 16];
            // SAFETY: an all-zero msghdr is a valid empty message header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            // SAFETY: `msg` points at `control`, which lives through the call; no data
            // buffers are given, so the kernel writes only the control area.
            let r = unsafe {
                libc::recvmsg(
                    socket.as_raw_fd(),
                    &raw mut msg,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                return; // EAGAIN: nothing pending (or the socket is gone).
            }
            self.parse(&msg);
        }
    }

    fn parse(&mut self, msg: &libc::msghdr) {
        // SAFETY: `msg` was filled by recvmsg; the CMSG_* macros walk its control area
        // within `msg_controllen`.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
        while !cmsg.is_null() {
            // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR point into the
            // control buffer and at least a header's worth of it.
            let header = unsafe { &*cmsg };
            let is_recverr = (header.cmsg_level == libc::SOL_IP
                && header.cmsg_type == libc::IP_RECVERR)
                || (header.cmsg_level == libc::SOL_IPV6 && header.cmsg_type == libc::IPV6_RECVERR);
            if is_recverr {
                // SAFETY: an IP(V6)_RECVERR message carries a sock_extended_err as its
                // data; read_unaligned copes with the control buffer's alignment.
                let err: libc::sock_extended_err =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                if err.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                    // ee_info..=ee_data is the range of send calls released.
                    self.released = err.ee_data.wrapping_add(1);
                    self.notifications += 1;
                    if err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                        self.copied += 1;
                    }
                    if self.notifications >= VERDICT_AFTER && self.copied == self.notifications {
                        self.enabled = false;
                    }
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
        }
    }
}

/// One `send` call; returns the bytes taken (retrying on EINTR and EAGAIN/ENOBUFS).
fn send_once(socket: &TcpStream, buf: &[u8], flags: libc::c_int) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length for the duration of the call.
        let r = unsafe {
            libc::send(
                socket.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if r > 0 {
            return Ok(r as usize);
        }
        if r == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            // The zero-copy notification budget (optmem) is exhausted: let the kernel
            // release some, then retry.
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) => std::thread::yield_now(),
            _ => return Err(e),
        }
    }
}

fn send_all(socket: &TcpStream, buf: &[u8], flags: libc::c_int) -> std::io::Result<()> {
    let mut rest = buf;
    while !rest.is_empty() {
        let n = send_once(socket, rest, flags)?;
        rest = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::payload_hash;

    #[test]
    fn tickets_are_released_in_order_across_wrap_around() {
        let mut zc = ZeroCopy {
            released: 5,
            ..ZeroCopy::default()
        };
        assert!(zc.released_past(4));
        assert!(!zc.released_past(5));
        zc.released = 2; // wrapped past u32::MAX
        assert!(zc.released_past(u32::MAX));
        assert!(zc.released_past(1));
        assert!(!zc.released_past(2));
    }

    #[test]
    fn frames_sent_with_zero_copy_arrive_intact_and_are_released() {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let socket = TcpStream::connect(addr).unwrap();
        let mut zc = ZeroCopy::enable(&socket);
        assert!(zc.is_enabled(), "SO_ZEROCOPY refused");
        let mut writer = FrameWriter::new(socket.try_clone().unwrap());
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut tickets = Vec::new();
        let coding = (Codec::None, payload.len() as u32);
        for seq in 0..8 {
            tickets.push(
                zc.write_frame(
                    &mut writer,
                    (FrameType::Data, seq, 0),
                    (coding, &payload),
                    &payload_hash(&payload),
                )
                .unwrap(),
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zc.is_released(&socket, tickets.iter().flatten().last().copied()) {
            assert!(
                std::time::Instant::now() < deadline,
                "No release notification"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        let all = reader.join().unwrap();
        let mut frames = crate::protocol::frame::FrameReader::new(&all[..], 1 << 20);
        let mut buf = vec![0u8; 1 << 20];
        for seq in 0..8 {
            let h = frames.read_header().unwrap().unwrap();
            assert_eq!(h.seq, seq);
            frames.read_payload(&h, &mut buf).unwrap();
            assert_eq!(&buf[..payload.len()], &payload[..]);
        }
        // Loopback always copies: the stream must have noticed and stopped asking.
        assert!(zc.stats().copied >= 1, "{:?}", zc.stats());
    }
}
