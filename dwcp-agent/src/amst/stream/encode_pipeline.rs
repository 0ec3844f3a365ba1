//! HDE on several cores for a stream (`send --codec hde` with `workers > 1`): blocks go
//! through [`dwcp_hde::EncodePipeline`] and come out in stream order, at most
//! `in_flight` blocks at a time (bounded memory).
//!
//! How sender and receiver indexes stay identical: the pipeline keeps every stateful
//! step sequential. Its classifier (one thread) decides for each page, in stream order,
//! whether it is zero, a duplicate of an indexed page, or a delta against the page's
//! previous version, and updates the index and history exactly as the one-thread
//! [`dwcp_hde::Encoder`] does; only the stateless work (packing, zstd, checksums) runs
//! on the worker threads. The frames are therefore the ones the one-thread encoder
//! would write, and the receiver's decoder, which sees them in the same order, evolves
//! the same index and history.
//!
//! A short block (the source went silent, see the stream reader) is not left waiting
//! in the pipeline for later input: the pipeline is drained first, so a burst's tail
//! goes out at once.

use std::collections::VecDeque;

use dwcp_hde::{EncodePipeline, EncodedBlock, HdeConfig, PAGE_SIZE};

use crate::amst::AmstError;

/// One encoded block, in stream order.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Stream byte offset of its first byte.
    pub offset: u64,
    /// Its length before encoding.
    pub raw_len: u32,
    /// The HDE frame.
    pub frame: &'a [u8],
}

/// The pipeline plus what it needs to put blocks back in the stream.
pub struct PipelinedHde {
    pipeline: EncodePipeline,
    /// (offset, length) of the blocks inside the pipeline, oldest first.
    pending: VecDeque<(u64, u32)>,
    /// Input buffers handed back by the pipeline.
    spare: Vec<Vec<u8>>,
    block_size: usize,
}

impl std::fmt::Debug for PipelinedHde {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedHde")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl PipelinedHde {
    /// Starts the pipeline's threads for blocks of at most `block_size` bytes.
    pub fn new(config: &HdeConfig, block_size: usize) -> Self {
        Self {
            pipeline: EncodePipeline::new(config),
            pending: VecDeque::new(),
            spare: Vec::new(),
            block_size,
        }
    }

    /// A buffer of `block_size` bytes to read the next block into.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(self.block_size, 0);
        buf
    }

    /// Hands in `data` (its length is the block's) at stream `offset`; calls `emit` for
    /// every block that came out, in order. With `flush`, waits for everything inside.
    pub fn submit(
        &mut self,
        offset: u64,
        data: Vec<u8>,
        flush: bool,
        emit: &mut impl FnMut(Encoded<'_>) -> Result<(), AmstError>,
    ) -> Result<(), AmstError> {
        let len = u32::try_from(data.len())
            .map_err(|_| AmstError::Invalid(format!("block of {} bytes", data.len())))?;
        self.pending.push_back((offset, len));
        let ready = self
            .pipeline
            .submit(offset / PAGE_SIZE as u64, data)
            .map_err(encode_error)?;
        if let Some(block) = ready {
            self.emit(block, emit)?;
        }
        if flush {
            self.drain(emit)?;
        }
        Ok(())
    }

    /// Waits for every block inside and calls `emit` for each, in order.
    pub fn drain(
        &mut self,
        emit: &mut impl FnMut(Encoded<'_>) -> Result<(), AmstError>,
    ) -> Result<(), AmstError> {
        while let Some(block) = self.pipeline.next_block().map_err(encode_error)? {
            self.emit(block, emit)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        block: EncodedBlock,
        emit: &mut impl FnMut(Encoded<'_>) -> Result<(), AmstError>,
    ) -> Result<(), AmstError> {
        let (offset, raw_len) = self.pending.pop_front().ok_or_else(|| {
            AmstError::Invalid("the HDE pipeline returned more blocks than it was given".into())
        })?;
        let result = emit(Encoded {
            offset,
            raw_len,
            frame: &block.frame,
        });
        self.pipeline.recycle(block.frame);
        self.spare.push(block.data);
        result
    }

    /// Encoder counters of the blocks returned so far.
    pub fn stats(&self) -> dwcp_hde::Stats {
        self.pipeline.stats()
    }
}

fn encode_error(err: dwcp_hde::EncodeError) -> AmstError {
    AmstError::Invalid(format!("HDE encoding failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline's frames decode with the one-thread decoder, in order, to the input
    /// (the receiver's state follows the sender's).
    #[test]
    fn frames_decode_in_order_with_the_one_thread_decoder() {
        let config = HdeConfig {
            workers: 3,
            ..HdeConfig::default()
        };
        let block = 64 << 10;
        let mut hde = PipelinedHde::new(&config, block);
        let mut decoder = dwcp_hde::Decoder::new(&HdeConfig {
            workers: 1,
            ..config.clone()
        });
        // Blocks that repeat and change a little: L1 and L2 state matters.
        let blocks: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                let mut b: Vec<u8> = format!("block {} ", i % 7)
                    .bytes()
                    .cycle()
                    .take(block - (i as usize % 3) * 4096)
                    .collect();
                b[100] = i as u8;
                b
            })
            .collect();
        let mut out = Vec::new();
        let mut got = Vec::new();
        let mut offset = 0u64;
        for (i, data) in blocks.iter().enumerate() {
            let mut buf = hde.buffer();
            buf.truncate(data.len());
            buf.copy_from_slice(data);
            hde.submit(offset, buf, i % 10 == 9, &mut |e| {
                decoder.decode_block(e.frame, &mut out).unwrap();
                assert_eq!(out.len(), e.raw_len as usize);
                got.push((e.offset, out.clone()));
                Ok(())
            })
            .unwrap();
            offset += data.len() as u64;
        }
        hde.drain(&mut |e| {
            decoder.decode_block(e.frame, &mut out).unwrap();
            got.push((e.offset, out.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), blocks.len());
        let mut expected_offset = 0u64;
        for ((offset, data), want) in got.iter().zip(&blocks) {
            assert_eq!(*offset, expected_offset);
            assert!(data == want, "block at {offset} differs");
            expected_offset += want.len() as u64;
        }
        assert!(hde.stats().ratio() > 5.0, "{}", hde.stats().ratio());
    }
}
