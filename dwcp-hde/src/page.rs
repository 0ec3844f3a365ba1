//! Pages: the unit every level works on, and the fast zero test (level 0).

/// Bytes in one page (guest memory pages, and the unit of images and files).
pub const PAGE_SIZE: usize = 4096;

/// Whether `page` holds only zero bytes.
///
/// Reads eight `u64` lanes at a time and ORs them together so the compiler can use wide
/// vector loads; stops at the first non-zero 64-byte chunk (most data pages differ from
/// zero in their first bytes, so non-zero pages cost little).
#[must_use]
pub fn is_zero(page: &[u8]) -> bool {
    let (chunks, rest) = page.as_chunks::<64>();
    for chunk in chunks {
        let (lanes, _) = chunk.as_chunks::<8>();
        let acc = lanes
            .iter()
            .fold(0u64, |acc, lane| acc | u64::from_ne_bytes(*lane));
        if acc != 0 {
            return false;
        }
    }
    rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_test_sees_every_byte() {
        let mut page = vec![0u8; PAGE_SIZE];
        assert!(is_zero(&page));
        for at in [0, 7, 63, 64, 2047, PAGE_SIZE - 1] {
            page[at] = 1;
            assert!(!is_zero(&page), "byte {at} missed");
            page[at] = 0;
        }
        assert!(is_zero(&page[..100]));
        assert!(!is_zero(&[0, 0, 3]));
    }
}
