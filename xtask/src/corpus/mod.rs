//! `cargo xtask corpus`: real guest-memory images for measuring HDE (issue 5).
//!
//! Builds (or reuses) the test guest of `cargo xtask guest`, boots it under QEMU
//! ([`qemu::ACCEL`]) with `--mem-mib` of RAM (1 GiB by default) and captures, with QMP
//! `pmemsave` while the guest is stopped, raw full-memory images:
//! - `idle-r0.raw`: the `idle` workload, once;
//! - `compress-rN.raw`, `table-rN.raw`: the `compress` and `table` workloads, `--rounds`
//!   images each, `--seconds-apart` seconds of guest running time apart (what a pre-copy
//!   round re-sends);
//! - `table-migration.qemu`: QEMU's own migration stream of the `table` guest after its
//!   rounds (`migrate` to `exec:cat > FILE`, bandwidth unlimited).
//!
//! Everything goes into `<target>/dwcp-cache/corpus/` (or `$DWCP_CACHE_DIR/corpus/`)
//! with `corpus.json` (see [`manifest`]). A second run with unchanged inputs (guest,
//! QEMU version, options, this module) does nothing; `--force` regenerates. Progress goes
//! to standard error. A workload that reports `FAIL` on its console fails the run.

mod manifest;
mod qemu;
mod qmp;

use std::{
    env, fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{guest, sys};
use manifest::{Image, Kind, Manifest};
use qemu::{BootSpec, Guest};

/// The sources of this module: a change to any of them changes the corpus's inputs.
const SOURCES: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("manifest.rs"),
    include_str!("qemu.rs"),
    include_str!("qmp.rs"),
];

/// How long QEMU's migration to a file may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Options of `cargo xtask corpus`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Regenerate even if the corpus is up to date.
    #[arg(long)]
    pub force: bool,
    /// Guest RAM in MiB (each image is this big).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(128..=16384))]
    pub mem_mib: u32,
    /// Memory each workload owns (`dwcp.mem_mib`); default: half the guest's RAM.
    #[arg(long)]
    pub workload_mib: Option<u32>,
    /// Images per workload (`compress` and `table`), round 0 first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Guest running seconds between two rounds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds_apart: f64,
    /// Dirtying rate of the `table` workload, MiB/s.
    #[arg(long, default_value_t = 16)]
    pub rate_mib_s: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            force: false,
            mem_mib: 1024,
            workload_mib: None,
            rounds: 3,
            seconds_apart: 5.0,
            rate_mib_s: 16,
        }
    }
}

/// The folder the corpus is written to.
pub fn corpus_dir(root: &Path) -> PathBuf {
    let cache = env::var_os(guest::CACHE_ENV)
        .map_or_else(|| sys::target_dir(root).join("dwcp-cache"), PathBuf::from);
    cache.join("corpus")
}

/// Makes the corpus unless it is up to date.
pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let workload_mib = opts.workload_mib.unwrap_or(opts.mem_mib / 2);
    ensure!(
        workload_mib >= 1 && workload_mib < opts.mem_mib,
        "--workload-mib must be between 1 and --mem-mib - 1"
    );
    ensure!(
        opts.seconds_apart.is_finite() && (0.0..=600.0).contains(&opts.seconds_apart),
        "--seconds-apart must be between 0 and 600"
    );
    let root = sys::workspace_root()?;
    guest::run(&guest::Options { force: false })?;
    let guest_dir = guest::guest_dir(&root);
    let (guest_fingerprint, guest_kernel) = guest_identity(&guest_dir)?;
    let qemu_version = qemu::version()?;
    let out = corpus_dir(&root);
    eprintln!("==> corpus ({})", out.display());
    let settings = format!(
        "mem={} workload={} rounds={} apart={} rate={} accel={}",
        opts.mem_mib,
        workload_mib,
        opts.rounds,
        opts.seconds_apart,
        opts.rate_mib_s,
        qemu::ACCEL
    );
    let inputs = fingerprint(
        [
            guest_fingerprint.as_bytes(),
            qemu_version.as_bytes(),
            settings.as_bytes(),
        ]
        .into_iter()
        .chain(SOURCES.iter().map(|s| s.as_bytes())),
    );
    if !opts.force
        && let Some(current) = manifest::read(&out)
        && manifest::is_current(&out, &current, &inputs)
    {
        eprintln!(
            "corpus: up to date ({} files, {} MiB guest, made in {:.0} s), nothing to do [{:.1} s]",
            current.images.len(),
            current.mem_mib,
            current.took_seconds,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    // Old files go first: a half-made corpus must never look current.
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("Cannot clear {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("Cannot create {}", out.display()))?;
    let scratch = out.join(".scratch");
    let capture = Capture {
        guest_dir: &guest_dir,
        out: &out,
        scratch: &scratch,
        mem_mib: opts.mem_mib,
        workload_mib,
        rate_mib_s: opts.rate_mib_s,
        seconds_apart: opts.seconds_apart,
    };
    let mut images = capture.workload("idle", 1, false)?;
    images.extend(capture.workload("compress", opts.rounds, false)?);
    images.extend(capture.workload("table", opts.rounds, true)?);
    fs::remove_dir_all(&scratch).ok();
    let took = started.elapsed().as_secs_f64();
    let manifest = Manifest {
        inputs_sha256: inputs,
        guest_fingerprint,
        guest_kernel,
        qemu_version,
        accel: qemu::ACCEL.to_owned(),
        mem_mib: opts.mem_mib,
        workload_mib,
        rate_mib_s: opts.rate_mib_s,
        seconds_apart: opts.seconds_apart,
        images,
        made_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        took_seconds: took,
    };
    manifest::write(&out, &manifest)?;
    let total: u64 = manifest.images.iter().map(|i| i.bytes).sum();
    eprintln!(
        "corpus: {} files, {} MiB, in {} [{took:.1} s]",
        manifest.images.len(),
        total >> 20,
        out.display()
    );
    Ok(())
}

/// The settings of one corpus run.
struct Capture<'a> {
    guest_dir: &'a Path,
    out: &'a Path,
    scratch: &'a Path,
    mem_mib: u32,
    workload_mib: u32,
    rate_mib_s: u32,
    seconds_apart: f64,
}

impl Capture<'_> {
    /// Boots one guest running `workload`, captures `rounds` images (and QEMU's
    /// migration stream after them if `migration`), and stops the guest.
    fn workload(&self, workload: &str, rounds: u32, migration: bool) -> Result<Vec<Image>> {
        let boot_started = Instant::now();
        eprintln!(
            "corpus: booting the guest with workload {workload} ({} MiB)",
            self.mem_mib
        );
        let mut guest = Guest::boot(&BootSpec {
            guest_dir: self.guest_dir,
            mem_mib: self.mem_mib,
            workload,
            workload_mib: self.workload_mib,
            rate_mib_s: self.rate_mib_s,
            scratch: self.scratch,
        })?;
        eprintln!(
            "corpus: {workload} READY after {:.1} s",
            boot_started.elapsed().as_secs_f64()
        );
        let mut images = Vec::new();
        let mut running = 0.0;
        // Let the workload run a little before the first image, as a migration would
        // find it.
        let mut wait = self.seconds_apart;
        for round in 0..rounds {
            thread::sleep(Duration::from_secs_f64(wait));
            running += wait;
            wait = self.seconds_apart;
            let file = format!("{workload}-r{round}.raw");
            let path = self.out.join(&file);
            let took = pmemsave(&mut guest, self.mem_mib, &path)?;
            let bytes = size_of(&path)?;
            ensure!(
                bytes == u64::from(self.mem_mib) << 20,
                "pmemsave wrote {bytes} bytes to {}, not {} MiB",
                path.display(),
                self.mem_mib
            );
            eprintln!("corpus: {file} ({} MiB, {took:.1} s)", bytes >> 20);
            images.push(Image {
                file,
                bytes,
                kind: Kind::Memory,
                workload: workload.to_owned(),
                round,
                previous: images.last().map(|i: &Image| i.file.clone()),
                seconds_after_ready: running,
            });
        }
        if migration {
            images.push(self.migrate(&mut guest, workload, running)?);
        }
        let failures = guest.failures();
        if !failures.is_empty() {
            bail!(
                "The {workload} workload failed in the guest: {}",
                failures.join(" | ")
            );
        }
        Ok(images)
    }

    /// QEMU's own migration stream of the running guest, written to a file.
    fn migrate(&self, guest: &mut Guest, workload: &str, running: f64) -> Result<Image> {
        let file = format!("{workload}-migration.qemu");
        let path = self.out.join(&file);
        let started = Instant::now();
        // QEMU 7.2 caps migration at 128 MiB/s unless told otherwise.
        guest.qmp.execute(
            "migrate-set-parameters",
            json!({"max-bandwidth": 64u64 << 30}),
        )?;
        guest.qmp.execute(
            "migrate",
            json!({"uri": format!("exec:cat > '{}'", path.display())}),
        )?;
        let info = guest.qmp.wait_migration(MIGRATION_TIMEOUT)?;
        let bytes = size_of(&path)?;
        ensure!(
            bytes > 0,
            "QEMU's migration wrote nothing to {}",
            path.display()
        );
        eprintln!(
            "corpus: {file} ({} MiB, {:.1} s, downtime {} ms)",
            bytes >> 20,
            started.elapsed().as_secs_f64(),
            info.get("downtime")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        );
        Ok(Image {
            file,
            bytes,
            kind: Kind::Migration,
            workload: workload.to_owned(),
            round: 0,
            previous: None,
            seconds_after_ready: running,
        })
    }
}

/// Stops the guest, writes its whole RAM to `path` and lets it run again; returns the
/// seconds it took.
fn pmemsave(guest: &mut Guest, mem_mib: u32, path: &Path) -> Result<f64> {
    let started = Instant::now();
    guest.qmp.execute("stop", json!({}))?;
    let saved = guest.qmp.execute(
        "pmemsave",
        json!({"val": 0, "size": u64::from(mem_mib) << 20, "filename": path.display().to_string()}),
    );
    // Resume even when the save failed, so that the guard's kill is the only teardown.
    guest.qmp.execute("cont", json!({}))?;
    saved?;
    Ok(started.elapsed().as_secs_f64())
}

fn size_of(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("QEMU wrote no {}", path.display()))?
        .len())
}

/// The guest's input fingerprint and kernel release, from its `guest.json`.
fn guest_identity(guest_dir: &Path) -> Result<(String, String)> {
    let path = guest_dir.join("guest.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("Cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let field = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    let fingerprint = field(&json["inputs_sha256"])
        .with_context(|| format!("{} has no inputs_sha256", path.display()))?;
    let release = field(&json["kernel"]["release"]).unwrap_or_default();
    Ok((fingerprint, release))
}

/// SHA-256 over length-prefixed parts, hex.
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        let too_much = Options {
            workload_mib: Some(1024),
            ..Options::default()
        };
        let err = run(&too_much).unwrap_err().to_string();
        assert!(err.starts_with("--workload-mib must be"), "{err}");
        let negative = Options {
            seconds_apart: -1.0,
            ..Options::default()
        };
        let err = run(&negative).unwrap_err().to_string();
        assert!(err.starts_with("--seconds-apart must be"), "{err}");
    }

    #[test]
    fn the_fingerprint_separates_its_parts() {
        let a = fingerprint([b"ab".as_slice(), b"c".as_slice()]);
        let b = fingerprint([b"a".as_slice(), b"bc".as_slice()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }
}
