//! Sending side of a transfer: control connection, stream workers, completion.

use std::{
    fs::File,
    net::{Shutdown, SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{
    AmstError,
    auto::{AutoControl, AutoStreams, INITIAL_STREAMS},
    connect::{connect, connect_data_streams},
    digest::BlockHashes,
    failures::StreamFailures,
    file_block::{BlockAt, FileBlockSender, Source, check_unchanged, source_size},
    in_flight::{InFlight, read_acks},
    scheduler::Scheduler,
    socket::SocketTuning,
    source_map::SourceMap,
    summary::Summary,
};
use crate::{
    pba::{BlockPool, PoolConfig},
    probe::Probes,
    protocol::{
        frame::{FrameReader, FrameWriter},
        handshake::{Psk, Role},
        messages::{self, Control},
    },
};

/// How many streams to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCount {
    /// Exactly this many.
    Fixed(usize),
    /// Adapt between 1 and this many, starting at 4.
    Auto {
        /// Upper bound.
        max: usize,
    },
}

impl std::str::FromStr for StreamCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto {
                max: *super::STREAM_RANGE.end(),
            });
        }
        match s.parse::<usize>() {
            Ok(n) if super::STREAM_RANGE.contains(&n) => Ok(Self::Fixed(n)),
            _ => Err(format!("expected `auto` or a number in 1..=256, got {s:?}")),
        }
    }
}

/// Parameters of a send.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Stream count.
    pub streams: StreamCount,
    /// Block size in bytes (a power of two, 64 KiB ..= 16 MiB).
    pub block_size: usize,
    /// Unacknowledged blocks allowed per stream.
    pub window: usize,
    /// Socket options.
    pub tuning: SocketTuning,
    /// Connect timeout per connection.
    pub connect_timeout: Duration,
    /// How stream blocks are encoded (streamed transfers only).
    pub codec: messages::CodecChoice,
    /// `--codec auto`: `codec` must be HDE; each block goes HDE-encoded or raw, as
    /// measured fastest (see [`super::stream::auto_codec`]).
    pub auto_codec: bool,
    /// Send stream payloads with `MSG_ZEROCOPY` (streamed transfers, which keep every
    /// block until acknowledged anyway; turned off per stream where the kernel copies).
    pub zerocopy: bool,
    /// Counts blocks per codec and `auto`'s decisions (streamed transfers; the agent
    /// exports them on `/metrics`).
    pub codec_tally: Option<Arc<super::stream::codec_tally::CodecTally>>,
}

/// Stream encodings by name, as the CLI and the API take them.
pub const CODEC_NAMES: [&str; 4] = ["auto", "hde", "zstd", "none"];

impl SendOptions {
    /// These options with the stream encoding named `name`: `auto` (HDE or raw per
    /// block, whichever the measured link and codec speeds make faster), `hde`, `zstd`
    /// (level 1) or `none`.
    pub fn with_codec(mut self, name: &str) -> Result<Self, String> {
        (self.codec, self.auto_codec) = match name {
            "none" => (messages::CodecChoice::None, false),
            "zstd" => (messages::CodecChoice::Zstd { level: 1 }, false),
            "hde" | "auto" => (
                messages::CodecChoice::Hde {
                    config: dwcp_hde::HdeConfig::default(),
                },
                name == "auto",
            ),
            other => {
                return Err(format!(
                    "{other:?} is not a codec ({})",
                    CODEC_NAMES.join(", ")
                ));
            }
        };
        Ok(self)
    }
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            streams: StreamCount::Fixed(4),
            block_size: 1 << 20,
            window: 4,
            tuning: SocketTuning::default(),
            connect_timeout: Duration::from_secs(10),
            zerocopy: true,
            codec: messages::CodecChoice::None,
            auto_codec: false,
            codec_tally: None,
        }
    }
}

/// Progress report, delivered a few times per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Bytes acknowledged so far (including blocks the receiver already had).
    pub done_bytes: u64,
    /// Total bytes.
    pub total_bytes: u64,
    /// Payload bytes written to the data streams, after the codec (streams); for files,
    /// which go unencoded, the same as `done_bytes`.
    pub wire_bytes: u64,
    /// Streams open.
    pub streams: usize,
}

/// Hooks for tests and the CLI.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called with each data stream's local address once it is connected.
    pub on_stream: Option<&'a (dyn Fn(SocketAddr) + Sync)>,
    /// Called with progress.
    pub on_progress: Option<&'a dyn Fn(Progress)>,
}

/// Sends the file at `path` to the receiver at `addr`, offered under its file name.
pub fn send_file(
    path: &Path,
    addr: SocketAddr,
    psk: &Psk,
    options: &SendOptions,
    probes: Option<&Probes>,
    hooks: &Hooks<'_>,
) -> Result<Summary, AmstError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| AmstError::Invalid(format!("{} has no UTF-8 file name", path.display())))?
        .to_owned();
    send_file_as(path, &name, addr, psk, options, probes, hooks)
}

/// Sends the file at `path` offered as `name` (a name the receiver registered with
/// [`super::receiver::Receiver::expect_file`], or a plain file name).
pub fn send_file_as(
    path: &Path,
    name: &str,
    addr: SocketAddr,
    psk: &Psk,
    options: &SendOptions,
    probes: Option<&Probes>,
    hooks: &Hooks<'_>,
) -> Result<Summary, AmstError> {
    let name = name.to_owned();
    let file_err = |what| {
        move |source| AmstError::File {
            what,
            path: path.display().to_string(),
            source,
        }
    };
    let file = File::open(path).map_err(file_err("Cannot open"))?;
    let size = source_size(&file).map_err(file_err("Cannot size"))?;
    let block_size = u32::try_from(options.block_size)
        .map_err(|_| AmstError::Invalid(format!("block size {} too large", options.block_size)))?;
    let mtime = file.metadata().ok().and_then(|m| m.modified().ok());
    let transfer_id = blake3::hash(format!("{name}|{size}|{mtime:?}|{block_size}").as_bytes())
        .to_hex()[..32]
        .to_owned();
    let file = Arc::new(file);

    let (mut control_r, mut control_w) = connect(addr, psk, Role::Control, options)?;
    messages::send(
        &mut control_w,
        &Control::Offer {
            transfer_id,
            name,
            size,
            block_size,
            stream: false,
            window: 0,
            codec: Default::default(),
        },
    )?;
    let (session, have) = match messages::recv(&mut control_r)? {
        Control::Accept { session_id, have } => (session_id, have),
        Control::Abort { reason } => return Err(AmstError::Aborted(reason)),
        other => return Err(unexpected("accept", &other)),
    };
    let total_blocks = size.div_ceil(u64::from(block_size));
    let scheduler = Arc::new(Scheduler::new(total_blocks, &have));
    let resumed_blocks = total_blocks - scheduler.remaining();
    let max_streams = match options.streams {
        StreamCount::Fixed(n) => n,
        StreamCount::Auto { max } => max,
    };
    let pool = BlockPool::new(PoolConfig {
        block_size: options.block_size,
        min_blocks: 2,
        max_blocks: (max_streams * 2 + 2).min(crate::pba::MAX_BLOCKS),
        prefault: false,
        ..PoolConfig::default()
    })?;
    let map = SourceMap::new(&file, size);
    let shared = Arc::new(Shared {
        scheduler: Arc::clone(&scheduler),
        pool,
        map,
        file,
        size,
        block_size: u64::from(block_size),
        window: options.window.max(1),
        sent_bytes: AtomicU64::new(0),
        wanted: AtomicUsize::new(0),
        hashes: BlockHashes::new(size, u64::from(block_size)),
        failures: StreamFailures::default(),
        source_failure: Mutex::new(None),
    });

    let start = Instant::now();
    let mut auto = match options.streams {
        StreamCount::Fixed(_) => None,
        StreamCount::Auto { max } => Some(AutoStreams::new(INITIAL_STREAMS, max)),
    };
    let initial = auto.as_ref().map_or(max_streams, AutoStreams::current);
    // Slot `i` runs stream `i`; streams at or above the wanted count stop (shedding), and
    // growing refills the lowest free slots so indices stay below the wanted count.
    let mut workers: Vec<Option<JoinHandle<()>>> = Vec::new();
    let grow_to = |workers: &mut Vec<Option<JoinHandle<()>>>, n: usize| -> Result<(), AmstError> {
        let free: Vec<usize> = (0..n)
            .filter(|&i| {
                workers
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_none_or(JoinHandle::is_finished)
            })
            .collect();
        let connected = connect_data_streams(addr, psk, session, options, free.len());
        for (index, conn) in free.into_iter().zip(connected) {
            let (r, w) = conn?;
            if let Some(on_stream) = hooks.on_stream
                && let Ok(local) = w_local_addr(&w)
            {
                on_stream(local);
            }
            let shared = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("dwcp-stream-{index}"))
                .spawn(move || run_stream(index, r, w, &shared))
                .map_err(|source| AmstError::File {
                    what: "Cannot start stream thread for",
                    path: path.display().to_string(),
                    source,
                })?;
            if workers.len() <= index {
                workers.resize_with(index + 1, || None);
            }
            if let Some(old) = workers[index].replace(handle) {
                let _ = old.join();
            }
        }
        Ok(())
    };
    shared.wanted.store(initial, Ordering::SeqCst);
    grow_to(&mut workers, initial)?;
    let mut peak_streams = initial;

    let mut control = auto
        .as_mut()
        .map(|auto| AutoControl::new(auto, probes, addr));
    while !scheduler.wait_complete(Duration::from_millis(100)) {
        let alive = workers
            .iter()
            .flatten()
            .filter(|w| !w.is_finished())
            .count();
        if let Some(on_progress) = hooks.on_progress {
            let done = (total_blocks - scheduler.remaining()) * u64::from(block_size);
            on_progress(Progress {
                done_bytes: done.min(size),
                total_bytes: size,
                wire_bytes: done.min(size),
                streams: alive,
            });
        }
        if let Some(err) = shared.take_source_failure() {
            // The source itself failed: no other stream can do better.
            scheduler.stop();
            join_all(workers);
            return Err(err);
        }
        if alive == 0 && !scheduler.is_complete() {
            scheduler.stop();
            return Err(shared.failures.all_failed(workers.len()));
        }
        if let Some(n) = control
            .as_mut()
            .and_then(|c| c.tick(shared.sent_bytes.load(Ordering::Relaxed)))
        {
            shared.wanted.store(n, Ordering::SeqCst);
            grow_to(&mut workers, n)?;
            peak_streams = peak_streams.max(n);
        }
    }
    let elapsed = start.elapsed();
    let final_streams = shared.wanted.load(Ordering::SeqCst);
    scheduler.stop();
    join_all(workers);
    check_unchanged(&shared.file, size, mtime)
        .map_err(file_err("Source changed during the transfer:"))?;
    // Blocks the receiver already had were never read here: hash them from the source.
    shared
        .hashes
        .fill_from(&shared.file)
        .map_err(file_err("Cannot read"))?;
    let digest = shared
        .hashes
        .digest()
        .ok_or_else(|| AmstError::Invalid("a block hash is missing after completion".into()))?;
    messages::send(
        &mut control_w,
        &Control::End {
            size,
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
    let failed_streams = shared.failures.count();
    let moved = (total_blocks - resumed_blocks) * u64::from(block_size);
    let bytes = moved.min(size);
    Ok(Summary {
        codec: None,
        codec_reason: None,
        bytes,
        seconds: elapsed.as_secs_f64(),
        goodput_bps: bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9),
        streams: if auto.is_some() {
            final_streams
        } else {
            peak_streams
        },
        kernel_tx_bytes: None,
        retransmits: None,
        cpu_seconds: None,
        digest,
        resumed_blocks,
        resent_blocks: scheduler.resent(),
        failed_streams,
        zerocopy_sends: 0,
        zerocopy_copied: 0,
    })
}

pub(super) fn unexpected(expected: &'static str, got: &Control) -> AmstError {
    AmstError::Protocol(crate::protocol::ProtocolError::Unexpected {
        expected,
        got: got.kind().into(),
    })
}

pub(super) fn w_local_addr(w: &FrameWriter<TcpStream>) -> std::io::Result<SocketAddr> {
    w.get_ref().local_addr()
}

/// Waits for every stream thread.
fn join_all(workers: Vec<Option<JoinHandle<()>>>) {
    for worker in workers.into_iter().flatten() {
        let _ = worker.join();
    }
}

/// State shared by the stream workers of one transfer.
struct Shared {
    scheduler: Arc<Scheduler>,
    pool: BlockPool,
    /// The source mapped for hashing in place (`None`: read with `pread`).
    map: Option<SourceMap>,
    file: Arc<File>,
    size: u64,
    block_size: u64,
    window: usize,
    sent_bytes: AtomicU64,
    wanted: AtomicUsize,
    failures: StreamFailures,
    hashes: BlockHashes,
    /// Set when reading the source failed (it shrank, an I/O error): ends the transfer.
    source_failure: Mutex<Option<AmstError>>,
}

impl Shared {
    fn take_source_failure(&self) -> Option<AmstError> {
        self.source_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// One data stream: this thread writes blocks, a companion reads acknowledgements.
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
                    shared.scheduler.ack(header.seq);
                });
                if let Err(err) = result {
                    shared.failures.record(index, &err);
                    shared.scheduler.give_back(in_flight.kill());
                } else {
                    in_flight.kill();
                }
            })
    };
    let Ok(acks) = acks else {
        shared.scheduler.give_back(in_flight.kill());
        return;
    };
    if let Err(err) = write_blocks(index, &mut writer, &in_flight, shared) {
        if let AmstError::File { .. } = err {
            // The source failed, not the stream: end the whole transfer with this error.
            shared.scheduler.stop();
            let mut slot = shared
                .source_failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(err);
            }
            drop(slot);
            in_flight.kill();
            let _ = writer.get_ref().shutdown(Shutdown::Both);
            let _ = acks.join();
            return;
        }
        shared.failures.record(index, &err);
        shared.scheduler.give_back(in_flight.kill());
        let _ = writer.get_ref().shutdown(Shutdown::Both);
    } else {
        // Done sending: close our half; the receiver ends its side after the last ack.
        let _ = writer.get_ref().shutdown(Shutdown::Write);
    }
    let _ = acks.join();
}

fn write_blocks(
    index: usize,
    writer: &mut FrameWriter<TcpStream>,
    in_flight: &InFlight,
    shared: &Shared,
) -> Result<(), AmstError> {
    let mut payloads = FileBlockSender::default();
    loop {
        // Shed: streams beyond the wanted count stop taking new blocks.
        if index >= shared.wanted.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !in_flight.wait_room(shared.window) {
            // The acknowledgement reader failed; it has recorded why.
            return Ok(());
        }
        let Some(seq) = shared.scheduler.next() else {
            return Ok(());
        };
        if !in_flight.push(seq) {
            shared.scheduler.give_back([seq]);
            return Ok(());
        }
        let offset = seq * shared.block_size;
        let len = usize::try_from(shared.block_size.min(shared.size - offset)).unwrap_or(0);
        let source = Source {
            file: &shared.file,
            map: shared.map.as_ref(),
        };
        payloads.send(
            writer,
            source,
            &shared.pool,
            BlockAt { seq, offset, len },
            &shared.hashes,
        )?;
        shared.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}
