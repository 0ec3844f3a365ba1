//! A bounded ring of page-sized slots: the storage of the content index (level 1) and
//! of the previous-version cache (level 2). Allocated once; pages are copied in and out,
//! never allocated one by one.
//!
//! The storage is an anonymous mapping advised for transparent huge pages: a first round
//! fills the ring page by page, and with 4 KiB pages every slot's first write cost a
//! page fault and a zeroing of its own (the largest part of level 2's cost on a full
//! image). Where the mapping cannot be made, a heap buffer serves the same way.

use memmap2::{Advice, MmapMut};

use crate::page::PAGE_SIZE;

/// `slots` pages of storage and a cursor that hands them out in order, wrapping.
#[derive(Debug)]
pub struct PageRing {
    /// `slots * PAGE_SIZE` bytes.
    bytes: Storage,
    /// Number of slots.
    slots: u32,
    /// Slots handed out so far (the next one is `next % slots`).
    next: u64,
}

impl PageRing {
    /// A ring of `slots` pages (zero slots: an empty ring that holds nothing).
    #[must_use]
    pub fn new(slots: u32) -> Self {
        Self {
            bytes: Storage::new(slots as usize * PAGE_SIZE),
            slots,
            next: 0,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The slot the next [`Self::advance`] returns, and whether it was used before
    /// (so its previous occupant is being evicted). `None` for an empty ring.
    #[must_use]
    pub fn peek(&self) -> Option<(u32, bool)> {
        (self.slots > 0).then(|| {
            let slot = (self.next % u64::from(self.slots)) as u32;
            (slot, self.next >= u64::from(self.slots))
        })
    }

    /// Hands out the next slot (see [`Self::peek`]).
    pub fn advance(&mut self) -> Option<u32> {
        let (slot, _) = self.peek()?;
        self.next += 1;
        Some(slot)
    }

    /// Whether `slot` has been handed out at least once.
    #[must_use]
    pub fn is_filled(&self, slot: u32) -> bool {
        slot < self.slots && u64::from(slot) < self.next
    }

    /// The page in `slot` (`slot` must be below [`Self::slots`]).
    #[must_use]
    pub fn page(&self, slot: u32) -> &[u8] {
        let at = slot as usize * PAGE_SIZE;
        &self.bytes.as_slice()[at..at + PAGE_SIZE]
    }

    /// The page in `slot`, writable.
    pub fn page_mut(&mut self, slot: u32) -> &mut [u8] {
        let at = slot as usize * PAGE_SIZE;
        &mut self.bytes.as_mut_slice()[at..at + PAGE_SIZE]
    }
}

/// Zeroed bytes that the kernel backs with huge pages where it can.
#[derive(Debug)]
enum Storage {
    /// An anonymous mapping (zero-filled on first touch).
    Mapped(MmapMut),
    /// A heap buffer, when there is nothing to map or mapping failed.
    Heap(Vec<u8>),
}

impl Storage {
    fn new(len: usize) -> Self {
        if len == 0 {
            return Self::Heap(Vec::new());
        }
        match MmapMut::map_anon(len) {
            Ok(map) => {
                // Only advice: without transparent huge pages the ring works the same,
                // with 4 KiB pages.
                let _ = map.advise(Advice::HugePage);
                Self::Mapped(map)
            }
            Err(_) => Self::Heap(vec![0; len]),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Heap(bytes) => bytes,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Heap(bytes) => bytes,
        }
    }
}
