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
//! end): each block's CRC32C is checked before delivery, the whole-stream digest only at
//! the end, and a failed stream closes the consumer early so it sees a truncated stream.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use super::{
    codec::{self, BlockDecoder},
    codec_tally::CodecTally,
};
use crate::{
    amst::{AmstError, digest::StreamDigest},
    pba::{Block, BlockPool, PoolConfig},
    protocol::{
        ProtocolError,
        frame::{FrameHeader, FrameReader, FrameType, FrameWriter},
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

/// Where a stream's bytes go, in order.
#[derive(Debug)]
enum Sink {
    /// The partial file, renamed to `target` once verified.
    File(File),
    /// A registered consumer, closed once verified.
    Consumer(Consumer),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::File(file) => file.write_all(bytes),
            Self::Consumer(consumer) => consumer.write_all(bytes),
        }
    }
}

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
    delivered: Condvar,
    /// The control connection, to interrupt its wait for the sender's end message when
    /// the stream fails here (so the sender is told why, not just that streams broke).
    control: Mutex<Option<TcpStream>>,
    /// Where delivered blocks are counted per codec.
    tally: Arc<CodecTally>,
}

#[derive(Debug)]
struct Reorder {
    /// Next block to deliver.
    next: u64,
    /// Byte offset the next block must start at.
    next_offset: u64,
    /// Slot `seq % window` holds block `seq` (and its header) once it arrived early.
    ring: Vec<Option<(FrameHeader, Block)>>,
    decoder: BlockDecoder,
    /// Decoded bytes of the block being delivered (allocated once, reused).
    decoded: Vec<u8>,
    /// `None` once finished or discarded.
    sink: Option<Sink>,
    digest: StreamDigest,
    /// Set when the sink failed: every stream stops with this reason.
    failed: Option<String>,
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
        let decoder = BlockDecoder::new(codec_choice).map_err(AmstError::Invalid)?;
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
                OpenOptions::new()
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
                decoder,
                decoded: Vec::with_capacity(block_size as usize),
                sink: Some(sink),
                digest: StreamDigest::default(),
                failed: None,
            }),
            delivered: Condvar::new(),
            control: Mutex::new(None),
            tally,
        })
    }

    /// Registers the control connection to interrupt on failure.
    pub fn watch_control(&self, control: TcpStream) {
        *self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(control);
    }

    /// Why the stream failed here, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Records a failure and wakes the control connection's reader.
    fn fail(&self, s: &mut Reorder, reason: String) {
        s.failed = Some(reason);
        self.delivered.notify_all();
        if let Some(control) = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            let _ = control.shutdown(std::net::Shutdown::Read);
        }
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
            reader.read_payload(&header, block.as_mut_full())?;
            block.set_len(header.payload_len as usize);
            if header.raw_len > self.block_size {
                return Err(ProtocolError::Malformed(format!(
                    "block {} decodes to {} bytes, more than the {}-byte block size",
                    header.seq, header.raw_len, self.block_size
                ))
                .into());
            }
            bytes += u64::from(header.payload_len);
            let delivered = self.accept(&header, block)?;
            writer.write_frame(FrameType::Ack, header.seq, delivered, &[])?;
        }
        Ok(bytes)
    }

    /// Places a verified block and delivers every block now in order; returns the
    /// count of blocks delivered.
    fn accept(&self, header: &FrameHeader, block: Block) -> Result<u64, AmstError> {
        let mut s = self.lock();
        if let Some(reason) = &s.failed {
            return Err(AmstError::Aborted(reason.clone()));
        }
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
            s.ring[slot] = Some((*header, block));
        }
        while let Some((header, block)) = {
            let next_slot = usize::try_from(s.next % self.window).unwrap_or(0);
            s.ring[next_slot].take()
        } {
            let offset = header.offset;
            if offset != s.next_offset {
                let reason = format!(
                    "block {} starts at offset {offset}, the stream is at {}",
                    s.next, s.next_offset
                );
                self.fail(&mut s, reason.clone());
                return Err(ProtocolError::Malformed(reason).into());
            }
            let Reorder {
                decoder,
                decoded,
                sink,
                ..
            } = &mut *s;
            if let Err(reason) = decoder.decode(header.codec, &block, header.raw_len, decoded) {
                let reason = format!("Block {} of stream {}: {reason}", header.seq, self.name);
                self.fail(&mut s, reason.clone());
                return Err(ProtocolError::Malformed(reason).into());
            }
            let written = match sink.as_mut() {
                Some(sink) => sink.write_all(decoded),
                None => Err(std::io::Error::other("Stream already finished")),
            };
            if let Err(source) = written {
                let reason = format!("Cannot deliver stream {}: {source}", self.name);
                self.fail(&mut s, reason);
                return Err(AmstError::File {
                    what: "Cannot deliver stream",
                    path: self.name.clone(),
                    source,
                });
            }
            let Reorder {
                digest, decoded, ..
            } = &mut *s;
            digest.update(decoded);
            self.tally
                .record_block(header.codec, decoded.len() as u64, block.len() as u64);
            s.next += 1;
            s.next_offset += u64::from(header.raw_len);
            self.delivered.notify_all();
        }
        Ok(s.next)
    }

    /// After the sender's end message: waits until `size` bytes are delivered, checks
    /// the digest, makes the file durable and moves it under its final name. Returns the
    /// digest computed here.
    pub fn finish(&self, size: u64, expected: &str) -> Result<String, String> {
        let s = self.lock();
        let (mut s, _) = self
            .delivered
            .wait_timeout_while(s, Duration::from_secs(30), |s| {
                s.next_offset < size && s.failed.is_none()
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reason) = &s.failed {
            return Err(reason.clone());
        }
        if s.next_offset != size {
            return Err(format!(
                "End announces {size} bytes, {} were delivered",
                s.next_offset
            ));
        }
        let actual = s.digest.hex();
        if actual != expected {
            return Err(format!(
                "Digest mismatch: sender {expected}, received data {actual}"
            ));
        }
        match s.sink.take() {
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
        let mut s = self.lock();
        if s.failed.is_none() {
            s.failed = Some(format!("Stream {} was abandoned", self.name));
        }
        if let Some(Sink::File(_)) = s.sink.take() {
            let _ = std::fs::remove_file(&self.part);
        }
    }

    /// Where the stream went: the final file, or the consumer's stream name.
    pub fn target(&self) -> String {
        match self.lock().sink {
            Some(Sink::Consumer(_)) => format!("consumer of {}", self.name),
            _ => self.target.display().to_string(),
        }
    }
}
