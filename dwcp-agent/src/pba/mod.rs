//! PBA, the predictive block allocator: fixed-size blocks for the data path that never
//! touch the heap, sized from recent demand, sendable with io_uring zero-copy.
//!
//! # Shape
//!
//! ```text
//!             one anonymous mapping, reserved at max_blocks * block_size (MAP_NORESERVE)
//!   arena:   [ block 0 | block 1 | block 2 | ...                         | block max-1 ]
//!
//!   warm list (lock-free)  committed blocks that are free      <- Block::drop pushes here
//!   cold list (lock-free)  free blocks with no memory behind   <- adapt() shrinks into it
//!
//!   try_acquire: pop warm, else pop cold (the kernel commits its pages on first touch)
//!   adapt():     demand = peak blocks in flight since the last call
//!                Predictor -> target; prefault cold -> warm up to the target,
//!                release warm -> cold (MADV_DONTNEED) beyond the target
//! ```
//!
//! - [`BlockPool`] (in `pool.rs`) owns the arena (`arena.rs`) and the two free lists
//!   (`free_list.rs`: lock-free Treiber stacks of block indices with an ABA tag).
//!   Taking and giving back a block cost a compare-and-swap each, plus one add and one
//!   subtract on the shared reference count (`shared.rs`), which counts handles and blocks
//!   in flight in one word; statistics stay off that path (per-block counters written by
//!   the block's owner, peaks written only when they move). [`BlockPool::acquire`] parks
//!   on a mutex and condition variable only when both lists are empty.
//! - [`Block`] (in `block.rs`) is one handed-out block: it dereferences to its filled bytes
//!   and goes back to the pool when dropped.
//! - [`Predictor`] (in `predictor.rs`) is the sizing rule as a pure state machine: an
//!   exponentially weighted moving average of demand, a target of
//!   `ceil(average * headroom)` clamped to `[min_blocks, max_blocks]`, growth at once when
//!   demand exceeds the target, shrinking only after demand stayed below the target for
//!   `shrink_after_steps` calls in a row (hysteresis), and then to no less than that
//!   stretch's peak.
//! - [`ZeroCopySender`] (in `zerocopy.rs`) sends blocks with `IORING_OP_SEND_ZC` from
//!   io_uring fixed buffers and returns once the kernel no longer needs the block.
//!
//! # Memory: reserved, committed, pinned
//!
//! The arena is reserved once at the maximum size, so a block's address and io_uring
//! buffer index never change. Pages are committed when first written (or prefaulted by
//! [`BlockPool::adapt`] when the target grows) and given back with `MADV_DONTNEED` when
//! the target shrinks; a released block stays usable and reads as zeros.
//!
//! Registering a block as an io_uring fixed buffer pins the pages it has at that moment.
//! After `MADV_DONTNEED` the block's address maps fresh pages, so a registration made
//! before would send stale memory. Each block therefore carries a generation that a
//! release bumps; [`ZeroCopySender`] registers blocks lazily, re-registers a block whose
//! generation moved and drops registrations of released blocks, so the pinned pages go
//! back to the system too. Whoever registers the whole arena through
//! [`BlockPool::iovecs`] cannot follow generations: that call switches releasing off for
//! the pool's lifetime.
//!
//! Huge pages are requested with `MADV_HUGEPAGE` (transparent huge pages in `madvise`
//! mode); refusal is logged and ignored. With blocks smaller than a huge page, a released
//! block inside a huge page splits it, and khugepaged may later collapse the range again.

mod arena;
mod block;
mod config;
mod free_list;
mod pool;
mod predictor;
mod shared;
mod zerocopy;

pub use block::Block;
pub use config::{MAX_BLOCK_SIZE, MAX_BLOCKS, MIN_BLOCK_SIZE, PoolConfig};
pub use pool::{Adaptation, BlockPool, PoolStats};
pub use predictor::{Change, Predictor, PredictorStep};
pub use zerocopy::{SenderStats, ZeroCopySender};

use std::{io, time::Duration};

/// Errors of the block pool and of zero-copy sending.
#[derive(Debug, thiserror::Error)]
pub enum PbaError {
    /// A [`PoolConfig`] value is out of range.
    #[error("Invalid pool setting {field}: {reason}")]
    InvalidConfig {
        /// Name of the [`PoolConfig`] field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The anonymous mapping for the arena was refused.
    #[error("Cannot reserve a block arena of {bytes} bytes")]
    Reserve {
        /// Size asked for.
        bytes: usize,
        /// What `mmap` said.
        #[source]
        source: io::Error,
    },
    /// [`BlockPool::acquire`] found no free block in time: every block is in flight.
    #[error("No free block within {waited:?}: all {capacity} blocks are in use")]
    Timeout {
        /// Time waited.
        waited: Duration,
        /// Blocks in the pool.
        capacity: usize,
    },
    /// The io_uring instance could not be created (kernel too old, io_uring disabled by
    /// `kernel.io_uring_disabled`, seccomp, or no memory). Fall back to plain `write`.
    #[error("Cannot set up io_uring")]
    RingSetup(#[source] io::Error),
    /// The kernel's io_uring lacks an operation the sender needs. Fall back to plain
    /// `write`.
    #[error("The kernel's io_uring does not support {0}")]
    Unsupported(&'static str),
    /// A block could not be registered as an io_uring fixed buffer. Registration pins
    /// memory: without `CAP_IPC_LOCK` it counts against `RLIMIT_MEMLOCK`.
    #[error("Cannot register block {index} as an io_uring fixed buffer")]
    Register {
        /// Block (and fixed-buffer) index.
        index: u16,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The block handed to a [`ZeroCopySender`] comes from another pool than the one it
    /// registered.
    #[error("Block {index} belongs to another pool than the sender's")]
    ForeignBlock {
        /// The block's index in its own pool.
        index: u16,
    },
    /// The header passed to [`ZeroCopySender::send_with_header`] is longer than one
    /// io_uring request can carry.
    #[error("Header of {0} bytes is too long for one send")]
    HeaderTooLong(usize),
    /// The socket refused the data: peer reset (`ECONNRESET`), closed (`EPIPE`), or
    /// another socket error. The bytes before `sent` were handed to the kernel.
    #[error("Send failed after {sent} of {total} bytes")]
    Send {
        /// Bytes (header and block) accepted by the kernel before the error.
        sent: usize,
        /// Bytes asked for.
        total: usize,
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// Submitting to or waiting on the ring failed. The sender may still have a request in
    /// flight and refuses further sends; drop it.
    #[error("The io_uring ring failed")]
    Ring(#[source] io::Error),
    /// An earlier ring failure left this sender unusable.
    #[error("The sender is unusable after an earlier ring failure")]
    SenderBroken,
}

impl PbaError {
    /// Whether the error says zero-copy sending is unavailable on this host, so the caller
    /// should fall back to plain `write` (as opposed to a socket or usage error).
    pub fn is_zero_copy_unavailable(&self) -> bool {
        matches!(
            self,
            Self::RingSetup(_) | Self::Unsupported(_) | Self::Register { .. }
        )
    }

    /// The socket error behind a [`PbaError::Send`], if this is one.
    pub fn socket_error(&self) -> Option<&io::Error> {
        match self {
            Self::Send { source, .. } => Some(source),
            _ => None,
        }
    }
}
