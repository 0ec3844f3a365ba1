//! Level 2's page delta: XOR against the previous version, coded as zero runs and
//! literal XOR runs (the scheme of QEMU's XBZRLE, with XOR bytes instead of new bytes).
//!
//! Encoding: a sequence of `(skip, len, bytes[len])` where `skip` and `len` are LEB128
//! varints: `skip` bytes are unchanged (XOR zero), then `len` bytes are XORed with
//! `bytes`. Runs of unchanged bytes shorter than [`MIN_SKIP`] are folded into the
//! literal run (a varint costs more than it saves). The delta of an unchanged page is
//! empty. Decoding checks every length against the page, so no input can write outside
//! it.

use thiserror::Error;

/// Unchanged runs shorter than this are carried inside a literal run.
const MIN_SKIP: usize = 3;

/// A delta that does not fit its page.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeltaError {
    /// A varint ran past the end of the delta or over 32 bits.
    #[error("Delta varint is truncated or too long")]
    BadVarint,
    /// A run reaches past the end of the page or of the delta.
    #[error("Delta run of {len} bytes at offset {at} exceeds the page or the delta")]
    Overrun {
        /// Page offset where the run starts.
        at: usize,
        /// Length of the run.
        len: usize,
    },
}

/// Appends to `out` the delta that turns `old` into `new` (same length), stopping early
/// and returning `false` once it would exceed `limit` bytes (then `out` is restored).
pub fn encode(old: &[u8], new: &[u8], limit: usize, out: &mut Vec<u8>) -> bool {
    debug_assert_eq!(old.len(), new.len());
    let start = out.len();
    let n = new.len();
    let mut pos = 0;
    let mut pending_skip = 0usize;
    while pos < n {
        // Skip equal bytes, eight at a time while possible.
        let run_start = pos;
        while pos + 8 <= n && old[pos..pos + 8] == new[pos..pos + 8] {
            pos += 8;
        }
        while pos < n && old[pos] == new[pos] {
            pos += 1;
        }
        pending_skip += pos - run_start;
        if pos == n {
            break;
        }
        // A literal run: extend while differing, absorbing short equal gaps.
        let lit_start = pos;
        let mut end = pos;
        while end < n {
            if old[end] != new[end] {
                end += 1;
                continue;
            }
            let mut gap = end;
            while gap < n && gap - end < MIN_SKIP && old[gap] == new[gap] {
                gap += 1;
            }
            if gap - end >= MIN_SKIP || gap == n {
                break;
            }
            end = gap;
        }
        put_varint(out, pending_skip);
        put_varint(out, end - lit_start);
        out.extend(
            old[lit_start..end]
                .iter()
                .zip(&new[lit_start..end])
                .map(|(a, b)| a ^ b),
        );
        if out.len() - start > limit {
            out.truncate(start);
            return false;
        }
        pending_skip = 0;
        pos = end;
    }
    true
}

/// Applies `delta` to `page` in place (XOR of every literal run).
pub fn apply(delta: &[u8], page: &mut [u8]) -> Result<(), DeltaError> {
    let mut at = 0usize;
    let mut rest = delta;
    while !rest.is_empty() {
        let skip = take_varint(&mut rest)?;
        let len = take_varint(&mut rest)?;
        let from = at
            .checked_add(skip)
            .ok_or(DeltaError::Overrun { at, len: skip })?;
        let to = from
            .checked_add(len)
            .filter(|&to| to <= page.len() && len <= rest.len())
            .ok_or(DeltaError::Overrun { at: from, len })?;
        let (bytes, tail) = rest.split_at(len);
        for (p, x) in page[from..to].iter_mut().zip(bytes) {
            *p ^= x;
        }
        rest = tail;
        at = to;
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(rest: &mut &[u8]) -> Result<usize, DeltaError> {
    let mut value = 0usize;
    for (i, &byte) in rest.iter().enumerate().take(5) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Ok(value);
        }
    }
    Err(DeltaError::BadVarint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PAGE_SIZE;

    fn round_trip(old: &[u8], new: &[u8]) -> usize {
        let mut delta = Vec::new();
        assert!(encode(old, new, usize::MAX, &mut delta));
        let mut page = old.to_vec();
        apply(&delta, &mut page).expect("own delta applies");
        assert_eq!(page, new);
        delta.len()
    }

    #[test]
    fn small_edits_give_small_deltas() {
        let old: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7) as u8).collect();
        assert_eq!(round_trip(&old, &old), 0);
        let mut new = old.clone();
        new[100] ^= 1;
        new[101] ^= 2;
        new[4000] = 0;
        assert!(round_trip(&old, &new) < 10);
        new[PAGE_SIZE - 1] ^= 0xff;
        round_trip(&old, &new);
        let random: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 31 + 5) as u8 ^ 0x55).collect();
        round_trip(&old, &random);
    }

    #[test]
    fn limit_stops_encoding_and_restores_output() {
        let old = vec![0u8; PAGE_SIZE];
        let new = vec![1u8; PAGE_SIZE];
        let mut out = vec![9];
        assert!(!encode(&old, &new, 100, &mut out));
        assert_eq!(out, [9]);
    }

    #[test]
    fn hostile_deltas_are_refused() {
        let mut page = vec![0u8; 16];
        assert_eq!(apply(&[0x80], &mut page), Err(DeltaError::BadVarint));
        assert!(matches!(
            apply(&[10, 10, 0], &mut page),
            Err(DeltaError::Overrun { .. })
        ));
        assert!(matches!(
            apply(&[0, 4, 1], &mut page),
            Err(DeltaError::Overrun { .. })
        ));
        assert_eq!(
            apply(&[0xff, 0xff, 0xff, 0xff, 0xff, 0], &mut page),
            Err(DeltaError::BadVarint)
        );
        assert!(apply(&[15, 1, 7], &mut page).is_ok());
        assert_eq!(page[15], 7);
    }
}
