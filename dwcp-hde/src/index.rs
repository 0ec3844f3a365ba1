//! Level 1: the content index of recent unique pages.
//!
//! Both sides keep a [`PageRing`] of `index_slots` pages. Every page coded as a literal
//! or a delta (a page the receiver could not find any other way) is stored in the next
//! slot, in block and page order, so the two rings stay identical without any message.
//! A duplicate page is then sent as the number of the slot that holds it.
//!
//! Only the encoder has the hash table (xxh3-64 of the page -> slot). A hit is confirmed
//! by comparing the whole page with the slot's bytes, so a hash collision can only cost
//! a missed duplicate, never a wrong reference. When a slot is reused, its old hash is
//! removed from the table if it still points there.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::ring::PageRing;

/// The encoder's side of the index: ring, hash table, the hash held by each slot.
#[derive(Debug)]
pub struct EncoderIndex {
    ring: PageRing,
    table: HashMap<u64, u32>,
    slot_hash: Vec<u64>,
}

impl EncoderIndex {
    /// An index of `slots` pages (0: disabled, never finds anything).
    #[must_use]
    pub fn new(slots: u32) -> Self {
        Self {
            ring: PageRing::new(slots),
            table: HashMap::with_capacity(slots as usize),
            slot_hash: vec![0; slots as usize],
        }
    }

    /// The slot holding exactly `page`, with the page's hash (to pass to
    /// [`Self::insert`] on a miss).
    #[must_use]
    pub fn find(&self, page: &[u8]) -> (Option<u32>, u64) {
        if self.ring.slots() == 0 {
            return (None, 0);
        }
        let hash = xxh3_64(page);
        let found = self
            .table
            .get(&hash)
            .copied()
            .filter(|&slot| self.ring.page(slot) == page);
        (found, hash)
    }

    /// Stores `page` (hash `hash`) in the next slot, as the decoder will.
    pub fn insert(&mut self, page: &[u8], hash: u64) {
        let Some((slot, evicting)) = self.ring.peek() else {
            return;
        };
        if evicting {
            let old = self.slot_hash[slot as usize];
            if self.table.get(&old) == Some(&slot) {
                self.table.remove(&old);
            }
        }
        self.ring.advance();
        self.ring.page_mut(slot).copy_from_slice(page);
        self.slot_hash[slot as usize] = hash;
        self.table.insert(hash, slot);
    }
}

/// The decoder's side: just the ring, filled in the same order.
#[derive(Debug)]
pub struct DecoderIndex {
    ring: PageRing,
}

impl DecoderIndex {
    /// An index of `slots` pages.
    #[must_use]
    pub fn new(slots: u32) -> Self {
        Self {
            ring: PageRing::new(slots),
        }
    }

    /// The page in `slot`, if that slot has been filled.
    #[must_use]
    pub fn get(&self, slot: u32) -> Option<&[u8]> {
        self.ring.is_filled(slot).then(|| self.ring.page(slot))
    }

    /// Stores `page` in the next slot.
    pub fn insert(&mut self, page: &[u8]) {
        if let Some(slot) = self.ring.advance() {
            self.ring.page_mut(slot).copy_from_slice(page);
        }
    }
}
