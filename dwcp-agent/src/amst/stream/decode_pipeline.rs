//! HDE decoding on several cores for a received stream (the receiver's side of
//! [`super::encode_pipeline`]): the reorder ring hands each block, in stream order, to
//! this stage's thread, which feeds HDE frames to [`dwcp_hde::DecodePipeline`] and
//! delivers the decoded blocks, and the raw blocks of an `auto` stream, strictly in
//! stream order to a [`BlockSink`].
//!
//! How the receiver's index and history stay the sender's: the pipeline keeps every
//! stateful step sequential. Its gate (one thread) checks each frame's header, order and
//! geometry in stream order; the workers decompress the payloads (zstd, the expensive,
//! stateless part); the rebuilder (one thread) takes the frames back in order, resolves
//! duplicate and delta pages against the index and history, evolves them exactly as the
//! one-thread [`dwcp_hde::Decoder`] does, and verifies the block's checksum. Raw frames
//! never touch that state (as on the sender).
//!
//! Memory is bounded: at most `in_flight` frames wait in the input channel, as many are
//! inside the pipeline, and as many raw blocks wait behind a frame being decoded. When
//! no block is waiting, the stage drains the pipeline, so a burst's tail is delivered at
//! once (the sender flushes its tail the same way). The first corrupt frame stops the
//! stage: [`BlockSink::fail`] gets the reason, the input is closed, and later blocks are
//! refused.

use std::{collections::VecDeque, thread::JoinHandle};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use dwcp_hde::{DecodePipeline, DecodedBlock, HdeConfig};

use crate::protocol::frame::{Codec, PayloadHash};

/// Where the stage delivers blocks, in stream order.
pub trait BlockSink: Send + 'static {
    /// Takes the decoded bytes of the next block (sent as `codec` in `wire_len` bytes;
    /// `hash`: their XXH3-128 when already known, as for a raw block). An error stops
    /// the stage.
    fn deliver(
        &mut self,
        data: &[u8],
        sent: (Codec, usize),
        hash: Option<&PayloadHash>,
    ) -> Result<(), String>;
    /// The stage stopped at block `seq` for `reason` (nothing after it is delivered).
    fn fail(&mut self, seq: u64, reason: String);
}

/// One block handed to the stage.
#[derive(Debug)]
struct Frame {
    seq: u64,
    codec: Codec,
    raw_len: u32,
    payload: Vec<u8>,
    /// The payload's XXH3-128 as received.
    hash: PayloadHash,
}

/// The stage stopped (a corrupt block, or the sink failed); the reason went to
/// [`BlockSink::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The stream's decoding stage stopped")]
pub struct Stopped;

/// The decoding thread and its input (see the module documentation).
#[derive(Debug)]
pub struct DecodeStage {
    input: Option<Sender<Frame>>,
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl DecodeStage {
    /// Starts the stage for a stream announced with HDE `config`, decoding on
    /// `config.workers` threads, delivering to `sink`.
    pub fn start(config: &HdeConfig, sink: impl BlockSink) -> std::io::Result<Self> {
        let capacity = config.effective_in_flight();
        let (input, frames) = bounded::<Frame>(capacity);
        let (give_back, spare) = bounded::<Vec<u8>>(capacity * 2);
        let pipeline = DecodePipeline::new(config);
        let mut run = Run {
            pipeline,
            order: VecDeque::with_capacity(capacity),
            capacity,
            sink,
            give_back,
        };
        let thread = std::thread::Builder::new()
            .name("dwcp-stream-decode".into())
            .spawn(move || run.serve(&frames))?;
        Ok(Self {
            input: Some(input),
            spare,
            thread: Some(thread),
        })
    }

    /// Hands in block `seq` (encoded with `codec`, `raw_len` bytes once decoded, `hash`
    /// the XXH3-128 of `payload`); its payload is copied, so the caller's buffer is free
    /// at once. Waits while the stage is full (back-pressure on the reorder ring).
    pub fn submit(
        &self,
        (seq, codec, raw_len): (u64, Codec, u32),
        payload: &[u8],
        hash: &PayloadHash,
    ) -> Result<(), Stopped> {
        let input = self.input.as_ref().ok_or(Stopped)?;
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        input
            .send(Frame {
                seq,
                codec,
                raw_len,
                payload: buf,
                hash: *hash,
            })
            .map_err(|_| Stopped)
    }

    /// Closes the input and waits until every block handed in is delivered (or the
    /// stage stopped).
    pub fn finish(&mut self) {
        self.input = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DecodeStage {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A block waiting for its turn behind the frames inside the pipeline.
enum Queued {
    /// An HDE frame inside the pipeline.
    Hde { seq: u64, raw_len: u32, wire: usize },
    /// A raw block, and its hash.
    Raw {
        seq: u64,
        data: Vec<u8>,
        hash: PayloadHash,
    },
}

/// The stage thread's state.
struct Run<S> {
    pipeline: DecodePipeline,
    /// Blocks handed in and not yet delivered, in stream order.
    order: VecDeque<Queued>,
    capacity: usize,
    sink: S,
    give_back: Sender<Vec<u8>>,
}

/// Why the stage stops: the block and the reason.
type Failure = (u64, String);

impl<S: BlockSink> Run<S> {
    fn serve(&mut self, frames: &Receiver<Frame>) {
        if let Err((seq, reason)) = self.pump(frames) {
            self.sink.fail(seq, reason);
        }
    }

    fn pump(&mut self, frames: &Receiver<Frame>) -> Result<(), Failure> {
        loop {
            let frame = match frames.try_recv() {
                Ok(frame) => frame,
                Err(TryRecvError::Empty) => {
                    // Nothing waiting: deliver everything inside before sleeping.
                    self.drain()?;
                    match frames.recv() {
                        Ok(frame) => frame,
                        Err(_) => return Ok(()),
                    }
                }
                Err(TryRecvError::Disconnected) => return self.drain(),
            };
            self.take(frame)?;
        }
    }

    fn take(&mut self, frame: Frame) -> Result<(), Failure> {
        let Frame {
            seq,
            codec,
            raw_len,
            payload,
            hash,
        } = frame;
        match codec {
            Codec::Hde => {
                self.order.push_back(Queued::Hde {
                    seq,
                    raw_len,
                    wire: payload.len(),
                });
                // An error here is the oldest frame's (the one the pipeline returns).
                let ready = self
                    .pipeline
                    .submit(payload)
                    .map_err(|e| (self.front_seq(seq), format!("Corrupt HDE block: {e}")))?;
                if let Some(block) = ready {
                    self.deliver_decoded(block)?;
                }
            }
            Codec::None => {
                if payload.len() != raw_len as usize {
                    return Err((seq, length_mismatch(payload.len(), raw_len)));
                }
                if self.order.is_empty() {
                    self.deliver(seq, &payload, (Codec::None, payload.len()), Some(&hash))?;
                    let _ = self.give_back.try_send(payload);
                } else {
                    self.order.push_back(Queued::Raw {
                        seq,
                        data: payload,
                        hash,
                    });
                    // Bounded: wait for the frames ahead once too many raw blocks wait.
                    while self.order.len() > self.capacity {
                        self.next_decoded(seq)?;
                    }
                }
            }
            Codec::Zstd => {
                return Err((
                    seq,
                    "Block encoded with Zstd in a stream announced as Hde".into(),
                ));
            }
        }
        Ok(())
    }

    /// Delivers every block inside the pipeline and every raw block behind them.
    fn drain(&mut self) -> Result<(), Failure> {
        while let Some(Queued::Hde { seq, .. }) = self.order.front() {
            let seq = *seq;
            self.next_decoded(seq)?;
        }
        Ok(())
    }

    /// Waits for the oldest frame inside the pipeline (block `seq` or earlier) and
    /// delivers it with the raw blocks behind it.
    fn next_decoded(&mut self, seq: u64) -> Result<(), Failure> {
        let front = self.front_seq(seq);
        match self.pipeline.next_block() {
            Ok(Some(block)) => self.deliver_decoded(block),
            Ok(None) => Err((
                front,
                "The HDE pipeline returned fewer blocks than it was given".into(),
            )),
            Err(e) => Err((front, format!("Corrupt HDE block: {e}"))),
        }
    }

    /// Delivers a block the pipeline returned (the oldest frame), then the raw blocks
    /// that waited behind it.
    fn deliver_decoded(&mut self, block: DecodedBlock) -> Result<(), Failure> {
        let Some(Queued::Hde { seq, raw_len, wire }) = self.order.pop_front() else {
            return Err((
                0,
                "The HDE pipeline returned a block it was not given".into(),
            ));
        };
        if block.data.len() != raw_len as usize {
            return Err((seq, length_mismatch(block.data.len(), raw_len)));
        }
        self.deliver(seq, &block.data, (Codec::Hde, wire), None)?;
        self.pipeline.recycle(block.data);
        let _ = self.give_back.try_send(block.frame);
        while let Some(Queued::Raw { .. }) = self.order.front() {
            if let Some(Queued::Raw { seq, data, hash }) = self.order.pop_front() {
                self.deliver(seq, &data, (Codec::None, data.len()), Some(&hash))?;
                let _ = self.give_back.try_send(data);
            }
        }
        Ok(())
    }

    /// The oldest block not yet delivered (`or` when there is none).
    fn front_seq(&self, or: u64) -> u64 {
        match self.order.front() {
            Some(Queued::Hde { seq, .. } | Queued::Raw { seq, .. }) => *seq,
            None => or,
        }
    }

    /// Delivers block `seq` (sent as `sent.0` in `sent.1` bytes; `hash` when known).
    fn deliver(
        &mut self,
        seq: u64,
        data: &[u8],
        sent: (Codec, usize),
        hash: Option<&PayloadHash>,
    ) -> Result<(), Failure> {
        self.sink
            .deliver(data, sent, hash)
            .map_err(|reason| (seq, reason))
    }
}

fn length_mismatch(got: usize, raw_len: u32) -> String {
    format!("Block decoded to {got} bytes, its header says {raw_len}")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::protocol::frame::payload_hash;

    /// What a [`Collect`] got: the blocks, and the failure.
    type Got = (Vec<(Codec, Vec<u8>)>, Option<(u64, String)>);

    /// Collects what the stage delivers.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Got>>);

    impl BlockSink for Collect {
        fn deliver(
            &mut self,
            data: &[u8],
            (codec, _): (Codec, usize),
            hash: Option<&PayloadHash>,
        ) -> Result<(), String> {
            if let Some(hash) = hash {
                assert_eq!(
                    *hash,
                    payload_hash(data),
                    "a passed-through hash must be the data's"
                );
            }
            self.0.lock().unwrap().0.push((codec, data.to_vec()));
            Ok(())
        }
        fn fail(&mut self, seq: u64, reason: String) {
            self.0.lock().unwrap().1 = Some((seq, reason));
        }
    }

    fn config(workers: usize) -> HdeConfig {
        HdeConfig {
            workers,
            ..HdeConfig::default()
        }
    }

    /// Blocks that repeat and change a little (L1 and L2 state matters), some raw
    /// (as `auto` sends them), with a partial last page here and there.
    fn blocks() -> Vec<(bool, Vec<u8>)> {
        (0..48u32)
            .map(|i| {
                let mut b: Vec<u8> = format!("block {} ", i % 5)
                    .bytes()
                    .cycle()
                    .take((64 << 10) - (i as usize % 3) * 4000)
                    .collect();
                b[100] = i as u8;
                (i % 7 == 3, b)
            })
            .collect()
    }

    /// Frames of the one-thread encoder: (seq, codec, raw_len, payload).
    fn frames(blocks: &[(bool, Vec<u8>)]) -> Vec<(u64, Codec, u32, Vec<u8>)> {
        let mut encoder = dwcp_hde::Encoder::new(&config(1));
        let mut offset = 0u64;
        let mut out = Vec::new();
        for (seq, (raw, data)) in (0u64..).zip(blocks) {
            let frame = if *raw {
                (seq, Codec::None, data.len() as u32, data.clone())
            } else {
                let mut wire = Vec::new();
                encoder
                    .encode_block(offset / dwcp_hde::PAGE_SIZE as u64, data, &mut wire)
                    .unwrap();
                (seq, Codec::Hde, data.len() as u32, wire)
            };
            out.push(frame);
            offset += data.len() as u64;
        }
        out
    }

    #[test]
    fn one_thread_encoder_frames_decode_identically_and_in_order() {
        let blocks = blocks();
        let frames = frames(&blocks);
        // The one-thread decoder's view, for comparison.
        let mut decoder = dwcp_hde::Decoder::new(&config(1));
        let mut expected = Vec::new();
        for (_, codec, _, payload) in &frames {
            let mut out = Vec::new();
            if *codec == Codec::Hde {
                decoder.decode_block(payload, &mut out).unwrap();
            } else {
                out.clone_from(payload);
            }
            expected.push((*codec, out));
        }
        for workers in [1, 3] {
            let sink = Collect::default();
            let mut stage = DecodeStage::start(&config(workers), sink.clone()).unwrap();
            for (seq, codec, raw_len, payload) in &frames {
                stage
                    .submit((*seq, *codec, *raw_len), payload, &payload_hash(payload))
                    .unwrap();
            }
            stage.finish();
            let got = sink.0.lock().unwrap();
            assert!(got.1.is_none(), "{:?}", got.1);
            assert_eq!(got.0.len(), blocks.len());
            assert!(got.0 == expected, "{workers} workers: blocks differ");
            for ((_, data), (_, want)) in got.0.iter().zip(&blocks) {
                assert!(data == want);
            }
        }
    }

    #[test]
    fn a_corrupt_frame_in_the_middle_fails_cleanly_without_hanging() {
        let blocks = blocks();
        let mut frames = frames(&blocks);
        let bad = frames
            .iter()
            .position(|f| f.0 >= 20 && f.1 == Codec::Hde)
            .unwrap();
        // Flip a byte of the payload (past the header): its checksum or zstd refuses it.
        let last = frames[bad].3.len() - 1;
        frames[bad].3[last] ^= 0x5a;
        let sink = Collect::default();
        let mut stage = DecodeStage::start(&config(3), sink.clone()).unwrap();
        for (seq, codec, raw_len, payload) in &frames {
            // Later blocks are refused once the stage stopped (or wait unread).
            let _ = stage.submit((*seq, *codec, *raw_len), payload, &payload_hash(payload));
        }
        stage.finish();
        let got = sink.0.lock().unwrap();
        let (seq, reason) = got.1.clone().expect("the stage reports the corrupt block");
        assert_eq!(seq, frames[bad].0, "{reason}");
        assert!(reason.starts_with("Corrupt HDE block: "), "{reason}");
        // Everything before it was delivered, in order and intact; nothing after it.
        assert_eq!(got.0.len(), bad);
        for ((_, data), (_, want)) in got.0.iter().zip(&blocks) {
            assert!(data == want);
        }
        assert!(
            stage
                .submit((99, Codec::None, 1), b"x", &payload_hash(b"x"))
                .is_err()
        );
    }

    #[test]
    fn a_raw_block_of_the_wrong_length_or_a_zstd_block_is_refused() {
        let sink = Collect::default();
        let mut stage = DecodeStage::start(&config(2), sink.clone()).unwrap();
        stage
            .submit((0, Codec::None, 3), b"abc", &payload_hash(b"abc"))
            .unwrap();
        stage
            .submit((1, Codec::None, 5), b"abc", &payload_hash(b"abc"))
            .unwrap();
        stage.finish();
        let got = sink.0.lock().unwrap();
        assert_eq!(got.0.len(), 1);
        let (seq, reason) = got.1.clone().unwrap();
        assert_eq!(seq, 1);
        assert!(reason.contains("header says 5"), "{reason}");

        let sink = Collect::default();
        let mut stage = DecodeStage::start(&config(2), sink.clone()).unwrap();
        stage
            .submit((0, Codec::Zstd, 3), b"abc", &payload_hash(b"abc"))
            .unwrap();
        stage.finish();
        let reason = sink.0.lock().unwrap().1.clone().unwrap().1;
        assert!(reason.contains("announced as Hde"), "{reason}");
    }
}
