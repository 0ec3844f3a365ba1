//! Sending a stream (a pipe, a socket, QEMU's migration channel): a reader thread cuts
//! it into pool blocks in order, the data streams send them and keep each until its
//! acknowledgement, so a failed stream's blocks can go out again on the others.
//!
//! With `--streams auto` the sending thread samples goodput and the probes' per-flow
//! figures once per [`SAMPLE_INTERVAL`] and feeds them to [`AutoStreams`], as the file
//! sender does: it starts with [`INITIAL_STREAMS`], connects new streams into the
//! outbox's scheduling while goodput grows, and sheds streams (they stop taking blocks
//! and finish those in flight) when it does not.

use std::{
    collections::VecDeque,
    io::Read,
    net::{Shutdown, SocketAddr, TcpStream},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

mod reader;

use super::{
    codec::{self, BlockEncoder},
    codec_tally::CodecTally,
    encode_pipeline::PipelinedHde,
    outbox::{Outbox, Outgoing},
    stream_set::{StreamSet, reorder_window},
};
use crate::{
    amst::{
        AmstError,
        auto::{AutoControl, AutoStreams, INITIAL_STREAMS},
        connect::{Connection, connect, connect_data_streams},
        failures::StreamFailures,
        in_flight::{InFlight, read_acks},
        sender::{Hooks, Progress, SendOptions, StreamCount, unexpected, w_local_addr},
        summary::Summary,
        zerocopy::ZeroCopy,
    },
    pba::{BlockPool, PoolConfig},
    probe::Probes,
    protocol::{
        frame::{Codec, FrameReader, FrameType, FrameWriter},
        handshake::{Psk, Role},
        messages::{self, Control},
    },
};
use reader::{ReadOutcome, read_source};

/// Sends everything `source` yields until end of file to the receiver at `addr`, which
/// delivers it in order under `name`. With `--streams auto` the count follows goodput
/// alone; [`send_stream_probed`] adds the kernel's per-flow figures.
pub fn send_stream<S: Read + AsFd + Send + 'static>(
    source: S,
    name: &str,
    addr: SocketAddr,
    psk: &Psk,
    options: &SendOptions,
    hooks: &Hooks<'_>,
) -> Result<Summary, AmstError> {
    send_stream_probed(source, name, addr, psk, options, None, hooks)
}

/// [`send_stream`], with the probes' per-flow figures (retransmissions, RTT, congestion
/// window) as inputs of the `auto` stream count.
pub fn send_stream_probed<S: Read + AsFd + Send + 'static>(
    source: S,
    name: &str,
    addr: SocketAddr,
    psk: &Psk,
    options: &SendOptions,
    probes: Option<&Probes>,
    hooks: &Hooks<'_>,
) -> Result<Summary, AmstError> {
    let (max_streams, mut auto) = match options.streams {
        StreamCount::Fixed(n) => (n, None),
        StreamCount::Auto { max } => (max, Some(AutoStreams::new(INITIAL_STREAMS, max))),
    };
    let initial = auto.as_ref().map_or(max_streams, AutoStreams::current);
    let window = options.window.max(1);
    // The receiver may hold this many blocks out of order: sized for the most streams
    // this transfer may use, within what a receiver grants. It bounds the receiver's
    // memory, not what it commits (its pool commits blocks as they arrive).
    let reorder = reorder_window(max_streams, window, options.block_size);
    let block_size = u32::try_from(options.block_size)
        .map_err(|_| AmstError::Invalid(format!("block size {} too large", options.block_size)))?;
    let (mut control_r, mut control_w) = connect(addr, psk, Role::Control, options)?;
    messages::send(
        &mut control_w,
        &Control::Offer {
            transfer_id: format!("stream-{:016x}", rand::random::<u64>()),
            name: name.to_owned(),
            size: 0,
            block_size,
            stream: true,
            window: reorder,
            codec: options.codec.clone(),
        },
    )?;
    let session = match messages::recv(&mut control_r)? {
        Control::Accept { session_id, .. } => session_id,
        Control::Abort { reason } => return Err(AmstError::Aborted(reason)),
        other => return Err(unexpected("accept", &other)),
    };
    let encoder = if options.auto_codec {
        BlockEncoder::auto(&options.codec)?
    } else {
        BlockEncoder::new(&options.codec)?
    };
    // HDE on several cores (the frames are the one-thread encoder's, see
    // `encode_pipeline`); `auto` encodes on the reader thread.
    let pipelined = match &options.codec {
        messages::CodecChoice::Hde { config } if !options.auto_codec && config.workers > 1 => {
            Some(PipelinedHde::new(config, options.block_size))
        }
        _ => None,
    };
    let pool = BlockPool::new(PoolConfig {
        block_size: codec::max_payload(&options.codec, options.block_size).next_power_of_two(),
        min_blocks: 2,
        // Every stream's window (at most the reorder window: the outbox holds the
        // reader to it), the read-ahead, and one being filled.
        max_blocks: (max_streams * window)
            .min(usize::try_from(reorder).unwrap_or(usize::MAX))
            .saturating_add(4)
            .min(crate::pba::MAX_BLOCKS),
        prefault: false,
        ..PoolConfig::default()
    })?;
    let shared = Arc::new(Shared {
        outbox: Outbox::new(reorder),
        window,
        zerocopy: options.zerocopy,
        zc_sends: AtomicU64::new(0),
        zc_copied: AtomicU64::new(0),
        sent_bytes: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        failures: StreamFailures::default(),
        reader_failed: AtomicBool::new(false),
        wanted: AtomicUsize::new(initial),
        codec_tally: options.codec_tally.clone(),
    });
    let start = Instant::now();
    let mut streams = StreamSet::default();
    let opened = open_streams(
        &mut streams,
        initial,
        &shared,
        addr,
        psk,
        session,
        options,
        hooks,
    );
    if let Err(err) = opened {
        shared.outbox.stop();
        streams.join();
        return Err(err);
    }
    let reader = {
        let shared = Arc::clone(&shared);
        let pool = pool.clone();
        let block_size = options.block_size;
        thread::Builder::new()
            .name("dwcp-stream-read".into())
            .spawn(move || read_source(source, &pool, &shared, encoder, pipelined, block_size))
            .map_err(|source| spawn_error(source, "reader"))?
    };
    let mut control = auto
        .as_mut()
        .map(|auto| AutoControl::new(auto, probes, addr));
    let mut grow = |streams: &mut StreamSet, n: usize| {
        open_streams(streams, n, &shared, addr, psk, session, options, hooks)
    };
    let outcome = wait(
        &shared,
        &mut streams,
        &reader,
        hooks,
        control.as_mut(),
        &mut grow,
    );
    shared.outbox.stop();
    let read_result = reader
        .join()
        .unwrap_or_else(|_| Err(AmstError::Invalid("reader thread panicked".into())));
    streams.join();
    if let Err(err) = outcome {
        // The receiver may have said why on the control connection (its sink failed).
        let _ = control_r
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)));
        if let Ok(Control::Abort { reason }) = messages::recv(&mut control_r) {
            return Err(AmstError::Aborted(reason));
        }
        return Err(err);
    }
    let (bytes, digest, (codec, codec_reason)) = read_result?;
    let elapsed = start.elapsed();
    messages::send(
        &mut control_w,
        &Control::End {
            size: bytes,
            blake3: digest.clone(),
        },
    )?;
    match messages::recv(&mut control_r)? {
        Control::Done { blake3 } if blake3 == digest => {}
        Control::Done { blake3 } => {
            return Err(AmstError::DigestMismatch {
                sent: digest,
                received: blake3,
            });
        }
        Control::Abort { reason } => return Err(AmstError::Aborted(reason)),
        other => return Err(unexpected("done", &other)),
    }
    Ok(Summary {
        bytes,
        seconds: elapsed.as_secs_f64(),
        goodput_bps: bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9),
        // For `auto`, the count it settled on (as the file sender reports).
        streams: shared.wanted.load(Ordering::SeqCst),
        kernel_tx_bytes: None,
        retransmits: None,
        cpu_seconds: None,
        digest,
        resumed_blocks: 0,
        resent_blocks: shared.outbox.resent(),
        failed_streams: shared.failures.count(),
        zerocopy_sends: shared.zc_sends.load(Ordering::Relaxed),
        zerocopy_copied: shared.zc_copied.load(Ordering::Relaxed),
        codec: Some(codec),
        codec_reason: Some(codec_reason),
    })
}

fn spawn_error(source: std::io::Error, what: &'static str) -> AmstError {
    AmstError::File {
        what: "Cannot start a thread for the",
        path: what.into(),
        source,
    }
}

/// Connects streams into the free slots below `n` and starts each on its own thread,
/// taking blocks from the outbox.
#[expect(
    clippy::too_many_arguments,
    reason = "the session's parts, each needed to open a data stream"
)]
fn open_streams(
    streams: &mut StreamSet,
    n: usize,
    shared: &Arc<Shared>,
    addr: SocketAddr,
    psk: &Psk,
    session: u64,
    options: &SendOptions,
    hooks: &Hooks<'_>,
) -> Result<usize, AmstError> {
    streams.grow_to(
        n,
        |k| connect_data_streams(addr, psk, session, options, k),
        |index, (r, w): Connection| {
            if let (Some(on_stream), Ok(local)) = (hooks.on_stream, w_local_addr(&w)) {
                on_stream(local);
            }
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name(format!("dwcp-stream-{index}"))
                .spawn(move || run_stream(index, r, w, &shared))
                .map_err(|source| spawn_error(source, "stream"))
        },
    )
}

/// Waits for completion, reporting progress and applying the `auto` controller's
/// decisions; fails when every stream has failed or the reader stopped with an error.
fn wait(
    shared: &Shared,
    streams: &mut StreamSet,
    reader: &JoinHandle<Result<ReadOutcome, AmstError>>,
    hooks: &Hooks<'_>,
    mut control: Option<&mut AutoControl<'_>>,
    grow: &mut dyn FnMut(&mut StreamSet, usize) -> Result<usize, AmstError>,
) -> Result<(), AmstError> {
    while !shared.outbox.wait_complete(Duration::from_millis(100)) {
        let alive = streams.alive();
        if let Some(on_progress) = hooks.on_progress {
            let done = shared.sent_bytes.load(Ordering::Relaxed);
            on_progress(Progress {
                done_bytes: done,
                total_bytes: 0,
                wire_bytes: shared.wire_bytes.load(Ordering::Relaxed),
                streams: alive,
            });
        }
        if reader.is_finished()
            && !shared.outbox.is_complete()
            && shared.reader_failed.load(Ordering::Relaxed)
        {
            return Ok(()); // The reader's own error is returned by the caller.
        }
        if alive == 0 {
            return Err(shared.failures.all_failed(streams.opened()));
        }
        let sent = shared.sent_bytes.load(Ordering::Relaxed);
        if let Some(n) = control.as_mut().and_then(|c| c.tick(sent)) {
            set_stream_count(shared, streams, n, grow);
        }
    }
    Ok(())
}

/// Applies a new stream count: growing connects streams into the free slots below `n`
/// (they take blocks from the outbox at once); shedding lowers the wanted count, and
/// streams at or above it stop taking blocks and finish those in flight.
fn set_stream_count(
    shared: &Shared,
    streams: &mut StreamSet,
    n: usize,
    grow: &mut dyn FnMut(&mut StreamSet, usize) -> Result<usize, AmstError>,
) {
    let before = shared.wanted.swap(n, Ordering::SeqCst);
    if n < before {
        // Streams waiting in `take` re-check whether they are still wanted.
        shared.outbox.nudge();
        return;
    }
    if let Err(err) = grow(streams, n) {
        // The transfer goes on with the streams it has; the streams that did connect
        // keep running (their slots are below `n`).
        tracing::warn!(
            error = %crate::error_chain(&err),
            streams = n,
            "Adding streams failed; continuing with the streams open"
        );
    }
}

struct Shared {
    outbox: Outbox,
    window: usize,
    zerocopy: bool,
    zc_sends: AtomicU64,
    zc_copied: AtomicU64,
    sent_bytes: AtomicU64,
    /// Payload bytes the data streams wrote (encoded), for `--codec auto`'s link rate.
    wire_bytes: AtomicU64,
    failures: StreamFailures,
    /// Set when reading the source failed (its error is the transfer's).
    reader_failed: AtomicBool,
    /// Streams wanted now: stream `i` runs while `i < wanted` (shedding).
    wanted: AtomicUsize,
    /// Where blocks per codec and `auto`'s decisions are counted, if anywhere.
    codec_tally: Option<Arc<CodecTally>>,
}

impl Shared {
    /// Counts a block queued with `codec`: `raw` data bytes in `encoded` payload bytes.
    fn tally_block(&self, codec: Codec, raw: usize, encoded: usize) {
        if let Some(tally) = &self.codec_tally {
            tally.record_block(codec, raw as u64, encoded as u64);
        }
    }
}

/// One data stream: this thread writes blocks and keeps them until acknowledged; a
/// companion thread reads the acknowledgements.
fn run_stream(
    index: usize,
    reader: FrameReader<TcpStream>,
    mut writer: FrameWriter<TcpStream>,
    shared: &Arc<Shared>,
) {
    let in_flight = Arc::new(InFlight::new(shared.window));
    let acks = {
        let in_flight = Arc::clone(&in_flight);
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("dwcp-acks-{index}"))
            .spawn(move || {
                let result = read_acks(reader, &in_flight, |header| {
                    // For streams an ack's offset field carries the blocks delivered.
                    shared.outbox.ack(header.offset);
                });
                if let Err(err) = &result {
                    shared.failures.record(index, err);
                }
                // Wakes the writer (also inside `take`); it gives back what is owed.
                in_flight.stop();
                shared.outbox.nudge();
            })
    };
    let Ok(acks) = acks else {
        return;
    };
    // Blocks sent on this stream, oldest first; the first `len - in_flight` are acked.
    let mut sent: VecDeque<(Outgoing, Option<u32>)> = VecDeque::with_capacity(shared.window);
    let mut zc = if shared.zerocopy {
        ZeroCopy::enable(writer.get_ref())
    } else {
        ZeroCopy::default()
    };
    let result = write_blocks(index, &mut writer, &in_flight, &mut sent, &mut zc, shared);
    let zc_stats = zc.stats();
    shared.zc_sends.fetch_add(zc_stats.sends, Ordering::Relaxed);
    shared
        .zc_copied
        .fetch_add(zc_stats.copied, Ordering::Relaxed);
    match result {
        Ok(()) => {
            let _ = writer.get_ref().shutdown(Shutdown::Write);
        }
        Err(err) => {
            shared.failures.record(index, &err);
            let _ = writer.get_ref().shutdown(Shutdown::Both);
        }
    }
    // After the acknowledgement reader is done, what is still in flight was never
    // acknowledged: the newest `owed` blocks sent go out again on other streams.
    in_flight.stop();
    let _ = acks.join();
    let owed = in_flight.len();
    let skip = sent.len().saturating_sub(owed);
    // Blocks given back may still be referenced by the kernel for a moment: sending them
    // again from the same memory is safe (the content is the same).
    shared
        .outbox
        .give_back(sent.drain(..).skip(skip).map(|(block, _)| block));
}

fn write_blocks(
    index: usize,
    writer: &mut FrameWriter<TcpStream>,
    in_flight: &InFlight,
    sent: &mut VecDeque<(Outgoing, Option<u32>)>,
    zc: &mut ZeroCopy,
    shared: &Shared,
) -> Result<(), AmstError> {
    let shed = || index >= shared.wanted.load(Ordering::Relaxed);
    loop {
        // Shed: a stream beyond the wanted count takes no new block; the caller closes
        // it once the receiver acknowledged what is in flight.
        if shed() || !in_flight.wait_room(shared.window) {
            return Ok(());
        }
        // Release what the receiver has acknowledged (back to the pool), once the kernel
        // has let go of it too (zero-copy: moments after the TCP acknowledgement).
        let acked = sent.len().saturating_sub(in_flight.len());
        for _ in 0..acked {
            while let Some((_, ticket)) = sent.front()
                && !zc.is_released(writer.get_ref(), *ticket)
            {
                if in_flight.is_dead() {
                    return Ok(());
                }
                zc.wait(writer.get_ref(), 10);
            }
            sent.pop_front();
        }
        let Some(block) = shared.outbox.take(|| in_flight.is_dead() || shed()) else {
            return Ok(());
        };
        if !in_flight.push(block.seq) {
            shared.outbox.give_back([block]);
            return Ok(());
        }
        let (seq, offset, coding) = (block.seq, block.offset, block.coding);
        let wire_len = block.block.len() as u64;
        sent.push_back((block, None));
        if let Some((block, ticket)) = sent.back_mut() {
            *ticket = zc.write_frame(
                writer,
                (FrameType::Data, seq, offset),
                (coding, &block.block),
                &block.hash,
            )?;
        }
        shared
            .sent_bytes
            .fetch_add(u64::from(coding.1), Ordering::Relaxed);
        shared.wire_bytes.fetch_add(wire_len, Ordering::Relaxed);
    }
}
