//! The `dirty` workload's memory: `mem_mib` of 4 KiB pages, each holding the content of
//! (page index, generation), with the generation of every page kept aside.

use crate::{
    PAGE_SIZE, pattern,
    verify::{Mismatch, Store},
};

/// 64-bit words in one page.
const PAGE_WORDS: usize = PAGE_SIZE / 8;

/// Pages whose content the workload knows.
#[derive(Debug)]
pub struct Pages {
    /// All pages, one after the other.
    words: Vec<u64>,
    /// The generation each page was last written with.
    generations: Vec<u32>,
}

impl Pages {
    /// `count` pages, every one written with generation 0 (so all of it is resident).
    pub fn new(count: usize) -> Self {
        let mut words = vec![0u64; count * PAGE_WORDS];
        for (index, page) in words.as_chunks_mut::<PAGE_WORDS>().0.iter_mut().enumerate() {
            pattern::write(page, index as u64, 0);
        }
        Self {
            words,
            generations: vec![0; count],
        }
    }

    /// The words of page `index`, to read or damage (tests).
    pub fn page_mut(&mut self, index: usize) -> &mut [u64] {
        &mut self.words[index * PAGE_WORDS..(index + 1) * PAGE_WORDS]
    }
}

impl Store for Pages {
    fn units(&self) -> usize {
        self.generations.len()
    }

    fn unit_bytes(&self) -> usize {
        PAGE_SIZE
    }

    fn dirty(&mut self, unit: usize) {
        let generation = self.generations[unit].wrapping_add(1);
        self.generations[unit] = generation;
        pattern::write(self.page_mut(unit), unit as u64, generation);
    }

    fn check(&self, unit: usize) -> Result<(), Mismatch> {
        let expected_gen = self.generations[unit];
        let page = &self.words[unit * PAGE_WORDS..(unit + 1) * PAGE_WORDS];
        pattern::check(page, unit as u64, expected_gen).map_err(|diff| Mismatch {
            unit,
            expected_gen,
            found_gen: diff.found_gen,
            word: diff.word,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Engine;

    #[test]
    fn clean_memory_verifies_through_many_passes() {
        let mut engine = Engine::new(Pages::new(64), 7);
        for _ in 0..10 {
            engine.dirty(50);
            engine.verify(64);
        }
        let status = engine.status();
        assert_eq!((status.passes, status.pages, status.dirtied), (10, 64, 500));
        assert_eq!(status.failures, 0);
        assert_eq!(
            status.to_string(),
            "DWCP-VERIFY ok pass=10 pages=64 dirtied=500"
        );
    }

    #[test]
    fn corrupted_page_is_reported_and_stays_reported() {
        let mut engine = Engine::new(Pages::new(32), 3);
        engine.dirty(100);
        engine.verify(32);
        let pages = engine.store_mut();
        let expected = pages.generations[5];
        pages.page_mut(5)[300] ^= 0x40;
        engine.verify(32);
        let status = engine.status();
        assert_eq!(status.failures, 1);
        let line = status.to_string();
        assert!(
            line.starts_with(&format!(
                "DWCP-VERIFY FAIL page=5 expected_gen={expected} found_gen={expected} word=300 failures=1 pass=2"
            )),
            "{line}"
        );
        // Rewriting the page heals it, but the report keeps the failure.
        engine.store_mut().dirty(5);
        engine.verify(32);
        assert_eq!(engine.status().failures, 1);
        assert!(
            engine
                .status()
                .to_string()
                .starts_with("DWCP-VERIFY FAIL page=5")
        );
    }

    #[test]
    fn stale_page_is_found_by_its_generation() {
        // A page that missed its last write (e.g. not re-sent by a migration) holds the
        // previous generation.
        let mut pages = Pages::new(4);
        let old: Vec<u64> = pages.page_mut(2).to_vec();
        pages.dirty(2);
        pages.page_mut(2).copy_from_slice(&old);
        assert_eq!(
            pages.check(2),
            Err(Mismatch {
                unit: 2,
                expected_gen: 1,
                found_gen: Some(0),
                word: 1
            })
        );
    }
}
