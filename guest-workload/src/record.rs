//! The content of one `table` record: what a row of a customer table looks like, as a
//! pure function of (key, version), so that any changed, lost or misplaced word shows up
//! when the record is checked.
//!
//! A record is 512 bytes: the key and the version tagged with [`pattern::MAGIC`] (the
//! same header as [`pattern`] blocks), an update time and a balance, a customer name and
//! a status in ASCII, and a free-text note of words drawn from a small vocabulary. Rows
//! of real tables compress like this (structured fields, repeated words), unlike
//! [`pattern`]'s pseudo-random blocks.

use crate::pattern::{self, Diff};

/// Bytes in one record.
pub const BYTES: usize = 512;
/// 64-bit words in one record.
pub const WORDS: usize = BYTES / 8;

/// Where the note starts.
const NOTE_AT: usize = 64;
/// Statuses a row can be in.
const STATUSES: [&[u8; 8]; 4] = [b"active  ", b"pending ", b"closed  ", b"review  "];
/// The notes' vocabulary.
const VOCABULARY: [&str; 64] = [
    "order",
    "shipped",
    "invoice",
    "payment",
    "received",
    "customer",
    "account",
    "update",
    "address",
    "changed",
    "pending",
    "review",
    "refund",
    "issued",
    "delivery",
    "delayed",
    "warehouse",
    "stock",
    "item",
    "returned",
    "credit",
    "limit",
    "raised",
    "contact",
    "phone",
    "email",
    "verified",
    "priority",
    "support",
    "ticket",
    "closed",
    "opened",
    "the",
    "a",
    "for",
    "with",
    "after",
    "before",
    "and",
    "to",
    "of",
    "on",
    "by",
    "in",
    "monday",
    "tuesday",
    "friday",
    "week",
    "month",
    "quarter",
    "report",
    "sent",
    "call",
    "back",
    "requested",
    "approved",
    "rejected",
    "note",
    "see",
    "previous",
    "entry",
    "discount",
    "applied",
    "renewal",
];

/// `cust-` and the key's last 12 decimal digits, without allocating (the verifier builds
/// every record it checks).
fn customer_name(key: u64) -> [u8; 17] {
    let mut name = *b"cust-000000000000";
    let mut rest = key % 1_000_000_000_000;
    for digit in name[5..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    name
}

/// The record of (`key`, `version`), as bytes.
fn bytes(key: u64, version: u32) -> [u8; BYTES] {
    let mut out = [b' '; BYTES];
    let mut put = |at: usize, field: &[u8]| out[at..at + field.len()].copy_from_slice(field);
    let mut header = [0u64; pattern::HEADER_WORDS];
    pattern::write(&mut header, key, version);
    put(0, &header[0].to_le_bytes());
    put(8, &header[1].to_le_bytes());
    let updated_ms = 1_790_000_000_000 + u64::from(version) * 997 + (key & 0xffff);
    put(16, &updated_ms.to_le_bytes());
    let balance_cents = (key % 1_000_000) * 100 + u64::from(version);
    put(24, &balance_cents.to_le_bytes());
    put(32, &customer_name(key));
    put(56, STATUSES[((key ^ u64::from(version)) & 3) as usize]);
    let mut state = pattern::seed(key, version);
    let mut at = NOTE_AT;
    loop {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = VOCABULARY[(state % VOCABULARY.len() as u64) as usize].as_bytes();
        if at + word.len() >= BYTES {
            break;
        }
        put(at, word);
        at += word.len() + 1;
    }
    out
}

/// The record of (`key`, `version`), as words.
fn words(key: u64, version: u32) -> impl Iterator<Item = u64> {
    let bytes = bytes(key, version);
    (0..WORDS).map(move |i| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(word)
    })
}

/// Fills `record` (of [`WORDS`] words) with the row of (`key`, `version`).
pub fn write(record: &mut [u64], key: u64, version: u32) {
    for (slot, word) in record.iter_mut().zip(words(key, version)) {
        *slot = word;
    }
}

/// Checks `record` against the row of (`key`, `version`).
pub fn check(record: &[u64], key: u64, version: u32) -> Result<(), Diff> {
    match record
        .iter()
        .zip(words(key, version))
        .position(|(&found, expected)| found != expected)
    {
        None => Ok(()),
        Some(word) => Err(Diff {
            word,
            found_gen: pattern::header_gen(record),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_record_checks_and_others_do_not() {
        let mut record = [0u64; WORDS];
        write(&mut record, 7, 3);
        assert_eq!(check(&record, 7, 3), Ok(()));
        assert_eq!(
            check(&record, 7, 4),
            Err(Diff {
                word: 1,
                found_gen: Some(3)
            })
        );
        assert_eq!(check(&record, 8, 3).unwrap_err().word, 0);
        assert_eq!(check(&[0; WORDS], 0, 0).unwrap_err().found_gen, None);
    }

    #[test]
    fn any_flipped_bit_is_found() {
        let mut record = [0u64; WORDS];
        for word in [0, 1, 2, 5, 8, 40, WORDS - 1] {
            write(&mut record, 42, 9);
            record[word] ^= 1 << 17;
            assert_eq!(check(&record, 42, 9).unwrap_err().word, word);
        }
    }

    #[test]
    fn rows_read_like_rows_and_every_version_differs() {
        let row = bytes(123_456_789, 2);
        let text = String::from_utf8_lossy(&row[32..]);
        assert!(text.starts_with("cust-000123456789"), "{text}");
        assert!(
            text[24..].split_whitespace().count() > 40,
            "a note of words: {text}"
        );
        assert_ne!(bytes(123_456_789, 3)[NOTE_AT..], row[NOTE_AT..]);
    }
}
