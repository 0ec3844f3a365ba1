//! The parallel forms: [`EncodePipeline`] and [`DecodePipeline`] run the sequential
//! stages on one thread each and the expensive stages on `workers` threads, connected by
//! bounded crossbeam channels. Output comes back in input order; at most
//! `in_flight` blocks are inside a pipeline, so its memory is bounded, and buffers are
//! passed back and forth rather than allocated per block once the pipeline is warm.
//!
//! Both have the same shape: [`EncodePipeline::submit`] hands a block in and, when the
//! pipeline is full, first waits for and returns the oldest result; `next` returns the
//! remaining results in order once the input is exhausted (`next_block`).
//!
//! ```text
//! encode: caller -> classifier (sequential) -> packers (N) -> caller (reorders)
//! decode: caller -> gate (sequential) -> unpackers (N) -> rebuilder (sequential, reorders) -> caller
//! ```

use std::{collections::BTreeMap, thread::JoinHandle};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::{
    classify::{Classifier, EncodeError, Plan},
    clock::elapsed,
    codec::BlockInfo,
    config::HdeConfig,
    error::DecodeError,
    pack::Packer,
    rebuild::Rebuilder,
    stats::Stats,
    unpack::{Admitted, Gate, Unpacker, raw_payload},
};

/// One encoded block, returned in input order.
#[derive(Debug)]
pub struct EncodedBlock {
    /// Page index the block started at.
    pub first_page: u64,
    /// The frame to send.
    pub frame: Vec<u8>,
    /// The input buffer, handed back for reuse.
    pub data: Vec<u8>,
}

struct EncodeJob {
    seq: u64,
    first_page: u64,
    data: Vec<u8>,
    plan: Plan,
    classified: Result<(), EncodeError>,
    classify_nanos: u64,
}

struct EncodeDone {
    seq: u64,
    first_page: u64,
    data: Vec<u8>,
    frame: Vec<u8>,
    result: Result<Stats, EncodeError>,
}

/// Parallel encoder (see the module documentation).
pub struct EncodePipeline {
    input: Option<Sender<(u64, Vec<u8>)>>,
    done: Receiver<EncodeDone>,
    frames: Sender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
    pending: BTreeMap<u64, EncodeDone>,
    submitted: u64,
    returned: u64,
    capacity: usize,
    stats: Stats,
}

impl std::fmt::Debug for EncodePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodePipeline")
            .field("submitted", &self.submitted)
            .field("returned", &self.returned)
            .finish_non_exhaustive()
    }
}

impl EncodePipeline {
    /// Starts the classifier and `config.workers` packers.
    #[must_use]
    pub fn new(config: &HdeConfig) -> Self {
        let capacity = config.effective_in_flight();
        let (input, jobs_in) = bounded::<(u64, Vec<u8>)>(capacity);
        let (work, work_in) = bounded::<EncodeJob>(capacity);
        let (done_out, done) = bounded::<EncodeDone>(capacity);
        let (plans_back, plans) = bounded::<Plan>(capacity);
        let (frames, frames_in) = bounded::<Vec<u8>>(capacity);
        let mut threads = Vec::new();
        let mut classifier = Classifier::new(config);
        threads.push(std::thread::spawn(move || {
            for (seq, (first_page, data)) in (0u64..).zip(jobs_in) {
                let started = crate::clock::now();
                let mut plan = plans.try_recv().unwrap_or_default();
                let classified = classifier.classify(first_page, &data, &mut plan);
                let job = EncodeJob {
                    seq,
                    first_page,
                    data,
                    plan,
                    classified,
                    classify_nanos: elapsed(started),
                };
                if work.send(job).is_err() {
                    return;
                }
            }
        }));
        for _ in 0..config.workers.max(1) {
            let (work_in, done_out, plans_back, frames_in) = (
                work_in.clone(),
                done_out.clone(),
                plans_back.clone(),
                frames_in.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut packer = Packer::new();
                for job in work_in {
                    let mut frame = frames_in.try_recv().unwrap_or_default();
                    let result = job.classified.and_then(|()| {
                        let mut stats = packer.pack(&job.plan, &job.data, &mut frame)?;
                        stats.total_nanos += job.classify_nanos;
                        Ok(stats)
                    });
                    let _ = plans_back.try_send(job.plan);
                    let done = EncodeDone {
                        seq: job.seq,
                        first_page: job.first_page,
                        data: job.data,
                        frame,
                        result,
                    };
                    if done_out.send(done).is_err() {
                        return;
                    }
                }
            }));
        }
        Self {
            input: Some(input),
            done,
            frames,
            threads,
            pending: BTreeMap::new(),
            submitted: 0,
            returned: 0,
            capacity,
            stats: Stats::default(),
        }
    }

    /// Hands in a block; when the pipeline is full, first returns the oldest result.
    pub fn submit(
        &mut self,
        first_page: u64,
        data: Vec<u8>,
    ) -> Result<Option<EncodedBlock>, EncodeError> {
        let ready = if self.in_flight() >= self.capacity {
            self.next_block()?
        } else {
            None
        };
        let input = self.input.as_ref().ok_or(EncodeError::PipelineStopped)?;
        input
            .send((first_page, data))
            .map_err(|_| EncodeError::PipelineStopped)?;
        self.submitted += 1;
        Ok(ready)
    }

    /// The next result in input order, waiting for it; `None` when none is in flight.
    pub fn next_block(&mut self) -> Result<Option<EncodedBlock>, EncodeError> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        let done = loop {
            if let Some(done) = self.pending.remove(&self.returned) {
                break done;
            }
            let done = self.done.recv().map_err(|_| EncodeError::PipelineStopped)?;
            self.pending.insert(done.seq, done);
        };
        self.returned += 1;
        self.stats += done.result?;
        Ok(Some(EncodedBlock {
            first_page: done.first_page,
            frame: done.frame,
            data: done.data,
        }))
    }

    /// Gives a frame buffer back for reuse once it has been sent.
    pub fn recycle(&self, frame: Vec<u8>) {
        let _ = self.frames.try_send(frame);
    }

    /// Counters of the blocks returned so far (time is CPU time summed over threads).
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn in_flight(&self) -> usize {
        (self.submitted - self.returned) as usize
    }
}

impl Drop for EncodePipeline {
    fn drop(&mut self) {
        self.input = None;
        while self.done.recv().is_ok() {}
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One decoded block, returned in input order.
#[derive(Debug)]
pub struct DecodedBlock {
    /// Where the block goes.
    pub info: BlockInfo,
    /// The decoded data.
    pub data: Vec<u8>,
    /// The frame buffer, handed back for reuse.
    pub frame: Vec<u8>,
}

struct DecodeJob {
    idx: u64,
    frame: Vec<u8>,
    admitted: Result<Admitted, DecodeError>,
}

struct Unpacked {
    idx: u64,
    frame: Vec<u8>,
    admitted: Result<Admitted, DecodeError>,
    raw: Vec<u8>,
    decompressed: bool,
    nanos: u64,
}

type DecodeResult = Result<(DecodedBlock, Stats), DecodeError>;

/// Parallel decoder (see the module documentation).
pub struct DecodePipeline {
    input: Option<Sender<Vec<u8>>>,
    output: Receiver<DecodeResult>,
    buffers: Sender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
    submitted: u64,
    returned: u64,
    capacity: usize,
    stats: Stats,
}

impl std::fmt::Debug for DecodePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodePipeline")
            .field("submitted", &self.submitted)
            .field("returned", &self.returned)
            .finish_non_exhaustive()
    }
}

impl DecodePipeline {
    /// Starts the gate, `config.workers` unpackers and the rebuilder.
    #[must_use]
    pub fn new(config: &HdeConfig) -> Self {
        let capacity = config.effective_in_flight();
        let geometry = (
            config.effective_index_slots(),
            config.effective_history_slots(),
        );
        let (input, frames_in) = bounded::<Vec<u8>>(capacity);
        let (work, work_in) = bounded::<DecodeJob>(capacity);
        let (unpacked_out, unpacked_in) = bounded::<Unpacked>(capacity);
        let (output_tx, output) = bounded::<DecodeResult>(capacity);
        let (buffers, buffers_in) = bounded::<Vec<u8>>(capacity * 2);
        let mut threads = Vec::new();
        let mut gate = Gate::new(geometry);
        threads.push(std::thread::spawn(move || {
            for (idx, frame) in (0u64..).zip(frames_in) {
                let admitted = gate.admit(&frame);
                if work
                    .send(DecodeJob {
                        idx,
                        frame,
                        admitted,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }));
        for _ in 0..config.workers.max(1) {
            let (work_in, unpacked_out, buffers_in) =
                (work_in.clone(), unpacked_out.clone(), buffers_in.clone());
            threads.push(std::thread::spawn(move || {
                let mut unpacker = Unpacker::new();
                for job in work_in {
                    let started = crate::clock::now();
                    let mut raw = buffers_in.try_recv().unwrap_or_default();
                    let mut decompressed = false;
                    let admitted = job.admitted.and_then(|a| {
                        decompressed = unpacker.unpack(&a, &job.frame, &mut raw)?;
                        Ok(a)
                    });
                    let done = Unpacked {
                        idx: job.idx,
                        frame: job.frame,
                        admitted,
                        raw,
                        decompressed,
                        nanos: elapsed(started),
                    };
                    if unpacked_out.send(done).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(unpacked_out);
        let recycle = buffers.clone();
        threads.push(std::thread::spawn(move || {
            let mut rebuilder = Rebuilder::new(geometry);
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for item in unpacked_in {
                pending.insert(item.idx, item);
                while let Some(item) = pending.remove(&next) {
                    next += 1;
                    let result = rebuild_one(&mut rebuilder, item, &buffers_in, &recycle);
                    if output_tx.send(result).is_err() {
                        return;
                    }
                }
            }
        }));
        Self {
            input: Some(input),
            output,
            buffers,
            threads,
            submitted: 0,
            returned: 0,
            capacity,
            stats: Stats::default(),
        }
    }

    /// Hands in a frame; when the pipeline is full, first returns the oldest result.
    pub fn submit(&mut self, frame: Vec<u8>) -> Result<Option<DecodedBlock>, DecodeError> {
        let ready = if self.in_flight() >= self.capacity {
            self.next_block()?
        } else {
            None
        };
        let input = self.input.as_ref().ok_or(DecodeError::PipelineStopped)?;
        input
            .send(frame)
            .map_err(|_| DecodeError::PipelineStopped)?;
        self.submitted += 1;
        Ok(ready)
    }

    /// The next result in input order, waiting for it; `None` when none is in flight.
    pub fn next_block(&mut self) -> Result<Option<DecodedBlock>, DecodeError> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        let result = self
            .output
            .recv()
            .map_err(|_| DecodeError::PipelineStopped)?;
        self.returned += 1;
        let (block, stats) = result?;
        self.stats += stats;
        Ok(Some(block))
    }

    /// Gives a data buffer back for reuse once it has been written out.
    pub fn recycle(&self, data: Vec<u8>) {
        let _ = self.buffers.try_send(data);
    }

    /// Counters of the blocks returned so far (time is CPU time summed over threads).
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn in_flight(&self) -> usize {
        (self.submitted - self.returned) as usize
    }
}

/// The rebuild stage for one unpacked frame.
fn rebuild_one(
    rebuilder: &mut Rebuilder,
    item: Unpacked,
    buffers: &Receiver<Vec<u8>>,
    recycle: &Sender<Vec<u8>>,
) -> DecodeResult {
    let admitted = item.admitted?;
    let mut data = buffers.try_recv().unwrap_or_default();
    let mut stats = Stats::default();
    let raw = raw_payload(&admitted.header, &item.frame, &item.raw, item.decompressed);
    let result = rebuilder.rebuild(&admitted.header, raw, &mut data, &mut stats);
    let _ = recycle.try_send(item.raw);
    result?;
    stats.frame_bytes = item.frame.len() as u64;
    stats.total_nanos += item.nanos;
    Ok((
        DecodedBlock {
            info: BlockInfo {
                sequence: admitted.header.sequence,
                first_page: admitted.header.first_page,
            },
            data,
            frame: item.frame,
        },
        stats,
    ))
}

impl Drop for DecodePipeline {
    fn drop(&mut self) {
        self.input = None;
        while self.output.recv().is_ok() {}
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
