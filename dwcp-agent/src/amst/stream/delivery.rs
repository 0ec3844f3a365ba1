//! The in-order end of a received stream: the sink its decoded bytes go to (the partial
//! file or a registered consumer), their digest and count, and the stream's failure.
//! Shared by the reorder ring (which delivers inline) and the decode stage's thread
//! ([`super::decode_pipeline`]), which delivers on its own; neither holds the other's
//! lock while waiting here.

use std::{
    fs::File,
    io::Write as _,
    net::TcpStream,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use super::{codec_tally::CodecTally, decode_pipeline::BlockSink, receive::Consumer};
use crate::{
    amst::digest::StreamDigest,
    protocol::frame::{Codec, PayloadHash},
};

/// Where a stream's bytes go, in order.
#[derive(Debug)]
pub enum Sink {
    /// The partial file, renamed once verified.
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

/// What was delivered so far.
#[derive(Debug)]
pub struct Output {
    /// `None` once finished or discarded.
    pub sink: Option<Sink>,
    /// Digest of the bytes delivered, in order.
    pub digest: StreamDigest,
    /// Bytes delivered.
    pub bytes: u64,
    /// Set when the stream failed: every data stream stops with this reason.
    pub failed: Option<String>,
}

/// The delivery side of one stream.
#[derive(Debug)]
pub struct Delivery {
    name: String,
    out: Mutex<Output>,
    written: Condvar,
    /// The control connection, to interrupt its wait for the sender's end message when
    /// the stream fails here (so the sender is told why, not just that streams broke).
    control: Mutex<Option<TcpStream>>,
    tally: Arc<CodecTally>,
}

impl Delivery {
    /// Delivery of stream `name` into `sink`, counting blocks in `tally`.
    pub fn new(name: &str, sink: Sink, tally: Arc<CodecTally>) -> Self {
        Self {
            name: name.to_owned(),
            out: Mutex::new(Output {
                sink: Some(sink),
                digest: StreamDigest::default(),
                bytes: 0,
                failed: None,
            }),
            written: Condvar::new(),
            control: Mutex::new(None),
            tally,
        }
    }

    /// The output, locked.
    pub fn lock(&self) -> MutexGuard<'_, Output> {
        // The output stays consistent at every point its holder can panic.
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the control connection to interrupt on failure.
    pub fn watch_control(&self, control: TcpStream) {
        *self.control.lock().unwrap_or_else(PoisonError::into_inner) = Some(control);
    }

    /// Writes the next block's decoded `data` (sent as `codec` in `wire` bytes); `hash`
    /// is its [`crate::amst::digest::block_hash`] when the caller already has it.
    pub fn deliver(
        &self,
        data: &[u8],
        codec: Codec,
        wire: usize,
        hash: Option<&PayloadHash>,
    ) -> std::io::Result<()> {
        let mut out = self.lock();
        match out.sink.as_mut() {
            Some(sink) => sink.write_all(data)?,
            None => return Err(std::io::Error::other("Stream already finished")),
        }
        match hash {
            Some(hash) => out.digest.update_hashed(data.len(), hash),
            None => out.digest.update(data),
        }
        out.bytes += data.len() as u64;
        self.tally
            .record_block(codec, data.len() as u64, wire as u64);
        self.written.notify_all();
        Ok(())
    }

    /// Records the first failure and wakes the control connection's reader.
    pub fn fail(&self, reason: String) {
        let mut out = self.lock();
        if out.failed.is_none() {
            out.failed = Some(reason);
        }
        drop(out);
        self.written.notify_all();
        if let Some(control) = self
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = control.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Waits up to `timeout` until `size` bytes are delivered or the stream failed.
    pub fn wait_for(&self, size: u64, timeout: Duration) -> MutexGuard<'_, Output> {
        let out = self.lock();
        self.written
            .wait_timeout_while(out, timeout, |o| o.bytes < size && o.failed.is_none())
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The decode stage's view of a [`Delivery`].
#[derive(Debug, Clone)]
pub struct StageSink(pub Arc<Delivery>);

impl BlockSink for StageSink {
    fn deliver(
        &mut self,
        data: &[u8],
        (codec, wire_len): (Codec, usize),
        hash: Option<&PayloadHash>,
    ) -> Result<(), String> {
        self.0
            .deliver(data, codec, wire_len, hash)
            .map_err(|e| format!("Cannot deliver stream {}: {e}", self.0.name))
    }

    fn fail(&mut self, seq: u64, reason: String) {
        let reason = if reason.starts_with("Cannot deliver") {
            reason
        } else {
            format!("Block {seq} of stream {}: {reason}", self.0.name)
        };
        self.0.fail(reason);
    }
}
