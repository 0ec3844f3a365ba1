//! The engine shared by the `dirty` and `table` workloads: rewrite random units of a
//! [`Store`] at a fixed rate, re-check every unit over and over, and report once a second.
//!
//! Writing and checking run on one thread, one after the other, so a check never sees a
//! half-written unit: any mismatch is memory that changed behind the workload's back.

use std::{
    fmt,
    time::{Duration, Instant},
};

use crate::PAGE_SIZE;

/// Units checked between two looks at the clock.
const VERIFY_BATCH: usize = 64;
/// Most units rewritten between two looks at the clock: when the CPU cannot keep up with
/// the rate (a slow emulator), the workload falls behind it rather than stop checking and
/// reporting; the `dirtied` figure tells what was really written.
const DIRTY_BATCH: u64 = 256;

/// Memory made of units that can be rewritten and checked one at a time.
pub trait Store {
    /// How many units there are.
    fn units(&self) -> usize;
    /// Bytes in one unit.
    fn unit_bytes(&self) -> usize;
    /// Rewrites unit `unit` with the content of its next generation.
    fn dirty(&mut self, unit: usize);
    /// Checks unit `unit` against the content of the generation it was last written with.
    fn check(&self, unit: usize) -> Result<(), Mismatch>;
}

/// A unit whose content is not what its last write put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The unit.
    pub unit: usize,
    /// The generation the unit was last written with.
    pub expected_gen: u32,
    /// The generation the unit's header claims, if it has a valid header.
    pub found_gen: Option<u32>,
    /// The first differing 64-bit word within the unit.
    pub word: usize,
}

/// Drives a [`Store`]: dirties units in a pseudo-random order and checks them in passes.
#[derive(Debug)]
pub struct Engine<S> {
    /// The memory.
    store: S,
    /// xorshift64 state choosing the units to dirty.
    rng: u64,
    /// Units rewritten so far.
    dirtied: u64,
    /// The next unit to check.
    cursor: usize,
    /// Completed check passes over all units.
    passes: u64,
    /// Mismatches found so far.
    failures: u64,
    /// The most recent mismatch.
    last_failure: Option<Mismatch>,
}

impl<S: Store> Engine<S> {
    /// An engine over `store`, choosing units from the non-zero `seed`.
    pub fn new(store: S, seed: u64) -> Self {
        Self {
            store,
            rng: seed | 1,
            dirtied: 0,
            cursor: 0,
            passes: 0,
            failures: 0,
            last_failure: None,
        }
    }

    /// The memory, e.g. to damage it in a test.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Rewrites `count` pseudo-randomly chosen units.
    pub fn dirty(&mut self, count: u64) {
        let units = self.store.units() as u64;
        for _ in 0..count {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let unit = usize::try_from(self.rng % units).unwrap_or(0);
            self.store.dirty(unit);
            self.dirtied += 1;
        }
    }

    /// Checks the next `count` units, wrapping around (and counting a pass) at the end.
    pub fn verify(&mut self, count: usize) {
        for _ in 0..count {
            if let Err(mismatch) = self.store.check(self.cursor) {
                self.failures += 1;
                self.last_failure = Some(mismatch);
            }
            self.cursor += 1;
            if self.cursor == self.store.units() {
                self.cursor = 0;
                self.passes += 1;
            }
        }
    }

    /// The figures of the report line.
    pub fn status(&self) -> Status {
        let unit = self.store.unit_bytes() as u64;
        let pages = |units: u64| units * unit / PAGE_SIZE as u64;
        Status {
            passes: self.passes,
            pages: pages(self.store.units() as u64),
            dirtied: pages(self.dirtied),
            failures: self.failures,
            last_failure: self.last_failure.map(|m| (pages(m.unit as u64), m)),
        }
    }

    /// Dirties at `rate_bytes_per_s` and checks without pause, handing `report` the
    /// status once a second; never returns.
    pub fn run(mut self, rate_bytes_per_s: u64, mut report: impl FnMut(&Status)) -> ! {
        let units_per_s = rate_bytes_per_s as f64 / self.store.unit_bytes() as f64;
        let start = Instant::now();
        let mut next_report = Duration::from_secs(1);
        loop {
            let elapsed = start.elapsed();
            // Truncation is intended: whole units due so far.
            let due = (units_per_s * elapsed.as_secs_f64()) as u64;
            self.dirty(due.saturating_sub(self.dirtied).min(DIRTY_BATCH));
            self.verify(VERIFY_BATCH.min(self.store.units()));
            if elapsed >= next_report {
                report(&self.status());
                next_report = (next_report + Duration::from_secs(1)).max(elapsed);
            }
        }
    }
}

/// What a `DWCP-VERIFY` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Completed passes over all units.
    pub passes: u64,
    /// Size of the checked memory in 4 KiB pages.
    pub pages: u64,
    /// Bytes rewritten so far, in 4 KiB pages.
    pub dirtied: u64,
    /// Mismatches found so far.
    pub failures: u64,
    /// The latest mismatch, with the 4 KiB page (of the checked memory) it starts in.
    pub last_failure: Option<(u64, Mismatch)>,
}

impl fmt::Display for Status {
    /// `DWCP-VERIFY ok pass=<k> pages=<p> dirtied=<d>` while nothing was ever wrong,
    /// afterwards `DWCP-VERIFY FAIL page=<i> expected_gen=<g> found_gen=<f|none>
    /// word=<w> failures=<n> pass=<k> pages=<p> dirtied=<d>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = format!(
            "pass={} pages={} dirtied={}",
            self.passes, self.pages, self.dirtied
        );
        match self.last_failure {
            None => write!(f, "DWCP-VERIFY ok {tail}"),
            Some((page, m)) => {
                let found = m
                    .found_gen
                    .map_or_else(|| "none".to_owned(), |g| g.to_string());
                write!(
                    f,
                    "DWCP-VERIFY FAIL page={page} expected_gen={} found_gen={found} word={} \
                     failures={} {tail}",
                    m.expected_gen, m.word, self.failures
                )
            }
        }
    }
}
