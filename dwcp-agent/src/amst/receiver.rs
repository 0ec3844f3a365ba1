//! Receiving side: accepts control and data connections, writes blocks in place, and
//! moves a verified file under its final name.
//!
//! Files are written as `.<name>.dwcp-part` in the receive directory; their resume
//! record `.<name>.dwcp-state` lists blocks known to be on disk (written after an
//! `fdatasync`). Only a transfer whose every block arrived and whose BLAKE3 digest
//! matches the sender's is fsynced and renamed to `<name>`: a failed or refused
//! transfer never leaves a file under the final name.
//!
//! A file offered under a name registered with [`Receiver::expect_file`] goes to the
//! registered path instead (part and resume files beside it); registered names start
//! with a dot, which a plain offer may not use, so an offer arriving after the
//! registration was withdrawn is refused rather than written to the receive directory.

use std::{
    collections::HashMap,
    fs::File,
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use super::{
    AmstError,
    file_session::{FileSession, Persister},
    socket::SocketTuning,
    stream::receive::{Consumer, StreamSession},
};
use crate::pba::{BlockPool, PoolConfig};
use crate::protocol::{
    ProtocolError,
    frame::{FrameReader, FrameWriter},
    handshake::{self, Psk, Role},
    messages::{self, Control, MAX_CONTROL_LEN, to_ranges},
};

/// Largest block a sender may use.
pub const MAX_BLOCK: u32 = 16 << 20;
/// Calm adapt steps before a receiver pool gives idle blocks back.
const RECEIVER_SHRINK_AFTER_STEPS: u32 = 3;
/// Smallest block a sender may use.
pub const MIN_BLOCK: u32 = 64 << 10;

/// Receiver settings.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Directory files are written to.
    pub dir: PathBuf,
    /// Pre-shared key.
    pub psk: Psk,
    /// Socket options for data streams.
    pub tuning: SocketTuning,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Data streams open now.
    pub streams: AtomicUsize,
    /// Payload bytes written.
    pub payload_bytes: AtomicU64,
    /// Transfers completed and verified.
    pub completed: AtomicU64,
    /// Transfers that failed or were refused.
    pub failed: AtomicU64,
    /// Stream blocks delivered, per codec.
    pub codec: Arc<super::stream::codec_tally::CodecTally>,
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    sessions: Mutex<HashMap<u64, Live>>,
    stats: Arc<ReceiverStats>,
    /// Block pools by block size: each data stream borrows one block as its buffer.
    pools: Mutex<HashMap<usize, BlockPool>>,
    /// Consumers waiting for the stream of that name (instead of a file).
    consumers: Mutex<HashMap<String, Consumer>>,
    /// Final paths of expected files, by offered name (instead of the receive directory).
    files: Mutex<HashMap<String, PathBuf>>,
    /// Takes control conversations that are not transfers (VM migration).
    handler: Mutex<Option<Arc<dyn ControlHandler>>>,
}

/// Handles a control connection whose first message is not a transfer offer (the
/// migration messages: see `crate::migrate::destination`).
pub trait ControlHandler: Send + Sync + std::fmt::Debug {
    /// Carries the conversation that began with `first` to its end.
    fn handle(
        &self,
        first: Control,
        reader: &mut FrameReader<TcpStream>,
        writer: &mut FrameWriter<TcpStream>,
    ) -> Result<(), AmstError>;
}

/// Block pool figures summed over the receiver's pools.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolTotals {
    /// Blocks the pools hold committed (their predicted target).
    pub blocks: usize,
    /// Blocks lent out now.
    pub in_use: usize,
    /// Committed bytes not in use, per byte in use (idle memory the pools keep).
    pub overhead_ratio: f64,
    /// Total time callers waited for a block.
    pub acquire_wait: Duration,
}

/// A transfer data streams may join.
#[derive(Clone, Debug)]
enum Live {
    File(Arc<FileSession>),
    Stream(Arc<StreamSession>),
}

impl Receiver {
    /// Creates a receiver writing into `config.dir` (which must exist).
    pub fn new(config: ReceiverConfig) -> Result<Arc<Self>, AmstError> {
        if !config.dir.is_dir() {
            return Err(AmstError::File {
                what: "Receive directory is not a directory:",
                path: config.dir.display().to_string(),
                source: std::io::Error::from(ErrorKind::NotFound),
            });
        }
        Ok(Arc::new(Self {
            config,
            sessions: Mutex::new(HashMap::new()),
            stats: Arc::default(),
            pools: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            handler: Mutex::new(None),
        }))
    }

    /// Routes control conversations that are not transfers to `handler`.
    pub fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        *self
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    /// Delivers the next stream named `name` to `consumer` (in order, then closed)
    /// instead of writing a file; replaces an earlier registration for that name.
    pub fn expect_stream(&self, name: &str, consumer: Consumer) {
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), consumer);
    }

    /// Withdraws a registration that no stream used; returns whether there was one.
    pub fn forget_stream(&self, name: &str) -> bool {
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// Writes the next file offered as `name` to `target` (verified, then renamed into
    /// place there) instead of the receive directory. `name` must start with a dot (see
    /// the module doc); `target`'s directory must exist. Replaces an earlier
    /// registration of that name.
    pub fn expect_file(&self, name: &str, target: PathBuf) -> Result<(), AmstError> {
        if !name.starts_with('.') || name.contains(['/', '\0']) || name.len() > 255 {
            return Err(AmstError::Invalid(format!(
                "expected file name {name:?} must be one path component starting with a dot"
            )));
        }
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), target);
        Ok(())
    }

    /// Withdraws a file registration; returns whether no offer had used it yet.
    pub fn forget_file(&self, name: &str) -> bool {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// Where an offered file goes: its registered path (used once), else the receive
    /// directory under a plain name.
    fn file_target(&self, name: &str) -> Result<PathBuf, AmstError> {
        let registered = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        match registered {
            Some(target) => Ok(target),
            None => validate_name(name).map(|()| self.config.dir.join(name)),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        Arc::clone(&self.stats)
    }

    /// Runs one prediction step on every pool and returns their summed figures.
    pub fn pool_totals(&self) -> PoolTotals {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut t = PoolTotals::default();
        let (mut committed, mut used, mut block) = (0usize, 0usize, 0usize);
        for pool in pools.values() {
            let _ = pool.adapt();
            let s = pool.stats();
            t.blocks += s.target_blocks;
            t.in_use += s.blocks_in_use;
            t.acquire_wait += Duration::from_nanos(s.acquire_wait_ns_total);
            committed += s.bytes_committed_estimate;
            used += s.blocks_in_use * s.block_size;
            block = block.max(s.block_size);
        }
        t.overhead_ratio = committed.saturating_sub(used) as f64 / used.max(block).max(1) as f64;
        t
    }

    /// The pool for blocks of `size` bytes (rounded up to a power of two), created on
    /// first use.
    fn pool_for(&self, size: usize) -> Result<BlockPool, AmstError> {
        let size = size.next_power_of_two().max(crate::pba::MIN_BLOCK_SIZE);
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(&size) {
            return Ok(pool.clone());
        }
        let pool = BlockPool::new(PoolConfig {
            block_size: size,
            min_blocks: 1,
            max_blocks: *super::STREAM_RANGE.end(),
            prefault: false,
            // The pool outlives transfers and holds one block per open data connection:
            // a closing connection settles it to the blocks still in use (`data`), and
            // the telemetry refresh adapts it too, so three calm refreshes in a row give
            // back whatever a settle raced with.
            shrink_after_steps: RECEIVER_SHRINK_AFTER_STEPS,
            ..PoolConfig::default()
        })?;
        pools.insert(size, pool.clone());
        Ok(pool)
    }

    /// Accepts connections until `stop` is set (checked every 200 ms).
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false)?;
                    let me = Arc::clone(self);
                    let spawned = thread::Builder::new()
                        .name("dwcp-recv".into())
                        .spawn(move || me.handle(stream, peer));
                    if let Err(err) = spawned {
                        tracing::warn!(error = %err, "Cannot start a connection thread");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => wait_readable(&listener, 200),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed");
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Ok(())
    }

    fn handle(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let agreed = handshake::server(&mut stream, &self.config.psk, |id| {
            self.session(id).is_some()
        });
        let role = match agreed {
            Ok(agreed) => agreed.role,
            Err(err) => {
                tracing::warn!(%peer, error = %crate::error_chain(&err), "Handshake refused");
                return;
            }
        };
        // After the handshake a stream may idle while the sender reads the source.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
        match role {
            Role::Control => {
                if let Err(err) = self.control(stream) {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %crate::error_chain(&err), "Transfer failed");
                }
            }
            Role::Data { session } => {
                let Some(session) = self.session(session) else {
                    return;
                };
                if let Err(err) = self.config.tuning.apply(&stream) {
                    tracing::warn!(error = %err, "Socket tuning failed");
                }
                self.stats.streams.fetch_add(1, Ordering::Relaxed);
                let result = match &session {
                    Live::File(session) => self.data(stream, session),
                    Live::Stream(session) => session.serve(stream).map(|bytes| {
                        self.stats.payload_bytes.fetch_add(bytes, Ordering::Relaxed);
                    }),
                };
                if let Err(err) = result {
                    tracing::warn!(%peer, error = %crate::error_chain(&err), "Data stream failed");
                }
                self.stats.streams.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn session(&self, id: u64) -> Option<Live> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn control(&self, stream: TcpStream) -> Result<(), AmstError> {
        let mut reader = FrameReader::new(
            stream.try_clone().map_err(ProtocolError::Io)?,
            MAX_CONTROL_LEN,
        );
        let mut writer = FrameWriter::new(stream);
        let (transfer_id, name, size, block_size) = match messages::recv(&mut reader)? {
            Control::Offer {
                name,
                block_size,
                stream: true,
                window,
                codec,
                ..
            } => {
                return self.stream_control(
                    &mut reader,
                    &mut writer,
                    &name,
                    (block_size, window),
                    &codec,
                );
            }
            Control::Offer {
                transfer_id,
                name,
                size,
                block_size,
                ..
            } => (transfer_id, name, size, block_size),
            other => {
                let handler = self.handler.lock().map(|h| h.clone()).unwrap_or(None);
                if let Some(handler) = handler {
                    return handler.handle(other, &mut reader, &mut writer);
                }
                return Err(ProtocolError::Unexpected {
                    expected: "offer",
                    got: other.kind().into(),
                }
                .into());
            }
        };
        let opened = self
            .file_target(&name)
            .and_then(|target| self.open_session(&transfer_id, target, size, block_size));
        let session = match opened {
            Ok(session) => Arc::new(session),
            Err(err) => {
                let reason = crate::error_chain(&err);
                messages::send(
                    &mut writer,
                    &Control::Abort {
                        reason: reason.clone(),
                    },
                )?;
                return Err(err);
            }
        };
        let id: u64 = rand::random::<u64>() | 1;
        let have = to_ranges(session.held());
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Live::File(Arc::clone(&session)));
        tracing::info!(
            name,
            size,
            block_size,
            resumed_ranges = have.len(),
            "Transfer started"
        );
        let persister = Persister::start(Arc::clone(&session));
        let result = self.finish(&mut reader, &mut writer, id, &session, have, persister);
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if result.is_err() {
            // Keep what arrived for a resume; the final name is never touched.
            if let Err(err) = session.persist() {
                tracing::warn!(error = %err, "Cannot save the resume record");
            }
        }
        result
    }

    fn finish(
        &self,
        reader: &mut FrameReader<TcpStream>,
        writer: &mut FrameWriter<TcpStream>,
        id: u64,
        session: &FileSession,
        have: Vec<(u64, u64)>,
        persister: Persister,
    ) -> Result<(), AmstError> {
        messages::send(
            writer,
            &Control::Accept {
                session_id: id,
                have,
            },
        )?;
        let expected = match messages::recv(reader)? {
            Control::End { size, blake3 } if size == session.size => blake3,
            Control::End { size, .. } => {
                return self.refuse(
                    writer,
                    format!("End announces {size} bytes, offer said {}", session.size),
                );
            }
            Control::Abort { reason } => return Err(AmstError::Aborted(reason)),
            other => {
                return Err(ProtocolError::Unexpected {
                    expected: "end",
                    got: other.kind().into(),
                }
                .into());
            }
        };
        // No resume record may be written from here on: the transfer is being finalized.
        drop(persister);
        let missing = session.missing();
        if missing > 0 {
            return self.refuse(writer, format!("{missing} blocks never arrived"));
        }
        let io = |what| {
            move |source| AmstError::File {
                what,
                path: session.part.display().to_string(),
                source,
            }
        };
        session.file.sync_all().map_err(io("Cannot fsync"))?;
        // Blocks kept from an earlier attempt were not hashed in this one: read them back.
        session
            .hashes
            .fill_from(&session.file)
            .map_err(io("Cannot read back"))?;
        let actual = session.hashes.digest().unwrap_or_default();
        if actual != expected {
            let _ = std::fs::remove_file(&session.part);
            let _ = std::fs::remove_file(&session.state);
            return self.refuse(
                writer,
                format!("Digest mismatch: sender {expected}, received data {actual}"),
            );
        }
        std::fs::rename(&session.part, &session.target).map_err(io("Cannot rename"))?;
        if let Some(dir) = session.target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("Cannot fsync directory of"))?;
        }
        let _ = std::fs::remove_file(&session.state);
        messages::send(writer, &Control::Done { blake3: actual })?;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(file = %session.target.display(), bytes = session.size, "Transfer verified and in place");
        Ok(())
    }

    /// The control side of a streamed transfer: accept, wait for the end, verify.
    fn stream_control(
        &self,
        reader: &mut FrameReader<TcpStream>,
        writer: &mut FrameWriter<TcpStream>,
        name: &str,
        (block_size, window): (u32, u64),
        codec: &messages::CodecChoice,
    ) -> Result<(), AmstError> {
        let consumer = self
            .consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        let opened = validate_name(name)
            .and_then(|()| check_block_size(block_size))
            .and_then(|()| {
                StreamSession::open(
                    &self.config.dir,
                    name,
                    (block_size, window),
                    codec,
                    consumer,
                    Arc::clone(&self.stats.codec),
                )
            });
        let session = match opened {
            Ok(session) => Arc::new(session),
            Err(err) => return self.refuse(writer, crate::error_chain(&err)),
        };
        let id: u64 = rand::random::<u64>() | 1;
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Live::Stream(Arc::clone(&session)));
        tracing::info!(name, block_size, window, ?codec, "Stream transfer started");
        let result = (|| {
            messages::send(
                writer,
                &Control::Accept {
                    session_id: id,
                    have: Vec::new(),
                },
            )?;
            if let Ok(control) = reader.get_ref().try_clone() {
                session.watch_control(control);
            }
            let end = messages::recv(reader);
            if let Some(reason) = session.failure() {
                return self.refuse(writer, reason);
            }
            let (size, expected) = match end? {
                Control::End { size, blake3 } => (size, blake3),
                Control::Abort { reason } => return Err(AmstError::Aborted(reason)),
                other => {
                    return Err(ProtocolError::Unexpected {
                        expected: "end",
                        got: other.kind().into(),
                    }
                    .into());
                }
            };
            match session.finish(size, &expected) {
                Ok(actual) => {
                    messages::send(writer, &Control::Done { blake3: actual })?;
                    self.stats.completed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(to = %session.target(), bytes = size, "Stream verified and delivered");
                    Ok(())
                }
                Err(reason) => self.refuse(writer, reason),
            }
        })();
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if result.is_err() {
            session.discard();
        }
        result
    }

    fn refuse(&self, writer: &mut FrameWriter<TcpStream>, reason: String) -> Result<(), AmstError> {
        messages::send(
            writer,
            &Control::Abort {
                reason: reason.clone(),
            },
        )?;
        Err(AmstError::Aborted(reason))
    }

    fn open_session(
        &self,
        transfer_id: &str,
        target: PathBuf,
        size: u64,
        block_size: u32,
    ) -> Result<FileSession, AmstError> {
        check_block_size(block_size)?;
        FileSession::open(transfer_id, target, size, block_size)
    }

    fn data(&self, stream: TcpStream, session: &FileSession) -> Result<(), AmstError> {
        let block = u32::try_from(session.block_size).unwrap_or(MAX_BLOCK);
        let pool = self.pool_for(block as usize)?;
        let served = super::file_receive::serve(stream, session, &pool, &self.stats.payload_bytes);
        // The connection's block is back in the pool: one block per open connection is
        // the whole demand, so the pool follows it down now instead of holding the
        // block through its calm windows.
        pool.settle();
        served
    }
}

/// Waits until `listener` has a connection to accept, or `timeout_ms` passed.
fn wait_readable(listener: &TcpListener, timeout_ms: i32) {
    use std::os::fd::AsRawFd as _;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd for a listener that outlives the call.
    unsafe { libc::poll(&raw mut fd, 1, timeout_ms) };
}

fn check_block_size(block_size: u32) -> Result<(), AmstError> {
    if (MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        Ok(())
    } else {
        Err(AmstError::Invalid(format!(
            "block size {block_size} outside {MIN_BLOCK}..={MAX_BLOCK}"
        )))
    }
}

/// A plain file name: no directories, no hidden-file tricks, no NUL.
fn validate_name(name: &str) -> Result<(), AmstError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\0']);
    if bad {
        return Err(AmstError::Invalid(format!("refused file name {name:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_are_refused() {
        for bad in ["", ".", "..", "../etc/passwd", "a/b", ".hidden", "x\0y"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("disk.img").unwrap();
    }
}
