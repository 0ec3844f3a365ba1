//! Seeds of the `hde_decode` fuzz target, written by the real encoder.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{fs, path::Path};

use dwcp_hde::{Decoder, Encoder, Levels, PAGE_SIZE, fuzz_input};

/// Streams worth starting from: `(name, mode, frames)`.
fn seeds() -> Vec<(String, u8, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for (name, levels) in Levels::cumulative()
        .into_iter()
        .chain([("none", Levels::NONE)])
    {
        let mode = fuzz_input::mode_of(levels);
        let config = fuzz_input::config(mode);
        let mut encoder = Encoder::new(&config);
        let mut frames = Vec::new();
        let mut image = vec![0u8; 10 * PAGE_SIZE];
        for round in 0..2u8 {
            for (i, b) in image[4 * PAGE_SIZE..].iter_mut().enumerate() {
                if round == 0 || i % 1999 == 0 {
                    *b = b"kernel page cache "[(i / 5 + i / 4096) % 18] ^ round;
                }
            }
            image.copy_within(6 * PAGE_SIZE..7 * PAGE_SIZE, 8 * PAGE_SIZE);
            for (n, block) in image.chunks(3 * PAGE_SIZE + 100).enumerate() {
                let mut frame = Vec::new();
                let first_page = (n * (3 * PAGE_SIZE + 100) / PAGE_SIZE) as u64;
                encoder.encode_block(first_page, block, &mut frame).unwrap();
                frames.push(frame);
            }
        }
        let name = name.replace('+', "_");
        out.push((name.clone(), mode, frames.clone()));
        out.push((format!("{name}_fixcrc"), mode | 1, frames));
    }
    out
}

#[test]
fn seeds_decode() {
    for (name, mode, frames) in seeds() {
        let input = fuzz_input::join(mode, &frames);
        let (mode, frames) = fuzz_input::split(&input);
        let mut decoder = Decoder::new(&fuzz_input::config(mode));
        let mut out = Vec::new();
        for frame in &frames {
            decoder
                .decode_block(frame, &mut out)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// Writes `fuzz/seeds/hde_decode/`.
#[test]
#[ignore = "writes fuzz/seeds/hde_decode; run by hand after a format change"]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/hde_decode");
    fs::create_dir_all(&dir).unwrap();
    for (name, mode, frames) in seeds() {
        fs::write(dir.join(name), fuzz_input::join(mode, &frames)).unwrap();
    }
}
