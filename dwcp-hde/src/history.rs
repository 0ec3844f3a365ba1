//! Level 2's cache of previous versions: the last content each side saw for a page
//! index, for at most `history_slots` pages.
//!
//! Both sides record every full page of every block (but unchanged ones), in order,
//! after the block's lookups; a page sent as L0 zero is held as "zero" without a slot: a page already held is
//! overwritten in its slot; a new page takes the next slot of a [`PageRing`], evicting
//! the page that slot held. Sender and receiver therefore agree at every block on which
//! versions the receiver holds, and a delta or "unchanged" marker is only sent for a page
//! that is held.

use std::collections::HashMap;

use crate::{page::PAGE_SIZE, ring::PageRing};

/// The content of a zero page held without a slot.
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Where a held version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// In this ring slot.
    Slot(u32),
    /// A zero page (sent as L0): held without a slot, so the zero pages that fill most
    /// of a first round cost neither memory nor copies.
    Zero,
}

/// Previous versions of pages, keyed by page index.
#[derive(Debug)]
pub struct History {
    ring: PageRing,
    held: HashMap<u64, Held>,
    owner: Vec<u64>,
}

impl History {
    /// A cache of `slots` pages (0: disabled, holds nothing).
    #[must_use]
    pub fn new(slots: u32) -> Self {
        Self {
            ring: PageRing::new(slots),
            held: HashMap::with_capacity(slots as usize),
            owner: vec![0; slots as usize],
        }
    }

    /// The version held for page `index`.
    #[must_use]
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        match self.held.get(&index)? {
            Held::Slot(slot) => Some(self.ring.page(*slot)),
            Held::Zero => Some(&ZERO_PAGE),
        }
    }

    /// Records that page `index` is now a zero page sent as L0 (no slot taken; a slot it
    /// had is left to be reused by the ring).
    pub fn record_zero(&mut self, index: u64) {
        if self.ring.slots() > 0 {
            self.held.insert(index, Held::Zero);
        }
    }

    /// The storage for page `index`'s new version, to be filled by the caller
    /// (taking a slot, and evicting its page, if `index` is not held).
    pub fn slot_for(&mut self, index: u64) -> Option<&mut [u8]> {
        let slot = match self.held.get(&index) {
            Some(&Held::Slot(slot)) => slot,
            _ => {
                let (slot, evicting) = self.ring.peek()?;
                if evicting {
                    let owner = self.owner[slot as usize];
                    if self.held.get(&owner) == Some(&Held::Slot(slot)) {
                        self.held.remove(&owner);
                    }
                }
                self.ring.advance();
                self.owner[slot as usize] = index;
                self.held.insert(index, Held::Slot(slot));
                slot
            }
        };
        Some(self.ring.page_mut(slot))
    }

    /// Records `page` as the version of page `index`.
    pub fn record(&mut self, index: u64, page: &[u8]) {
        if let Some(slot) = self.slot_for(index) {
            slot.copy_from_slice(page);
        }
    }
}
