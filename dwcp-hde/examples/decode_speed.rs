//! `cargo run --release -p dwcp-hde --example decode_speed -- [IMAGE] [WORKERS]`:
//! wall-clock decode speed of one stream, the one-thread [`dwcp_hde::Decoder`] against
//! [`dwcp_hde::DecodePipeline`] with WORKERS decompressing threads (default: the cores),
//! on the frames of IMAGE (default: 256 MiB of generated guest-memory-like pages: a
//! third zero, the rest distinct text records, so that zstd does most of the work) cut
//! in 1 MiB blocks.
//! Every decoded block is checked against the input. Speeds are data bytes per second
//! of wall-clock time, the best of three runs (a shared machine is noisy).

use std::time::Instant;

use dwcp_hde::{DecodePipeline, Decoder, Encoder, HdeConfig, PAGE_SIZE};

const BLOCK: usize = 1 << 20;

/// Guest-memory-like pages: zero pages, and pages of distinct text records (no page
/// repeats another, so L1 and L2 find little and zstd does the work).
fn generated(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes);
    let mut record = 0u64;
    for i in 0..bytes / PAGE_SIZE {
        if i % 3 == 0 {
            out.extend(std::iter::repeat_n(0u8, PAGE_SIZE));
            continue;
        }
        let mut page = String::with_capacity(PAGE_SIZE + 64);
        while page.len() < PAGE_SIZE {
            record += 1;
            let value = record.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            page.push_str(&format!("record {record:010} value {value:06x}; "));
        }
        out.extend_from_slice(&page.as_bytes()[..PAGE_SIZE]);
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = match args.next().filter(|a| a != "-") {
        Some(path) => std::fs::read(path)?,
        None => generated(256 << 20),
    };
    let workers = match args.next() {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let config = HdeConfig {
        workers: 1,
        ..HdeConfig::default()
    };
    let mut encoder = Encoder::new(&config);
    let frames: Vec<Vec<u8>> = image
        .chunks(BLOCK)
        .enumerate()
        .map(|(i, block)| {
            let mut frame = Vec::new();
            encoder
                .encode_block((i * BLOCK / PAGE_SIZE) as u64, block, &mut frame)
                .map(|_| frame)
        })
        .collect::<Result<_, _>>()?;
    let wire: usize = frames.iter().map(Vec::len).sum();
    println!(
        "input {} MiB, {} frames, ratio {:.2}x, {workers} pipeline workers",
        image.len() >> 20,
        frames.len(),
        image.len() as f64 / wire as f64
    );
    let mb_s = |seconds: f64| image.len() as f64 / seconds / 1e6;
    let mut single = f64::INFINITY;
    let mut pipelined = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let mut decoder = Decoder::new(&config);
        let mut out = Vec::new();
        for (frame, want) in frames.iter().zip(image.chunks(BLOCK)) {
            decoder.decode_block(frame, &mut out)?;
            if out != want {
                return Err("one-thread decoder: a block differs".into());
            }
        }
        single = single.min(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut pipeline = DecodePipeline::new(&HdeConfig {
            workers,
            ..config.clone()
        });
        let mut want = image.chunks(BLOCK);
        let mut check = |data: &[u8]| {
            if want.next() == Some(data) {
                Ok(())
            } else {
                Err("pipeline: a block differs")
            }
        };
        for frame in &frames {
            if let Some(block) = pipeline.submit(frame.clone())? {
                check(&block.data)?;
                pipeline.recycle(block.data);
            }
        }
        while let Some(block) = pipeline.next_block()? {
            check(&block.data)?;
            pipeline.recycle(block.data);
        }
        pipelined = pipelined.min(started.elapsed().as_secs_f64());
    }
    println!(
        "decode one thread: {:.0} MB/s; pipeline ({workers} workers): {:.0} MB/s ({:.2}x)",
        mb_s(single),
        mb_s(pipelined),
        single / pipelined
    );
    Ok(())
}
