//! Corrupt, truncated and hostile frames: a clear error, never a panic, never wrong data.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use dwcp_hde::{
    DecodeError, Decoder, Encoder, HdeConfig, PAGE_SIZE,
    frame::{FLAG_USES_DICT, FLAG_ZSTD, Header, HeaderError},
};

fn config() -> HdeConfig {
    HdeConfig {
        index_slots: 32,
        history_slots: 64,
        dict_sample_pages: 8,
        dict_bytes: 2048,
        workers: 1,
        ..HdeConfig::default()
    }
}

/// Two rounds of 16 pages in 4-page blocks: zeros, duplicates, text, edits.
fn stream() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut first = vec![0u8; 16 * PAGE_SIZE];
    for (i, b) in first[4 * PAGE_SIZE..].iter_mut().enumerate() {
        *b = b"memory dump text, "[(i / 3 + i / 4096) % 18].wrapping_add((i / 700) as u8);
    }
    first.copy_within(5 * PAGE_SIZE..6 * PAGE_SIZE, 9 * PAGE_SIZE);
    let mut second = first.clone();
    second[6 * PAGE_SIZE + 10] ^= 0xff;
    second[12 * PAGE_SIZE..13 * PAGE_SIZE].fill(7);
    let mut encoder = Encoder::new(&config());
    let (mut frames, mut blocks) = (Vec::new(), Vec::new());
    for round in [&first, &second] {
        for (n, block) in round.chunks(4 * PAGE_SIZE).enumerate() {
            let mut frame = Vec::new();
            encoder
                .encode_block(n as u64 * 4, block, &mut frame)
                .unwrap();
            frames.push(frame);
            blocks.push(block.to_vec());
        }
    }
    (frames, blocks)
}

/// A decoder that has decoded `frames[..k]`.
fn decoder_at(frames: &[Vec<u8>], k: usize) -> Decoder {
    let mut decoder = Decoder::new(&config());
    let mut out = Vec::new();
    for frame in &frames[..k] {
        decoder.decode_block(frame, &mut out).unwrap();
    }
    decoder
}

#[test]
fn every_truncation_is_refused() {
    let (frames, _) = stream();
    for (k, frame) in frames.iter().enumerate() {
        for len in 0..frame.len() {
            let mut decoder = decoder_at(&frames, k);
            let err = decoder
                .decode_block(&frame[..len], &mut Vec::new())
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Header(
                        HeaderError::Truncated(_) | HeaderError::SizeMismatch { .. }
                    )
                ),
                "frame {k} cut at {len}: {err}"
            );
            // Refused before any state changed: the whole frame still decodes.
            assert!(err.is_clean());
            decoder.decode_block(frame, &mut Vec::new()).unwrap();
        }
    }
}

#[test]
fn bit_flips_never_give_wrong_data() {
    let (frames, blocks) = stream();
    let mut refused = 0;
    for (k, frame) in frames.iter().enumerate() {
        let step = (frame.len() * 8 / 400).max(1);
        for bit in (0..frame.len() * 8).step_by(step) {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut decoder = decoder_at(&frames, k);
            let mut out = Vec::new();
            match decoder.decode_block(&bad, &mut out) {
                Ok(_) => assert_eq!(out, blocks[k], "frame {k} bit {bit} decoded to wrong data"),
                Err(err) => {
                    refused += 1;
                    assert!(!err.to_string().is_empty());
                    if !err.is_clean() {
                        // A poisoned decoder refuses everything after.
                        let next = frames.get(k + 1).unwrap_or(frame);
                        assert!(matches!(
                            decoder.decode_block(next, &mut out),
                            Err(DecodeError::Poisoned | DecodeError::OutOfOrder { .. })
                        ));
                    }
                }
            }
        }
    }
    assert!(refused > 100, "only {refused} flips refused");
}

#[test]
fn frames_out_of_order_or_from_another_geometry_are_refused_cleanly() {
    let (frames, _) = stream();
    let mut decoder = Decoder::new(&config());
    let mut out = Vec::new();
    assert!(matches!(
        decoder.decode_block(&frames[1], &mut out),
        Err(DecodeError::OutOfOrder {
            expected: 0,
            got: 1
        })
    ));
    decoder.decode_block(&frames[0], &mut out).unwrap();
    assert!(matches!(
        decoder.decode_block(&frames[0], &mut out),
        Err(DecodeError::OutOfOrder {
            expected: 1,
            got: 0
        })
    ));
    decoder.decode_block(&frames[1], &mut out).unwrap();
    let other = HdeConfig {
        index_slots: 31,
        ..config()
    };
    assert!(matches!(
        Decoder::new(&other).decode_block(&frames[0], &mut out),
        Err(DecodeError::GeometryMismatch {
            index: 32,
            our_index: 31,
            ..
        })
    ));
}

/// A stored (uncompressed) frame with the given raw payload, for a 1-page block.
fn handmade(sequence: u64, first_page: u64, raw: &[u8], data_len: u32) -> Vec<u8> {
    let header = Header {
        flags: 0,
        zstd_level: 0,
        sequence,
        first_page,
        data_len,
        index_slots: 32,
        history_slots: 64,
        dict_id: 0,
        dict_len: 0,
        stored_len: raw.len() as u32,
        raw_len: raw.len() as u32,
        checksum: 0,
    };
    let mut frame = Vec::new();
    header.write(&mut frame);
    frame.extend_from_slice(raw);
    frame
}

#[test]
fn references_to_what_the_receiver_does_not_hold_are_refused() {
    let page = PAGE_SIZE as u32;
    let mut out = Vec::new();
    // A duplicate of index slot 5 with an empty index.
    let dup = handmade(0, 0, &[2, 5, 0, 0, 0], page);
    assert!(matches!(
        Decoder::new(&config()).decode_block(&dup, &mut out),
        Err(DecodeError::BadSlot { page: 0, slot: 5 })
    ));
    // Unchanged and delta pages that were never sent.
    let unchanged = handmade(0, 7, &[4], page);
    assert!(matches!(
        Decoder::new(&config()).decode_block(&unchanged, &mut out),
        Err(DecodeError::NotHeld(7))
    ));
    let delta = handmade(0, 9, &[3, 2, 0, 0, 1], page);
    assert!(matches!(
        Decoder::new(&config()).decode_block(&delta, &mut out),
        Err(DecodeError::NotHeld(9))
    ));
    // A zero page whose checksum is wrong.
    let zero = handmade(0, 0, &[0], page);
    let mut decoder = Decoder::new(&config());
    assert!(matches!(
        decoder.decode_block(&zero, &mut out),
        Err(DecodeError::Checksum(0))
    ));
    assert!(matches!(
        decoder.decode_block(&handmade(1, 0, &[0], page), &mut out),
        Err(DecodeError::Poisoned)
    ));
}

#[test]
fn inconsistent_payloads_are_refused() {
    let page = PAGE_SIZE as u32;
    let mut out = Vec::new();
    let cases: [(&[u8], &str); 5] = [
        (&[9], "unknown kind"),
        (&[2, 1, 0], "refs"),
        (&[3, 0x10, 0x10], "delta longer than a page"),
        (&[1, 0, 0], "literals"),
        (&[0, 0], "trailing"),
    ];
    for (raw, what) in cases {
        let err = Decoder::new(&config())
            .decode_block(&handmade(0, 0, raw, page), &mut out)
            .unwrap_err();
        assert!(matches!(err, DecodeError::Payload(_)), "{what}: {err}");
        assert!(err.is_clean());
    }
    // A delta that runs past its page.
    let raw = [3, 3, 0, 0x80, 0x20, 1];
    let mut encoder = Encoder::new(&config());
    let mut first = Vec::new();
    encoder
        .encode_block(0, &vec![1u8; PAGE_SIZE], &mut first)
        .unwrap();
    let mut decoder = Decoder::new(&config());
    decoder.decode_block(&first, &mut out).unwrap();
    assert!(matches!(
        decoder.decode_block(&handmade(1, 0, &raw, page), &mut out),
        Err(DecodeError::Delta { page: 0, .. })
    ));
}

#[test]
fn a_dictionary_never_received_is_refused() {
    let header = Header {
        flags: FLAG_ZSTD | FLAG_USES_DICT,
        zstd_level: 1,
        sequence: 0,
        first_page: 0,
        data_len: 4096,
        index_slots: 32,
        history_slots: 64,
        dict_id: 1,
        dict_len: 0,
        stored_len: 4,
        raw_len: 4097,
        checksum: 0,
    };
    let mut frame = Vec::new();
    header.write(&mut frame);
    frame.extend_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(
        Decoder::new(&config()).decode_block(&frame, &mut Vec::new()),
        Err(DecodeError::UnknownDictionary(1))
    ));
    // A corrupt zstd payload without a dictionary.
    let header = Header {
        flags: FLAG_ZSTD,
        dict_id: 0,
        ..header
    };
    let mut frame = Vec::new();
    header.write(&mut frame);
    frame.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
    assert!(matches!(
        Decoder::new(&config()).decode_block(&frame, &mut Vec::new()),
        Err(DecodeError::Decompress(_))
    ));
}
