//! Loads the kernel programs, attaches them to their tracepoints and reads their maps.
//!
//! [`Probes`] owns the loaded object: dropping it detaches every program and frees every
//! map, so nothing of the agent stays in the kernel after it stops. Reading is pull-based
//! ([`Probes::flows`], [`Probes::threads`], [`Probes::programs`]); the caller decides how
//! often (the daemon drains on a timer and on each scrape).

mod flows;
mod offsets;
mod programs;
mod threads;
pub mod tracefs;

use std::os::fd::OwnedFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{ProgramError, TracePoint},
};
use dwcp_common::names;

pub use flows::Flow;
pub use programs::ProgramRunStats;
pub use threads::ThreadSample;

/// Errors of loading, attaching and reading the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// tracefs is needed to attach tracepoints and to read their formats.
    #[error("Tracefs unavailable: {0}")]
    TracefsUnavailable(String),
    /// A tracepoint's record format lacks a field the programs read, or it has another size.
    #[error("Unexpected format of tracepoint {tracepoint}: {reason}")]
    Format {
        /// `category:name`.
        tracepoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused to create the maps or load the object (often: no privileges).
    #[error("Loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    /// A program is missing from the object or could not be loaded or attached.
    #[error("Program {program} failed")]
    Program {
        /// Program name.
        program: &'static str,
        /// Underlying error.
        #[source]
        source: ProgramError,
    },
    /// The object lacks a program the agent expects (object and agent out of step).
    #[error("Program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    /// A map is missing from the object or has an unexpected type.
    #[error("Map {map} unavailable")]
    Map {
        /// Map name.
        map: &'static str,
        /// Underlying error.
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded and attached programs with their maps.
pub struct Probes {
    ebpf: Ebpf,
    /// Keeps the kernel's BPF run-time statistics enabled while held (`None` when the
    /// kernel refused; run times then read as zero unless the sysctl is on).
    _stats: Option<OwnedFd>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").finish_non_exhaustive()
    }
}

/// The compiled kernel object, built by build.rs from `dwcp-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dwcp"));

impl Probes {
    /// Loads the programs, measuring the processes in `track` (thread group ids), and
    /// attaches them. Needs CAP_BPF, CAP_PERFMON and (for run-time statistics and
    /// mounting tracefs) CAP_SYS_ADMIN.
    pub fn load(track: &[u32]) -> Result<Self, ProbeError> {
        let root = tracefs::root()?;
        let offsets = offsets::discover(&root)?;
        let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                tracing::warn!(error = %err, "Kernel BPF run-time statistics unavailable");
                None
            }
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(names::GLOBAL_OFFSETS, &offsets, true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        for &tgid in track {
            Self::track_in(&mut ebpf, tgid)?;
        }
        for (program, category, name) in names::TRACEPOINTS {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram(program))?
                .try_into()
                .map_err(|source| ProbeError::Program { program, source })?;
            prog.load()
                .map_err(|source| ProbeError::Program { program, source })?;
            prog.attach(category, name)
                .map_err(|source| ProbeError::Program { program, source })?;
        }
        Ok(Self {
            ebpf,
            _stats: stats,
        })
    }

    /// Adds a process (thread group id) to the measured set.
    pub fn track(&mut self, tgid: u32) -> Result<(), ProbeError> {
        Self::track_in(&mut self.ebpf, tgid)
    }

    fn track_in(ebpf: &mut Ebpf, tgid: u32) -> Result<(), ProbeError> {
        let map_err = |source| ProbeError::Map {
            map: names::MAP_TRACKED,
            source,
        };
        let map = ebpf.map_mut(names::MAP_TRACKED).ok_or(ProbeError::Map {
            map: names::MAP_TRACKED,
            source: aya::maps::MapError::InvalidName {
                name: names::MAP_TRACKED.into(),
            },
        })?;
        let mut tracked: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(map).map_err(map_err)?;
        tracked.insert(&tgid, &1, 0).map_err(map_err)
    }

    /// Kernel ids of the loaded programs (to check from outside that they are gone).
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, prog)| prog.info().ok().map(|info| info.id()))
            .collect()
    }

    /// All flows of the tracked processes, per-CPU slots merged.
    pub fn flows(&self) -> Result<Vec<Flow>, ProbeError> {
        flows::read(&self.ebpf)
    }

    /// On-CPU time of every thread of the tracked processes seen leaving a CPU.
    pub fn threads(&self) -> Result<Vec<ThreadSample>, ProbeError> {
        threads::read(&self.ebpf)
    }

    /// Cumulative run time and run count of each program, from the kernel.
    pub fn programs(&self) -> Vec<ProgramRunStats> {
        programs::read(&self.ebpf)
    }
}

/// Finds a map by name, with the error naming it.
fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::Map {
        map: name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })
}
