//! HDE, hierarchical delta encoding: a block codec for guest memory and disk images.
//!
//! Migration sends guest memory in rounds: everything first, then the pages dirtied
//! since. Many pages are zero, many repeat, and a re-sent page often differs little from
//! the version sent before. HDE codes each block of pages with four levels, each of
//! which can be switched on its own ([`Levels`]):
//!
//! - **L0** zero pages cost one kind byte ([`page::is_zero`]).
//! - **L1** a page equal to one of the last `index_slots` unique pages is sent as that
//!   slot's number ([`index`]).
//! - **L2** a page whose previous version the receiver holds (the last `history_slots`
//!   page indices seen) is sent as "unchanged" or as an XOR run-length delta ([`history`],
//!   [`delta`]).
//! - **L3** the block's payload is compressed with zstd (optionally with a dictionary
//!   trained on the first literal pages and shipped inline, off by default: see
//!   [`HdeConfig::dict_sample_pages`]); a payload zstd does not shrink is stored.
//!
//! # Determinism
//!
//! Sender and receiver evolve the L1 index and L2 history identically, with no message:
//! both update them in block order and, within a block, in page order, by rules that
//! depend only on the page kinds in the frame. Encoding is split into a sequential
//! [`classify`] stage (zero test, xxh3 hash, index and history updates: cheap) and a
//! [`pack`] stage (deltas, zstd, checksum: the expensive part) that any worker can run;
//! decoding into a sequential gate (order, geometry, dictionary), parallel zstd
//! decompression, and a sequential [`rebuild`] stage. The encoder confirms every hash hit
//! by comparing the full page, so a collision cannot produce a wrong reference.
//!
//! State rules (per full page, in order), on both sides:
//! - kinds are decided in the order zero (L0), unchanged (L2), duplicate (L1), delta or
//!   literal;
//! - index: a page of kind literal or delta is stored in the next ring slot;
//! - history: once every page of the block is decided (encoder) or rebuilt (decoder),
//!   every page of any kind but unchanged is recorded, in page order, as its index's
//!   version (a new index takes the next ring slot, evicting the index that held it; a
//!   zero page is held as "zero" without a slot); so
//!   all lookups within a block see the history as it was before the block.
//!
//! # Frame format (version 1)
//!
//! One frame per block; all integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `HDEB` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | flags: 1 = payload is zstd, 2 = zstd uses the dictionary, 4 = dictionary inline |
//! | 6 | 1 | zstd level used (i8; informational) |
//! | 7 | 1 | reserved (0) |
//! | 8 | 8 | sequence number (0, 1, 2, … in encoding order) |
//! | 16 | 8 | page index of the block's first byte |
//! | 24 | 4 | data length (decoded bytes, ≤ 64 MiB; a partial last page is allowed) |
//! | 28 | 4 | encoder's index slots |
//! | 32 | 4 | encoder's history slots |
//! | 36 | 4 | dictionary id (0: none) |
//! | 40 | 4 | inline dictionary length |
//! | 44 | 4 | stored payload length |
//! | 48 | 4 | raw payload length (after decompression) |
//! | 52 | 8 | xxh3-64 of the decoded data |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//! | 64 | | inline dictionary, then the payload |
//!
//! The raw payload (see [`payload`]) is `kinds[n] | refs | deltas | literals`: one kind
//! byte per full page (0 zero, 1 literal, 2 duplicate, 3 delta, 4 unchanged), a u32 slot
//! per duplicate, a u16 length and the delta per delta page, then 4096 bytes per literal
//! page and the partial tail. The decoder checks the header CRC, every length against its
//! limits and against the frame size, the sections against the payload, every slot and
//! history reference against what it holds, and finally the decoded data against the
//! checksum. It never panics on any input; refused frames give a [`DecodeError`].
//!
//! # Using it in a block transport
//!
//! The sender keeps one [`Encoder`] (or [`EncodePipeline`]) per transfer and feeds it
//! blocks in order (`first_page = offset / 4096`); the receiver keeps a [`Decoder`] (or
//! [`DecodePipeline`]) built from the same [`HdeConfig`] and feeds it the frames in the
//! same order (a multi-stream transport reorders by sequence number before decoding).

pub mod adaptive;
pub mod classify;
pub mod clock;
pub mod codec;
pub mod config;
pub mod delta;
pub mod dict;
pub mod error;
pub mod frame;
pub mod fuzz_input;
pub mod history;
pub mod index;
pub mod pack;
pub mod page;
pub mod payload;
pub mod pipeline;
pub mod rebuild;
pub mod ring;
pub mod stats;
pub mod survey;
pub mod unpack;

pub use adaptive::{Choice, CodecOption, choose};
pub use classify::EncodeError;
pub use codec::{BlockInfo, Decoder, Encoder};
pub use config::{HdeConfig, Levels};
pub use error::DecodeError;
pub use page::PAGE_SIZE;
pub use pipeline::{DecodePipeline, DecodedBlock, EncodePipeline, EncodedBlock};
pub use stats::{LevelStats, Stats};
