//! Round trips of random page mixes through every level combination, sequential and
//! pipelined, over several rounds (so L2 sees previous versions).

use dwcp_hde::{DecodePipeline, Decoder, EncodePipeline, Encoder, HdeConfig, Levels, PAGE_SIZE};
use proptest::prelude::*;

/// How to build one page of a round.
#[derive(Debug, Clone)]
enum PageSpec {
    Zero,
    /// Copy of page `n` (modulo the round's pages) of this round.
    Dup(usize),
    /// Previous round's version with a few bytes changed.
    Edit(Vec<(u16, u8)>),
    /// Bytes from a seed.
    Random(u64),
    /// Text-like, compressible.
    Text(u8),
}

fn page_spec() -> impl Strategy<Value = PageSpec> {
    prop_oneof![
        Just(PageSpec::Zero),
        (0usize..64).prop_map(PageSpec::Dup),
        prop::collection::vec((0u16..PAGE_SIZE as u16, any::<u8>()), 0..20)
            .prop_map(PageSpec::Edit),
        any::<u64>().prop_map(PageSpec::Random),
        any::<u8>().prop_map(PageSpec::Text),
    ]
}

fn build_round(specs: &[PageSpec], previous: Option<&[u8]>, tail: usize) -> Vec<u8> {
    let mut data = vec![0u8; specs.len() * PAGE_SIZE + tail];
    for (i, spec) in specs.iter().enumerate() {
        let range = i * PAGE_SIZE..(i + 1) * PAGE_SIZE;
        match spec {
            PageSpec::Zero => {}
            PageSpec::Dup(n) => {
                let src = n % specs.len();
                if src < i {
                    data.copy_within(src * PAGE_SIZE..(src + 1) * PAGE_SIZE, range.start);
                }
            }
            PageSpec::Edit(edits) => {
                if let Some(prev) = previous.filter(|p| p.len() >= range.end) {
                    data[range.clone()].copy_from_slice(&prev[range.clone()]);
                }
                for &(at, byte) in edits {
                    data[range.start + usize::from(at)] = byte;
                }
            }
            PageSpec::Random(seed) => {
                let mut x = *seed | 1;
                for b in &mut data[range] {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            PageSpec::Text(k) => {
                for (j, b) in data[range].iter_mut().enumerate() {
                    *b = b"the quick brown fox "[(j + usize::from(*k)) % 20];
                }
            }
        }
    }
    for (j, b) in data[specs.len() * PAGE_SIZE..].iter_mut().enumerate() {
        *b = j as u8;
    }
    data
}

fn levels(bits: u8) -> Levels {
    Levels {
        zero: bits & 1 != 0,
        dedup: bits & 2 != 0,
        delta: bits & 4 != 0,
        zstd: bits & 8 != 0,
    }
}

fn config(bits: u8) -> HdeConfig {
    HdeConfig {
        levels: levels(bits),
        workers: 2,
        index_slots: 8,
        history_slots: 24,
        dict_sample_pages: 16,
        dict_bytes: 4096,
        in_flight: 3,
        ..HdeConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_level_combination_round_trips(
        bits in 0u8..16,
        rounds in prop::collection::vec(prop::collection::vec(page_spec(), 1..40), 1..4),
        tail in prop_oneof![Just(0usize), 1usize..PAGE_SIZE],
        block_pages in 1usize..12,
    ) {
        let cfg = config(bits);
        let mut encoder = Encoder::new(&cfg);
        let mut decoder = Decoder::new(&cfg);
        let mut previous: Option<Vec<u8>> = None;
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        for specs in &rounds {
            let data = build_round(specs, previous.as_deref(), tail);
            // Encode the round as blocks; the tail sits in the last one.
            let mut offset = 0;
            while offset < data.len() {
                let end = (offset + block_pages * PAGE_SIZE).min(data.len());
                let end = if data.len() - end < PAGE_SIZE && end != data.len() { data.len() } else { end };
                encoder.encode_block((offset / PAGE_SIZE) as u64, &data[offset..end], &mut frame).unwrap();
                let info = decoder.decode_block(&frame, &mut out).unwrap();
                prop_assert_eq!(info.first_page, (offset / PAGE_SIZE) as u64);
                prop_assert_eq!(&out[..], &data[offset..end]);
                offset = end;
            }
            // Pages may only grow across rounds here when they are not partial.
            previous = Some(data);
        }
        prop_assert_eq!(encoder.stats().data_bytes, decoder.stats().data_bytes);
    }

    #[test]
    fn pipelines_match_the_sequential_codec(
        bits in 0u8..16,
        specs in prop::collection::vec(page_spec(), 1..64),
        block_pages in 1usize..8,
    ) {
        let cfg = config(bits);
        let first = build_round(&specs, None, 0);
        let second = build_round(&specs, Some(&first), 0);
        let mut sequential = Encoder::new(&cfg);
        let mut pipe = EncodePipeline::new(&cfg);
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        for data in [&first, &second] {
            for (n, block) in data.chunks(block_pages * PAGE_SIZE).enumerate() {
                let first_page = (n * block_pages) as u64;
                let mut frame = Vec::new();
                sequential.encode_block(first_page, block, &mut frame).unwrap();
                expected.push(frame);
                if let Some(done) = pipe.submit(first_page, block.to_vec()).unwrap() {
                    frames.push(done.frame);
                }
            }
        }
        while let Some(done) = pipe.next_block().unwrap() {
            frames.push(done.frame);
        }
        for (n, (a, b)) in frames.iter().zip(&expected).enumerate() {
            if a != b {
                let ha = dwcp_hde::frame::Header::parse(a).unwrap();
                let hb = dwcp_hde::frame::Header::parse(b).unwrap();
                prop_assert!(false, "frame {n} differs:\npipe {ha:?}\nseq  {hb:?}");
            }
        }
        prop_assert_eq!(frames.len(), expected.len());
        let mut decode = DecodePipeline::new(&cfg);
        let mut decoded = Vec::new();
        for frame in frames {
            if let Some(block) = decode.submit(frame).unwrap() {
                decoded.extend_from_slice(&block.data);
            }
        }
        while let Some(block) = decode.next_block().unwrap() {
            decoded.extend_from_slice(&block.data);
        }
        let mut all = first.clone();
        all.extend_from_slice(&second);
        prop_assert_eq!(decoded, all);
    }
}

#[test]
fn levels_do_what_they_claim() {
    // Round 1: zeros, a repeated page, text; round 2: one page edited, the rest unchanged.
    let mut first = vec![0u8; 64 * PAGE_SIZE];
    for (i, b) in first[8 * PAGE_SIZE..].iter_mut().enumerate() {
        *b = b"guest memory page "[(i * 7 / PAGE_SIZE + i) % 18];
    }
    first.copy_within(8 * PAGE_SIZE..9 * PAGE_SIZE, 4 * PAGE_SIZE);
    let mut second = first.clone();
    second[20 * PAGE_SIZE + 5] ^= 0x40;
    let cfg = HdeConfig {
        history_slots: 64,
        ..HdeConfig::default()
    };
    let mut encoder = Encoder::new(&cfg);
    let mut frame = Vec::new();
    encoder.encode_block(0, &first, &mut frame).unwrap();
    let s = encoder.stats();
    assert_eq!(s.zero.pages, 8 - 1);
    assert!(s.duplicate.pages >= 1, "{s:?}");
    let before = s;
    encoder.encode_block(0, &second, &mut frame).unwrap();
    let s = encoder.stats();
    assert_eq!(s.delta.pages - before.delta.pages, 1, "{s:?}");
    assert!(s.unchanged.pages - before.unchanged.pages >= 50, "{s:?}");
    assert!(
        frame.len() < 200,
        "round delta frame is {} bytes",
        frame.len()
    );
    let mut decoder = Decoder::new(&cfg);
    let mut out = Vec::new();
    let frame1 = {
        let mut e = Encoder::new(&cfg);
        let mut f = Vec::new();
        e.encode_block(0, &first, &mut f).unwrap();
        e.encode_block(0, &second, &mut frame).unwrap();
        f
    };
    decoder.decode_block(&frame1, &mut out).unwrap();
    assert_eq!(out, first);
    decoder.decode_block(&frame, &mut out).unwrap();
    assert_eq!(out, second);
}

#[test]
fn dictionary_is_shipped_once_and_used_after() {
    let cfg = HdeConfig {
        dict_sample_pages: 32,
        dict_bytes: 8192,
        workers: 1,
        ..HdeConfig::default()
    };
    let mut encoder = Encoder::new(&cfg);
    let mut decoder = Decoder::new(&cfg);
    let (mut frame, mut out) = (Vec::new(), Vec::new());
    let mut inline_frames = 0;
    for block in 0..6u64 {
        let data = words(block, 16 * PAGE_SIZE);
        encoder.encode_block(block * 16, &data, &mut frame).unwrap();
        if frame[5] & 4 != 0 {
            inline_frames += 1;
        }
        decoder.decode_block(&frame, &mut out).unwrap();
        assert_eq!(out, data);
    }
    assert_eq!(inline_frames, 1);
}

/// Text from a small vocabulary, different for every seed: unique but compressible pages.
fn words(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "kernel ",
        "page ",
        "memory ",
        "migrate ",
        "dirty ",
        "round ",
        "guest ",
        "host ",
        "vcpu ",
        "0x7ffd1234 ",
        "struct ",
        "\n",
    ];
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(WORDS[(x >> 59) as usize % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}
