//! Receiving a stream: blocks arrive on any data stream in any order, wait in a
//! fixed reorder ring (one slot per block of the sender's window, no allocation per
//! block), and are written to the sink strictly in order.
//!
//! Each acknowledgement's offset field carries how many blocks have been delivered, so
//! the sender never runs more than the window ahead of delivery: memory stays bounded
//! whichever stream is slow. The sink is either a consumer registered for the stream's
//! name (QEMU's incoming migration socket: see [`crate::amst::receiver::Receiver::expect_stream`]),
//! closed once the stream is verified, or else `.<name>.dwcp-part` in the receive
//! directory, written sequentially, fsynced and renamed to `<name>` once the digest
//! matches. A consumer sees the bytes as they arrive in order (it cannot wait for the
//! end): each block's payload check is verified before delivery, the whole-stream digest
//! only at the end, and a failed stream closes the consumer early so it sees a truncated
//! stream.
//!
//! Blocks in order are decoded inline, except HDE streams on a machine with at least
//! [`MIN_DECODE_STAGE_CORES`] cores: those go to a decode stage ([`super::decode_pipeline`]) that decompresses on
//! worker threads and delivers in order on its own ([`super::delivery`]).

use std::{
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use super::{
    codec::{self, BlockDecoder},
    codec_tally::CodecTally,
    decode_pipeline::DecodeStage,
    delivery::{Delivery, Sink, StageSink},
};
use crate::{
    amst::AmstError,
    pba::{Block, BlockPool, PoolConfig},
    protocol::{
        ProtocolError,
        frame::{Codec, FrameHeader, FrameReader, FrameType, FrameWriter, PayloadHash},
        messages::CodecChoice,
    },
};

/// Largest reorder window a sender may ask for, in blocks.
pub const MAX_WINDOW: u64 = 1024;
/// Largest reorder memory a sender may ask for (window × block size).
pub const MAX_REORDER_BYTES: u64 = 1 << 30;

/// Something that takes a stream's bytes in order (a socket, a pipe).
pub trait StreamConsumer: std::io::Write + Send + std::fmt::Debug {}

impl<T: std::io::Write + Send + std::fmt::Debug> StreamConsumer for T {}

/// A registered reader of a named stream (e.g. the socket of QEMU's `-incoming`).
pub type Consumer = Box<dyn StreamConsumer>;

/// One stream being received.
#[derive(Debug)]
pub struct StreamSession {
    name: String,
    part: PathBuf,
    target: PathBuf,
    block_size: u32,
    /// Largest frame payload accepted (coded blocks may exceed the block size a little).
    max_payload: u32,
    window: u64,
    pool: BlockPool,
    state: Mutex<Reorder>,
    /// The sink, the digest, and the stream's failure.
    delivery: Arc<Delivery>,
}

#[derive(Debug)]
struct Reorder {
    /// Next block to deliver.
    next: u64,
    /// Byte offset the next block must start at.
    next_offset: u64,
    /// Slot `seq % window` holds block `seq` (and its header) once it arrived early.
    ring: Vec<Option<(FrameHeader, Block, PayloadHash)>>,
    decoding: Decoding,
}

/// How blocks in order become the stream's bytes.
#[derive(Debug)]
enum Decoding {
    /// On the thread that completed the order, under the ring's lock.
    Inline {
        decoder: BlockDecoder,
        /// Decoded bytes of the block being delivered (allocated once, reused).
        decoded: Vec<u8>,
    },
    /// HDE on the decode stage's threads, which deliver on their own.
    Staged(DecodeStage),
}

/// Fewest cores on which an HDE stream is decoded by the decode stage. On 2 cores the
/// stage measured no faster than inline decoding on zstd-heavy data and 0.6x on
/// duplicate-heavy data (`cargo run --release -p dwcp-hde --example decode_speed`): the
/// rebuild stage, sequential by design, dominates, and the hand-offs cost the rest.
pub const MIN_DECODE_STAGE_CORES: usize = 4;

/// Threads that decode an HDE stream with `cores` cores here: at most what the sender
/// encoded with. With one, blocks are decoded inline.
#[must_use]
pub fn decode_workers(config: &dwcp_hde::HdeConfig, cores: usize) -> usize {
    if cores < MIN_DECODE_STAGE_CORES {
        return 1;
    }
    config.workers.min(cores).max(1)
}

/// The cores of this machine.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl StreamSession {
    /// Opens the sink for stream `name` (the registered `consumer`, or a file in `dir`)
    /// with a reorder `window` of blocks of at most `block_size` bytes; delivered blocks
    /// are counted in `tally`.
    pub fn open(
        dir: &Path,
        name: &str,
        (block_size, window): (u32, u64),
        codec_choice: &CodecChoice,
        consumer: Option<Consumer>,
        tally: Arc<CodecTally>,
    ) -> Result<Self, AmstError> {
        codec::validate(codec_choice).map_err(AmstError::Invalid)?;
        let max_payload = codec::max_payload(codec_choice, block_size as usize);
        if !(1..=MAX_WINDOW).contains(&window)
            || window.saturating_mul(u64::from(block_size)) > MAX_REORDER_BYTES
        {
            return Err(AmstError::Invalid(format!(
                "reorder window of {window} blocks of {block_size} bytes (at most \
                 {MAX_WINDOW} blocks and {MAX_REORDER_BYTES} bytes)"
            )));
        }
        let part = dir.join(format!(".{name}.dwcp-part"));
        let sink = match consumer {
            Some(consumer) => Sink::Consumer(consumer),
            None => Sink::File(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&part)
                    .map_err(|source| AmstError::File {
                        what: "Cannot create",
                        path: part.display().to_string(),
                        source,
                    })?,
            ),
        };
        let slots = usize::try_from(window).unwrap_or(1);
        let pool = BlockPool::new(PoolConfig {
            block_size: max_payload
                .next_power_of_two()
                .max(crate::pba::MIN_BLOCK_SIZE),
            min_blocks: 1,
            // The ring, plus one block being read on each possible stream.
            max_blocks: (slots + *crate::amst::STREAM_RANGE.end()).min(crate::pba::MAX_BLOCKS),
            prefault: false,
            ..PoolConfig::default()
        })?;
        let delivery = Arc::new(Delivery::new(name, sink, tally));
        let decoding = match codec_choice {
            CodecChoice::Hde { config } if decode_workers(config, cores()) > 1 => {
                // The receiver's own threads and queue depth, never the sender's.
                let local = dwcp_hde::HdeConfig {
                    workers: decode_workers(config, cores()),
                    in_flight: 0,
                    ..config.clone()
                };
                let stage = DecodeStage::start(&local, StageSink(Arc::clone(&delivery))).map_err(
                    |source| AmstError::File {
                        what: "Cannot start the decoding thread of stream",
                        path: name.to_owned(),
                        source,
                    },
                )?;
                Decoding::Staged(stage)
            }
            _ => Decoding::Inline {
                decoder: BlockDecoder::new(codec_choice).map_err(AmstError::Invalid)?,
                decoded: Vec::with_capacity(block_size as usize),
            },
        };
        Ok(Self {
            name: name.to_owned(),
            part,
            target: dir.join(name),
            block_size,
            max_payload: u32::try_from(max_payload).unwrap_or(u32::MAX),
            window,
            pool,
            state: Mutex::new(Reorder {
                next: 0,
                next_offset: 0,
                ring: (0..slots).map(|_| None).collect(),
                decoding,
            }),
            delivery,
        })
    }

    /// Registers the control connection to interrupt on failure.
    pub fn watch_control(&self, control: TcpStream) {
        self.delivery.watch_control(control);
    }

    /// Why the stream failed here, if it did.
    pub fn failure(&self) -> Option<String> {
        self.delivery.failure()
    }

    /// Records a failure and wakes the control connection's reader.
    fn fail(&self, reason: String) {
        self.delivery.fail(reason);
    }

    fn lock(&self) -> MutexGuard<'_, Reorder> {
        // The ring and counters stay consistent at every await point of the holder.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves one data stream of this session until the sender closes it.
    pub fn serve(&self, stream: TcpStream) -> Result<u64, AmstError> {
        let mut reader = FrameReader::new(
            stream.try_clone().map_err(ProtocolError::Io)?,
            self.max_payload,
        );
        let mut writer = FrameWriter::new(stream);
        let mut bytes = 0u64;
        while let Some(header) = reader.read_header()? {
            if header.kind != FrameType::Data {
                return Err(ProtocolError::Unexpected {
                    expected: "data",
                    got: format!("{:?}", header.kind),
                }
                .into());
            }
            let mut block = self.pool.acquire(Duration::from_secs(30))?;
            let hash = reader.read_payload(&header, block.as_mut_full())?;
            block.set_len(header.payload_len as usize);
            if header.raw_len > self.block_size {
                return Err(ProtocolError::Malformed(format!(
                    "block {} decodes to {} bytes, more than the {}-byte block size",
                    header.seq, header.raw_len, self.block_size
                ))
                .into());
            }
            bytes += u64::from(header.payload_len);
            let delivered = self.accept(&header, block, hash)?;
            writer.write_frame(FrameType::Ack, header.seq, delivered, &[])?;
        }
        Ok(bytes)
    }

    /// Places a verified block and delivers every block now in order (or hands it to
    /// the decode stage, whose memory is bounded on its own); returns that count.
    fn accept(
        &self,
        header: &FrameHeader,
        block: Block,
        hash: PayloadHash,
    ) -> Result<u64, AmstError> {
        if let Some(reason) = self.failure() {
            return Err(AmstError::Aborted(reason));
        }
        let mut s = self.lock();
        let seq = header.seq;
        if seq < s.next {
            // A resend of a block that had arrived before its stream died.
            return Ok(s.next);
        }
        if seq >= s.next + self.window {
            return Err(ProtocolError::Malformed(format!(
                "block {seq} beyond the reorder window ({} blocks from {})",
                self.window, s.next
            ))
            .into());
        }
        let slot = usize::try_from(seq % self.window).unwrap_or(0);
        if s.ring[slot].is_none() {
            s.ring[slot] = Some((*header, block, hash));
        }
        while let Some((header, block, hash)) = {
            let next_slot = usize::try_from(s.next % self.window).unwrap_or(0);
            s.ring[next_slot].take()
        } {
            let offset = header.offset;
            if offset != s.next_offset {
                let reason = format!(
                    "block {} starts at offset {offset}, the stream is at {}",
                    s.next, s.next_offset
                );
                self.fail(reason.clone());
                return Err(ProtocolError::Malformed(reason).into());
            }
            self.hand_over(&mut s.decoding, &header, &block, &hash)?;
            s.next += 1;
            s.next_offset += u64::from(header.raw_len);
        }
        Ok(s.next)
    }

    /// Decodes and delivers the next block in order, or hands it to the decode stage.
    /// `hash` is the XXH3-128 of the payload as received: for a raw block it is also the
    /// block's entry in the stream digest, which is then not hashed again.
    fn hand_over(
        &self,
        decoding: &mut Decoding,
        header: &FrameHeader,
        block: &[u8],
        hash: &PayloadHash,
    ) -> Result<(), AmstError> {
        let (decoder, decoded) = match decoding {
            Decoding::Staged(stage) => {
                return stage
                    .submit((header.seq, header.codec, header.raw_len), block, hash)
                    .map_err(|stopped| {
                        AmstError::Aborted(self.failure().unwrap_or_else(|| stopped.to_string()))
                    });
            }
            Decoding::Inline { decoder, decoded } => (decoder, decoded),
        };
        let data = match decoder.decode(header.codec, block, header.raw_len, decoded) {
            Ok(data) => data,
            Err(reason) => {
                let reason = format!("Block {} of stream {}: {reason}", header.seq, self.name);
                self.fail(reason.clone());
                return Err(ProtocolError::Malformed(reason).into());
            }
        };
        // A raw block is delivered as received, with the hash its frame check took.
        let known = (header.codec == Codec::None).then_some(hash);
        if let Err(source) = self
            .delivery
            .deliver(data, header.codec, block.len(), known)
        {
            self.fail(format!("Cannot deliver stream {}: {source}", self.name));
            return Err(AmstError::File {
                what: "Cannot deliver stream",
                path: self.name.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Stops the decode stage, if any, once every block handed to it is delivered.
    fn stop_stage(&self) {
        if let Decoding::Staged(stage) = &mut self.lock().decoding {
            stage.finish();
        }
    }

    /// After the sender's end message: waits until `size` bytes are delivered, checks
    /// the digest, makes the file durable and moves it under its final name. Returns the
    /// digest computed here.
    pub fn finish(&self, size: u64, expected: &str) -> Result<String, String> {
        drop(self.delivery.wait_for(size, Duration::from_secs(30)));
        self.stop_stage();
        let mut out = self.delivery.lock();
        if let Some(reason) = &out.failed {
            return Err(reason.clone());
        }
        if out.bytes != size {
            return Err(format!(
                "End announces {size} bytes, {} were delivered",
                out.bytes
            ));
        }
        let actual = out.digest.hex();
        if actual != expected {
            return Err(format!(
                "Digest mismatch: sender {expected}, received data {actual}"
            ));
        }
        match out.sink.take() {
            Some(Sink::File(file)) => file
                .sync_all()
                .and_then(|()| std::fs::rename(&self.part, &self.target))
                .map_err(|e| format!("Cannot finalize {}: {e}", self.target.display()))?,
            Some(Sink::Consumer(mut consumer)) => consumer
                .flush()
                .map_err(|e| format!("Cannot finish stream {}: {e}", self.name))?,
            None => return Err(format!("Stream {} already finished", self.name)),
        }
        Ok(actual)
    }

    /// Closes the sink early: a consumer sees a truncated stream, a partial file is
    /// removed (failed or refused stream: nothing to resume from).
    pub fn discard(&self) {
        let sink = {
            let mut out = self.delivery.lock();
            if out.failed.is_none() {
                out.failed = Some(format!("Stream {} was abandoned", self.name));
            }
            out.sink.take()
        };
        // The stage finds no sink and stops.
        self.stop_stage();
        if let Some(Sink::File(_)) = sink {
            let _ = std::fs::remove_file(&self.part);
        }
    }

    /// Where the stream went: the final file, or the consumer's stream name.
    pub fn target(&self) -> String {
        match self.delivery.lock().sink {
            Some(Sink::Consumer(_)) => format!("consumer of {}", self.name),
            _ => self.target.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_stage_needs_enough_cores_and_never_exceeds_the_sender() {
        let sender = |workers| dwcp_hde::HdeConfig {
            workers,
            ..dwcp_hde::HdeConfig::default()
        };
        assert_eq!(decode_workers(&sender(8), 2), 1);
        assert_eq!(decode_workers(&sender(8), MIN_DECODE_STAGE_CORES), 4);
        assert_eq!(decode_workers(&sender(3), 16), 3);
        assert_eq!(decode_workers(&sender(1), 16), 1);
        assert_eq!(decode_workers(&sender(0), 16), 1);
    }
}
