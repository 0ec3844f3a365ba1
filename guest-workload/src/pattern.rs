//! The content of a self-describing block: a pure function of (id, generation).
//!
//! A block is a slice of 64-bit words. Word 0 holds the id, word 1 the generation tagged
//! with [`MAGIC`], and every other word comes from an xorshift stream seeded by both, so
//! any changed, lost or misplaced word shows up when the block is checked against the
//! generation its owner expects. The `dirty` workload uses 4 KiB pages as blocks, the
//! `table` workload its records.

/// Tag in the upper half of word 1, so a zeroed or foreign block never looks valid.
pub const MAGIC: u64 = 0x4457_4350 << 32;

/// Words at the start of a block that hold its id and generation.
pub const HEADER_WORDS: usize = 2;

/// How a block differs from the content expected for its (id, generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diff {
    /// Index of the first word that differs.
    pub word: usize,
    /// The generation the block's header claims (`None` if the header is not valid).
    pub found_gen: Option<u32>,
}

/// Fills `block` with the content of (`id`, `generation`).
pub fn write(block: &mut [u64], id: u64, generation: u32) {
    let mut words = Stream::new(id, generation);
    for (i, word) in block.iter_mut().enumerate() {
        *word = words.word(i);
    }
}

/// Checks `block` against the content of (`id`, `generation`).
pub fn check(block: &[u64], id: u64, generation: u32) -> Result<(), Diff> {
    let mut words = Stream::new(id, generation);
    match block
        .iter()
        .enumerate()
        .position(|(i, &w)| w != words.word(i))
    {
        None => Ok(()),
        Some(word) => Err(Diff {
            word,
            found_gen: header_gen(block),
        }),
    }
}

/// The generation in `block`'s header, if the header carries the tag.
pub fn header_gen(block: &[u64]) -> Option<u32> {
    let tagged = *block.get(1)?;
    (tagged & !u64::from(u32::MAX) == MAGIC)
        .then(|| u32::try_from(tagged & u64::from(u32::MAX)).ok())
        .flatten()
}

/// A non-zero xorshift seed for (`id`, `generation`): the splitmix64 finaliser, so that
/// neighbouring ids and generations get unrelated seeds.
pub fn seed(id: u64, generation: u32) -> u64 {
    let generation = u64::from(generation);
    let mut z = id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(generation.rotate_left(40) ^ 0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // xorshift must not start at zero.
    z | 1
}

/// The words of one block, produced in order.
struct Stream {
    /// The block id (word 0).
    id: u64,
    /// Word 1.
    tagged_gen: u64,
    /// xorshift64 state for the body.
    state: u64,
}

impl Stream {
    /// The stream of (`id`, `generation`).
    fn new(id: u64, generation: u32) -> Self {
        Self {
            id,
            tagged_gen: MAGIC | u64::from(generation),
            state: seed(id, generation),
        }
    }

    /// Word `i` of the block; must be called with i = 0, 1, 2, ... in order.
    fn word(&mut self, i: usize) -> u64 {
        match i {
            0 => self.id,
            1 => self.tagged_gen,
            _ => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_block_checks_and_others_do_not() {
        let mut block = vec![0u64; 512];
        write(&mut block, 7, 3);
        assert_eq!(check(&block, 7, 3), Ok(()));
        assert_eq!(
            check(&block, 7, 4),
            Err(Diff {
                word: 1,
                found_gen: Some(3)
            })
        );
        assert_eq!(check(&block, 8, 3).unwrap_err().word, 0);
    }

    #[test]
    fn any_flipped_bit_is_found() {
        let mut block = vec![0u64; 512];
        for word in [0, 1, 2, 255, 511] {
            write(&mut block, 42, 9);
            block[word] ^= 1 << 17;
            assert_eq!(check(&block, 42, 9).unwrap_err().word, word);
        }
    }

    #[test]
    fn zeroed_block_has_no_generation() {
        let block = vec![0u64; 64];
        assert_eq!(
            check(&block, 0, 0),
            Err(Diff {
                word: 1,
                found_gen: None
            })
        );
    }

    #[test]
    fn content_differs_between_generations_and_ids() {
        let (mut a, mut b, mut c) = (vec![0u64; 64], vec![0u64; 64], vec![0u64; 64]);
        write(&mut a, 1, 1);
        write(&mut b, 1, 2);
        write(&mut c, 2, 1);
        let same =
            |x: &[u64], y: &[u64]| x[2..].iter().zip(&y[2..]).filter(|(p, q)| p == q).count();
        assert_eq!(same(&a, &b), 0);
        assert_eq!(same(&a, &c), 0);
    }
}
