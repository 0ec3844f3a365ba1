//! The encoder's parallel stage: turns a [`Plan`] and its data into a frame (deltas,
//! payload layout, zstd, checksum, header). Holds no stream state, so any worker can
//! pack any block.

use xxhash_rust::xxh3::xxh3_64;

use crate::{
    classify::{EncodeError, KIND_CANDIDATE, Plan},
    clock::elapsed,
    delta,
    frame::{FLAG_DICT_INLINE, FLAG_USES_DICT, FLAG_ZSTD, Header},
    page::PAGE_SIZE,
    payload::{KIND_DELTA, KIND_LITERAL},
    stats::{LevelStats, Stats},
};

/// A delta longer than this is sent as a literal page instead.
pub const DELTA_LIMIT: usize = PAGE_SIZE / 2;

/// A worker's reusable state: zstd context and scratch buffers.
pub struct Packer {
    compressor: Option<(zstd::bulk::Compressor<'static>, i32, u32)>,
    raw: Vec<u8>,
    packed: Vec<u8>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").finish_non_exhaustive()
    }
}

impl Default for Packer {
    fn default() -> Self {
        Self::new()
    }
}

impl Packer {
    /// A packer with empty buffers (they grow to one block and stay).
    #[must_use]
    pub fn new() -> Self {
        Self {
            compressor: None,
            raw: Vec::new(),
            packed: Vec::new(),
        }
    }

    /// Writes the frame of `plan` + `data` into `out` (cleared first); returns the
    /// block's counters (the plan's merged with this stage's).
    pub fn pack(
        &mut self,
        plan: &Plan,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Stats, EncodeError> {
        let started = crate::clock::now();
        let mut stats = plan.stats;
        let pages = plan.kinds.len();
        let page_at = |i: usize| &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
        let raw = &mut self.raw;
        raw.clear();
        raw.extend_from_slice(&plan.kinds);
        raw.extend_from_slice(&plan.refs);

        let delta_started = crate::clock::now();
        let mut bases = plan.bases.as_chunks::<PAGE_SIZE>().0.iter();
        for i in 0..pages {
            if raw[i] != KIND_CANDIDATE {
                continue;
            }
            let base = bases.next().ok_or(EncodeError::PipelineStopped)?;
            let at = raw.len();
            raw.extend_from_slice(&[0, 0]);
            if delta::encode(&base[..], page_at(i), DELTA_LIMIT, raw) {
                let len = (raw.len() - at - 2) as u16;
                raw[at..at + 2].copy_from_slice(&len.to_le_bytes());
                raw[i] = KIND_DELTA;
                stats.delta.pages += 1;
                stats.delta.output_bytes += 3 + u64::from(len);
            } else {
                raw.truncate(at);
                raw[i] = KIND_LITERAL;
            }
        }
        stats.delta.nanos += elapsed(delta_started);

        let literal_started = crate::clock::now();
        for i in 0..pages {
            if raw[i] == KIND_LITERAL {
                raw.extend_from_slice(page_at(i));
                stats.literal.pages += 1;
            }
        }
        let tail = &data[pages * PAGE_SIZE..];
        raw.extend_from_slice(tail);
        stats.literal.nanos += elapsed(literal_started);
        finish_counts(&mut stats, tail.len());

        let mut flags = 0;
        let mut level = 0i8;
        let mut payload: &[u8] = raw;
        if let Some(zstd_level) = plan.zstd_level {
            let zstd_started = crate::clock::now();
            let dict_id = plan.dict.as_ref().map_or(0, |d| d.id);
            if compressor_for(&mut self.compressor, zstd_level, plan).is_some() {
                self.packed.clear();
                // Room for the worst case, so zstd never fails for lack of space (a failed
                // call would leave the context mid-frame and refuse the next dictionary).
                self.packed
                    .reserve(zstd::zstd_safe::compress_bound(raw.len()));
                let compressed = self.compressor.as_mut().map(|(c, _, _)| {
                    let result = c.compress_to_buffer(raw.as_slice(), &mut self.packed);
                    if result.is_err() {
                        let _ = c
                            .context_mut()
                            .reset(zstd::zstd_safe::ResetDirective::SessionOnly);
                    }
                    result
                });
                if matches!(compressed, Some(Ok(n)) if n < raw.len()) {
                    payload = &self.packed;
                    flags |= FLAG_ZSTD;
                    level = i8::try_from(zstd_level).unwrap_or(i8::MAX);
                    if dict_id != 0 {
                        flags |= FLAG_USES_DICT;
                    }
                } else {
                    stats.incompressible_blocks += 1;
                }
            }
            stats.zstd = LevelStats {
                pages: pages as u64,
                input_bytes: raw.len() as u64,
                output_bytes: payload.len() as u64,
                nanos: elapsed(zstd_started),
            };
        }
        let inline = plan.dict_inline;
        let dict_bytes: &[u8] = match (&plan.dict, inline) {
            (Some(dict), true) => {
                flags |= FLAG_DICT_INLINE;
                &dict.bytes
            }
            _ => &[],
        };
        let header = Header {
            flags,
            zstd_level: level,
            sequence: plan.sequence,
            first_page: plan.first_page,
            data_len: data.len() as u32,
            index_slots: plan.geometry.0,
            history_slots: plan.geometry.1,
            dict_id: if flags & (FLAG_USES_DICT | FLAG_DICT_INLINE) != 0 {
                plan.dict.as_ref().map_or(0, |d| d.id)
            } else {
                0
            },
            dict_len: dict_bytes.len() as u32,
            stored_len: payload.len() as u32,
            raw_len: raw.len() as u32,
            checksum: xxh3_64(data),
        };
        out.clear();
        out.reserve(crate::frame::HEADER_LEN + dict_bytes.len() + payload.len());
        header.write(out);
        out.extend_from_slice(dict_bytes);
        out.extend_from_slice(payload);
        stats.blocks = 1;
        stats.data_bytes = data.len() as u64;
        stats.frame_bytes = out.len() as u64;
        stats.total_nanos += elapsed(started);
        Ok(stats)
    }
}

/// Sets `compressor` to `level` and the plan's dictionary (None if zstd refuses).
fn compressor_for(
    compressor: &mut Option<(zstd::bulk::Compressor<'static>, i32, u32)>,
    level: i32,
    plan: &Plan,
) -> Option<()> {
    let dict_id = plan.dict.as_ref().map_or(0, |d| d.id);
    let dict: &[u8] = plan.dict.as_ref().map_or(&[], |d| &d.bytes);
    match compressor {
        Some((_, l, d)) if *l == level && *d == dict_id => {}
        Some((c, l, d)) => {
            c.set_dictionary(level, dict).ok()?;
            *l = level;
            *d = dict_id;
        }
        None => {
            let c = zstd::bulk::Compressor::with_dictionary(level, dict).ok()?;
            *compressor = Some((c, level, dict_id));
        }
    }
    Some(())
}

/// Fills input/output bytes of the page levels from their page counts.
fn finish_counts(stats: &mut Stats, tail: usize) {
    let page = PAGE_SIZE as u64;
    stats.zero.input_bytes = stats.zero.pages * page;
    stats.zero.output_bytes = stats.zero.pages;
    stats.duplicate.input_bytes = stats.duplicate.pages * page;
    stats.duplicate.output_bytes = stats.duplicate.pages * 5;
    stats.unchanged.input_bytes = stats.unchanged.pages * page;
    stats.unchanged.output_bytes = stats.unchanged.pages;
    stats.delta.input_bytes = stats.delta.pages * page;
    stats.literal.input_bytes = stats.literal.pages * page + tail as u64;
    stats.literal.output_bytes = stats.literal.pages * (page + 1) + tail as u64;
}
