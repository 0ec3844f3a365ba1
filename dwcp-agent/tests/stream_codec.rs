//! Stream codecs on real transfers over loopback: `--codec auto` goes raw on a fast link
//! with incompressible data and HDE on compressible data over a slow link (TCP pacing
//! caps each stream), with the choice and its reason in the summary; HDE on several
//! encoder threads arrives bit-exact. Every transfer is checked byte for byte.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    io::Write as _,
    os::unix::net::UnixStream,
    sync::{Arc, atomic::Ordering},
    thread,
};

use common::receiver::{TestReceiver, psk};
use dwcp_agent::{
    amst::{
        sender::{Hooks, SendOptions, StreamCount},
        socket::SocketTuning,
        stream::{
            codec_tally::{AutoCodec, DecisionReason, TallySnapshot},
            send::send_stream,
        },
        summary::Summary,
    },
    protocol::{frame::Codec, messages::CodecChoice},
};
use rand::{Rng as _, SeedableRng as _};

fn auto_options(streams: usize, pacing: Option<u64>) -> SendOptions {
    SendOptions {
        streams: StreamCount::Fixed(streams),
        block_size: 256 << 10,
        codec: CodecChoice::Hde {
            config: dwcp_hde::HdeConfig {
                workers: 1,
                ..dwcp_hde::HdeConfig::default()
            },
        },
        auto_codec: true,
        codec_tally: Some(Arc::default()),
        tuning: SocketTuning {
            max_pacing_rate: pacing,
            ..SocketTuning::default()
        },
        ..SendOptions::default()
    }
}

/// Streams `bytes` through a socket pair to the receiver; returns the summary and the
/// payload bytes the receiver got on the wire.
fn send(rx: &TestReceiver, name: &str, bytes: &[u8], opts: &SendOptions) -> (Summary, u64) {
    let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
    let data = bytes.to_vec();
    let feeder = thread::spawn(move || {
        let _ = theirs.write_all(&data);
    });
    let before = rx.receiver.stats().payload_bytes.load(Ordering::Relaxed);
    let summary =
        send_stream(ours, name, rx.addr, &psk(), opts, &Hooks::default()).expect("transfer");
    feeder.join().expect("feeder");
    let wire = rx.receiver.stats().payload_bytes.load(Ordering::Relaxed) - before;
    let got = std::fs::read(rx.path(name)).expect("received file");
    assert!(got == bytes, "{name}: received bytes differ");
    (summary, wire)
}

/// The sender's codec tally after a transfer with `opts`, checked against the receiver's:
/// both sides count the same blocks and bytes per codec.
fn tallies_agree(rx: &TestReceiver, opts: &SendOptions, bytes: usize) -> TallySnapshot {
    let sent = opts.codec_tally.as_ref().map(|t| t.snapshot());
    let sent = sent.expect("the options carry a tally");
    assert_eq!(sent.codecs, rx.receiver.stats().codec.snapshot().codecs);
    let raw: u64 = sent.codecs.iter().map(|c| c.raw_bytes).sum();
    assert_eq!(raw, bytes as u64);
    sent
}

#[test]
fn fast_link_with_incompressible_data_goes_raw() {
    let rx = TestReceiver::start();
    let mut bytes = vec![0u8; 96 << 20];
    rand::rngs::StdRng::seed_from_u64(5).fill(&mut bytes[..]);
    let opts = auto_options(4, None);
    let (summary, wire) = send(&rx, "random", &bytes, &opts);
    let tally = tallies_agree(&rx, &opts, bytes.len());
    assert_eq!(tally.current, Some(AutoCodec::None), "{tally:?}");
    assert!(
        tally.decisions(AutoCodec::None, DecisionReason::Incompressible) > 0,
        "{tally:?}"
    );
    assert!(tally.of(Codec::Hde).blocks >= 4, "the sample: {tally:?}");
    assert!(tally.of(Codec::None).blocks > 0, "{tally:?}");
    let codec = summary.codec.expect("codec in the summary");
    let reason = summary.codec_reason.expect("reason in the summary");
    assert_eq!(codec, "auto: none", "{reason}");
    assert!(!reason.is_empty());
    // Nothing was gained, nothing much was lost either (frames cost a little).
    assert!(wire >= bytes.len() as u64, "{wire}");
}

/// Guest-memory-like pages: zero pages, and text pages with a page number in them.
fn compressible(pages: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * 4096);
    for i in 0..pages {
        if i % 3 == 0 {
            out.extend(std::iter::repeat_n(0u8, 4096));
        } else {
            let line = format!("page {i:08} of a guest that keeps a table of records; ");
            out.extend(line.bytes().cycle().take(4096));
        }
    }
    out
}

#[test]
fn slow_link_with_compressible_data_goes_hde() {
    let rx = TestReceiver::start();
    let bytes = compressible(6 * 1024); // 24 MiB
    // Two streams paced at 2 MB/s each: 4 MB/s, far below what HDE encodes.
    let opts = auto_options(2, Some(2_000_000));
    let (summary, wire) = send(&rx, "memory", &bytes, &opts);
    let tally = tallies_agree(&rx, &opts, bytes.len());
    assert_eq!(tally.current, Some(AutoCodec::Hde), "{tally:?}");
    // Link-bound, or bound by the encoder's CPU in an unoptimised build.
    assert!(
        tally.decisions(AutoCodec::Hde, DecisionReason::LinkBound)
            + tally.decisions(AutoCodec::Hde, DecisionReason::CpuBound)
            > 0,
        "{tally:?}"
    );
    let codec = summary.codec.expect("codec in the summary");
    let reason = summary.codec_reason.expect("reason in the summary");
    assert!(codec.starts_with("auto: hde"), "{codec}: {reason}");
    assert!(
        wire * 4 < bytes.len() as u64,
        "{wire} bytes on the wire for {}",
        bytes.len()
    );
}

#[test]
fn hde_encoded_on_worker_threads_arrives_bit_exact_and_smaller() {
    let rx = TestReceiver::start();
    let bytes = compressible(8 * 1024); // 32 MiB
    let opts = SendOptions {
        streams: StreamCount::Fixed(4),
        block_size: 256 << 10,
        codec: CodecChoice::Hde {
            config: dwcp_hde::HdeConfig {
                workers: 3,
                ..dwcp_hde::HdeConfig::default()
            },
        },
        ..SendOptions::default()
    };
    let (summary, wire) = send(&rx, "pipelined", &bytes, &opts);
    assert_eq!(summary.bytes, bytes.len() as u64);
    let reason = summary.codec_reason.expect("reason in the summary");
    assert!(reason.contains("worker threads"), "{reason}");
    assert!(
        wire * 4 < bytes.len() as u64,
        "{wire} bytes on the wire for {}",
        bytes.len()
    );
}
