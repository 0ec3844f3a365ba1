//! The reader thread of a streamed transfer: cuts the source into pool blocks in stream
//! order (encoding them when a codec is on, through the HDE pipeline when it runs on
//! workers), takes each block's hash once for both its frame and the stream digest, and
//! queues the blocks in the outbox.

use std::{
    io::{ErrorKind, Read},
    os::fd::{AsFd, AsRawFd as _},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    super::{
        codec::BlockEncoder,
        encode_pipeline::{Encoded, PipelinedHde},
        outbox::Outgoing,
    },
    Shared,
};
use crate::{
    amst::{
        AmstError,
        digest::{StreamDigest, block_hash},
    },
    pba::BlockPool,
    protocol::frame::Codec,
};

/// A partly filled block goes out after the source has been silent this long, so the
/// tail of a burst (the last pages of a migration round) does not wait for more data.
const FLUSH_AFTER_MS: i32 = 2;

/// Reads the source into blocks until end of file; returns the byte count, the digest,
/// and the codec used with why.
pub(super) fn read_source<S: Read + AsFd>(
    mut source: S,
    pool: &BlockPool,
    shared: &Shared,
    mut encoder: BlockEncoder,
    pipelined: Option<PipelinedHde>,
    block_size: usize,
) -> Result<ReadOutcome, AmstError> {
    let mut digest = StreamDigest::default();
    let mut offset = 0u64;
    if let Some(mut hde) = pipelined {
        let result = read_pipelined(&mut source, pool, shared, &mut hde, &mut digest);
        if let Err(err) = &result {
            tracing::warn!(error = %crate::error_chain(err), "Reading the stream source failed");
            shared.reader_failed.store(true, Ordering::Relaxed);
            shared.outbox.stop();
        }
        let report = (
            "hde".to_owned(),
            "asked for; encoded by the HDE pipeline on worker threads".to_owned(),
        );
        return result.map(|bytes| (bytes, digest.hex(), report));
    }
    // With a codec, blocks are read here and encoded into the pool block (both buffers
    // allocated once).
    let (mut raw, mut wire) = if encoder.is_none() {
        (Vec::new(), Vec::new())
    } else {
        (vec![0u8; block_size], Vec::with_capacity(block_size * 2))
    };
    let read_err = |source| AmstError::File {
        what: "Cannot read",
        path: "the stream source".into(),
        source,
    };
    let result = (|| loop {
        let waiting = Instant::now();
        let Some(seq) = shared.outbox.reserve() else {
            return Ok(());
        };
        let mut block = pool.acquire(Duration::from_secs(300))?;
        let decision =
            encoder.observe(shared.wire_bytes.load(Ordering::Relaxed), waiting.elapsed());
        if let (Some(decision), Some(tally)) = (decision, &shared.codec_tally) {
            tally.record_decision(decision);
        }
        let (len, eof, coding) = if encoder.is_none() {
            let full = block.as_mut_full();
            let cap = full.len().min(block_size);
            let (len, eof) = fill(&mut source, &mut full[..cap]).map_err(read_err)?;
            block.set_len(len);
            (len, eof, (Codec::None, len as u32))
        } else {
            let (len, eof) = fill(&mut source, &mut raw).map_err(read_err)?;
            let codec = encoder.encode(&raw[..len], offset, &mut wire)?;
            let room = block.as_mut_full();
            if wire.len() > room.len() {
                return Err(AmstError::Invalid(format!(
                    "encoded block of {} bytes exceeds the {}-byte pool block",
                    wire.len(),
                    room.len()
                )));
            }
            room[..wire.len()].copy_from_slice(&wire);
            block.set_len(wire.len());
            (len, eof, (codec, len as u32))
        };
        if len > 0 {
            shared.tally_block(coding.0, len, block.len());
            // The digest covers the stream's bytes as read, before any encoding; a raw
            // block's hash is also its frame's payload hash.
            let hash = block_hash(&block);
            if coding.0 == Codec::None {
                digest.update_hashed(len, &hash);
            } else {
                digest.update(&raw[..len]);
            }
            shared.outbox.push(Outgoing {
                seq,
                offset,
                block,
                coding,
                hash,
            });
            offset += len as u64;
        }
        if eof {
            shared.outbox.finish();
            return Ok(());
        }
    })();
    if let Err(err) = &result {
        tracing::warn!(error = %crate::error_chain(err), "Reading the stream source failed");
        shared.reader_failed.store(true, Ordering::Relaxed);
        shared.outbox.stop();
    }
    result.map(|()| (offset, digest.hex(), encoder.report()))
}

/// What the reader returns: bytes read, their digest, and the codec used with why.
pub(super) type ReadOutcome = (u64, String, (String, String));

/// [`read_source`] through the HDE pipeline: blocks are read here, encoded on worker
/// threads and queued in stream order as they come out; returns the byte count.
fn read_pipelined<S: Read + AsFd>(
    source: &mut S,
    pool: &BlockPool,
    shared: &Shared,
    hde: &mut PipelinedHde,
    digest: &mut StreamDigest,
) -> Result<u64, AmstError> {
    let read_err = |source| AmstError::File {
        what: "Cannot read",
        path: "the stream source".into(),
        source,
    };
    let mut emit = |e: Encoded<'_>| -> Result<(), AmstError> {
        let Some(seq) = shared.outbox.reserve() else {
            return Err(AmstError::Invalid(
                "The transfer stopped while encoding".into(),
            ));
        };
        let mut block = pool.acquire(Duration::from_secs(300))?;
        let room = block.as_mut_full();
        if e.frame.len() > room.len() {
            return Err(AmstError::Invalid(format!(
                "encoded block of {} bytes exceeds the {}-byte pool block",
                e.frame.len(),
                room.len()
            )));
        }
        room[..e.frame.len()].copy_from_slice(e.frame);
        block.set_len(e.frame.len());
        shared.tally_block(Codec::Hde, e.raw_len as usize, e.frame.len());
        shared.outbox.push(Outgoing {
            seq,
            offset: e.offset,
            hash: block_hash(&block),
            block,
            coding: (Codec::Hde, e.raw_len),
        });
        Ok(())
    };
    let mut offset = 0u64;
    loop {
        let mut buf = hde.buffer();
        let block_size = buf.len();
        let (len, eof) = fill(source, &mut buf).map_err(read_err)?;
        if len > 0 {
            buf.truncate(len);
            // The digest covers the stream's bytes as read, before any encoding.
            digest.update(&buf);
            // A short block means the source paused: send what is inside now.
            let flush = eof || len < block_size;
            hde.submit(offset, buf, flush, &mut emit)?;
            offset += len as u64;
        }
        if eof {
            hde.drain(&mut emit)?;
            shared.outbox.finish();
            return Ok(offset);
        }
    }
}

/// Fills `buf` from `source` until it is full, the source ends (`true`), or the source
/// has been silent for [`FLUSH_AFTER_MS`] with something already in the block.
fn fill<S: Read + AsFd>(source: &mut S, buf: &mut [u8]) -> std::io::Result<(usize, bool)> {
    let mut n = 0;
    while n < buf.len() {
        if n > 0 && !readable(source, FLUSH_AFTER_MS)? {
            break;
        }
        match source.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, false))
}

/// Waits up to `timeout_ms` for `source` to have data (or end of file).
fn readable(source: &impl AsFd, timeout_ms: i32) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: source.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call and its fd is
    // borrowed from `source`, which outlives the call.
    let r = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    match r {
        -1 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
