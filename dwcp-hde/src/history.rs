//! Level 2's cache of previous versions: the last content each side saw for a page
//! index, for at most `history_slots` pages.
//!
//! Both sides record every full page of every block (but unchanged ones), in order,
//! after the block's lookups: a page already held is
//! overwritten in its slot; a new page takes the next slot of a [`PageRing`], evicting
//! the page that slot held. Sender and receiver therefore agree at every block on which
//! versions the receiver holds, and a delta or "unchanged" marker is only sent for a page
//! that is held.

use std::collections::HashMap;

use crate::ring::PageRing;

/// Previous versions of pages, keyed by page index.
#[derive(Debug)]
pub struct History {
    ring: PageRing,
    slot_of: HashMap<u64, u32>,
    owner: Vec<u64>,
}

impl History {
    /// A cache of `slots` pages (0: disabled, holds nothing).
    #[must_use]
    pub fn new(slots: u32) -> Self {
        Self {
            ring: PageRing::new(slots),
            slot_of: HashMap::with_capacity(slots as usize),
            owner: vec![0; slots as usize],
        }
    }

    /// The version held for page `index`.
    #[must_use]
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        self.slot_of.get(&index).map(|&slot| self.ring.page(slot))
    }

    /// The storage for page `index`'s new version, to be filled by the caller
    /// (taking a slot, and evicting its page, if `index` is not held).
    pub fn slot_for(&mut self, index: u64) -> Option<&mut [u8]> {
        let slot = match self.slot_of.get(&index) {
            Some(&slot) => slot,
            None => {
                let (slot, evicting) = self.ring.peek()?;
                if evicting {
                    self.slot_of.remove(&self.owner[slot as usize]);
                }
                self.ring.advance();
                self.owner[slot as usize] = index;
                self.slot_of.insert(index, slot);
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
