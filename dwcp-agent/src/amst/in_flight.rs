//! The blocks one data stream has sent and the receiver has not acknowledged yet, and the
//! reader of those acknowledgements (shared by file and streamed transfers): a stream
//! that dies hands back exactly what it still owed.

use std::{
    collections::VecDeque,
    net::{Shutdown, TcpStream},
    sync::{Condvar, Mutex},
};

use super::AmstError;
use crate::protocol::frame::{FrameReader, FrameType};

/// Blocks sent on one stream and not yet acknowledged, and whether the stream died.
pub(super) struct InFlight {
    seqs: Mutex<(VecDeque<u64>, bool)>,
    changed: Condvar,
}

impl InFlight {
    /// Room for `window` blocks.
    pub(super) fn new(window: usize) -> Self {
        Self {
            seqs: Mutex::new((VecDeque::with_capacity(window), false)),
            changed: Condvar::new(),
        }
    }

    /// Waits while `window` blocks are in flight; false once the stream is dead.
    pub(super) fn wait_room(&self, window: usize) -> bool {
        let mut g = self.lock();
        while g.0.len() >= window && !g.1 {
            g = self
                .changed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !g.1
    }

    /// Records `seq` as sent; false (and not recorded) once the stream is dead.
    pub(super) fn push(&self, seq: u64) -> bool {
        let mut g = self.lock();
        if g.1 {
            return false;
        }
        g.0.push_back(seq);
        true
    }

    /// Blocks in flight now.
    pub(super) fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Marks the stream dead, keeping the record of what it owed.
    pub(super) fn stop(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }

    /// True once the stream is dead.
    pub(super) fn is_dead(&self) -> bool {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<u64>, bool)> {
        self.seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the stream dead and returns what it still owed (once).
    pub(super) fn kill(&self) -> Vec<u64> {
        let mut g = self.lock();
        let owed = if g.1 {
            Vec::new()
        } else {
            g.0.drain(..).collect()
        };
        g.1 = true;
        self.changed.notify_all();
        owed
    }
}

/// Reads acknowledgements until the receiver closes the stream, checking that each one
/// is for the oldest block in flight and handing it to `on_ack`. Closes the socket on
/// failure (the caller decides what the stream still owed becomes).
pub(super) fn read_acks(
    mut reader: FrameReader<TcpStream>,
    in_flight: &InFlight,
    mut on_ack: impl FnMut(&crate::protocol::frame::FrameHeader),
) -> Result<(), AmstError> {
    let result = (|| -> Result<(), AmstError> {
        loop {
            let Some(header) = reader.read_header()? else {
                return if in_flight.lock().0.is_empty() {
                    Ok(())
                } else {
                    Err(crate::protocol::ProtocolError::Closed.into())
                };
            };
            if header.kind != FrameType::Ack {
                return Err(crate::protocol::ProtocolError::Unexpected {
                    expected: "ack",
                    got: format!("{:?}", header.kind),
                }
                .into());
            }
            let mut g = in_flight.lock();
            match g.0.front() {
                Some(&seq) if seq == header.seq => {
                    g.0.pop_front();
                    in_flight.changed.notify_all();
                }
                other => {
                    return Err(crate::protocol::ProtocolError::Unexpected {
                        expected: "ack of the oldest block in flight",
                        got: format!("ack {} with {other:?} first", header.seq),
                    }
                    .into());
                }
            }
            drop(g);
            on_ack(&header);
        }
    })();
    if result.is_err() {
        let _ = reader.get_ref().shutdown(Shutdown::Both);
    }
    result
}
