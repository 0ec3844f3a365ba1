//! The `table` workload's memory: a key/value table of fixed-size records. Each record
//! holds its key, its version and a customer row derived from both ([`record`]); a hash
//! index maps keys to record slots, and updates go through it.

use std::collections::HashMap;

use crate::{
    record,
    verify::{Mismatch, Store},
};

/// Bytes in one record (key, version, fields, note: see [`record`]).
pub const RECORD_BYTES: usize = record::BYTES;
/// 64-bit words in one record.
const RECORD_WORDS: usize = record::WORDS;

/// An in-memory key/value table whose every record can be checked.
#[derive(Debug)]
pub struct Table {
    /// All records, one after the other.
    words: Vec<u64>,
    /// The key of each slot.
    keys: Vec<u64>,
    /// The version each slot was last written with.
    versions: Vec<u32>,
    /// Key to slot.
    index: HashMap<u64, usize>,
}

impl Table {
    /// A table of `count` records with distinct pseudo-random keys drawn from `seed`,
    /// every record at version 0.
    pub fn new(count: usize, seed: u64) -> Self {
        let mut state = seed | 1;
        let mut keys = Vec::with_capacity(count);
        let mut index = HashMap::with_capacity(count);
        while keys.len() < count {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if index.insert(state, keys.len()).is_none() {
                keys.push(state);
            }
        }
        let mut words = vec![0u64; count * RECORD_WORDS];
        for (record, &key) in words
            .as_chunks_mut::<RECORD_WORDS>()
            .0
            .iter_mut()
            .zip(&keys)
        {
            record::write(record, key, 0);
        }
        Self {
            words,
            keys,
            versions: vec![0; count],
            index,
        }
    }

    /// Writes the next version of the record stored under `key`; false if there is none.
    pub fn update(&mut self, key: u64) -> bool {
        let Some(&slot) = self.index.get(&key) else {
            return false;
        };
        let version = self.versions[slot].wrapping_add(1);
        self.versions[slot] = version;
        record::write(self.record_mut(slot), key, version);
        true
    }

    /// The words of the record in `slot`, to read or damage (tests).
    pub fn record_mut(&mut self, slot: usize) -> &mut [u64] {
        &mut self.words[slot * RECORD_WORDS..(slot + 1) * RECORD_WORDS]
    }
}

impl Store for Table {
    fn units(&self) -> usize {
        self.keys.len()
    }

    fn unit_bytes(&self) -> usize {
        RECORD_BYTES
    }

    fn dirty(&mut self, unit: usize) {
        let key = self.keys[unit];
        self.update(key);
    }

    fn check(&self, unit: usize) -> Result<(), Mismatch> {
        let key = self.keys[unit];
        let expected_gen = self.versions[unit];
        let record = &self.words[unit * RECORD_WORDS..(unit + 1) * RECORD_WORDS];
        let mismatch = |word, found_gen| Mismatch {
            unit,
            expected_gen,
            found_gen,
            word,
        };
        if self.index.get(&key) != Some(&unit) {
            return Err(mismatch(0, None));
        }
        record::check(record, key, expected_gen).map_err(|d| mismatch(d.word, d.found_gen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Engine;

    #[test]
    fn updates_go_through_the_index_and_verify() {
        let mut table = Table::new(100, 11);
        let key = table.keys[40];
        assert!(table.update(key));
        assert!(table.update(key));
        assert!(!table.update(key ^ 1));
        assert_eq!(table.versions[40], 2);
        let mut engine = Engine::new(table, 5);
        engine.dirty(1000);
        engine.verify(100);
        let status = engine.status();
        assert_eq!(status.failures, 0);
        // 100 records of 512 bytes fill 12 whole pages; 1000 updates wrote 125 pages.
        assert_eq!((status.pages, status.dirtied, status.passes), (12, 125, 1));
    }

    #[test]
    fn corrupted_record_is_reported() {
        let mut engine = Engine::new(Table::new(64, 2), 9);
        engine.dirty(10);
        engine.store_mut().record_mut(17)[9] = 0;
        engine.verify(64);
        let status = engine.status();
        assert_eq!(status.failures, 1);
        let (page, mismatch) = status.last_failure.unwrap();
        // Record 17 starts at byte 17 * 512, in page 2.
        assert_eq!((page, mismatch.unit, mismatch.word), (2, 17, 9));
    }
}
