//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` for a bounded time each, with
//! the eBPF nightly (cargo-fuzz needs a nightly; that one is pinned and installed anyway).
//! `cargo xtask test` runs the same after nextest.
//!
//! The targets are those `cargo fuzz list` shows, so a new file in `fuzz/fuzz_targets/`
//! (declared in `fuzz/Cargo.toml`) is fuzzed without touching this module. Each target's
//! corpus is `fuzz/corpus/<target>/` (not committed: it grows with every run), started
//! from the committed seeds in `fuzz/seeds/<target>/`; `fuzz/dict/<target>.dict` is
//! passed as a libFuzzer dictionary when it exists. A crash, a hang (one input running
//! longer than [`INPUT_TIMEOUT_SECONDS`]) or running out of memory fails the target; every
//! target runs anyway, and the failing ones are listed with the reproducers libFuzzer
//! saved under `fuzz/artifacts/<target>/`.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, setup, sys, toolchain::Toolchain};

/// Seconds each target is fuzzed for unless told otherwise.
pub const DEFAULT_SECONDS: u64 = 20;

/// Seconds one input may run before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Do not run `cargo xtask setup` first.
    #[arg(long)]
    pub no_setup: bool,
    /// Fuzz only this target (default: every target `cargo fuzz list` shows).
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
    /// Seconds of fuzzing per target; 0 skips fuzzing.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
    /// The cargo-fuzz project (default: `fuzz/` at the workspace root).
    #[arg(long, value_name = "DIR")]
    pub fuzz_dir: Option<PathBuf>,
}

/// Runs setup (unless disabled), then fuzzes the chosen targets.
pub fn run(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        setup::run(&setup::Options::default())?;
    }
    let root = sys::workspace_root()?;
    Project::new(&root, opts.fuzz_dir.as_deref())?.fuzz(opts.target.as_deref(), opts.seconds)
}

/// A cargo-fuzz project and the nightly that builds it.
#[derive(Debug)]
pub struct Project {
    /// The workspace root, where cargo runs.
    root: PathBuf,
    /// The cargo-fuzz project directory (absolute).
    dir: PathBuf,
    /// The nightly cargo-fuzz builds with.
    nightly: Toolchain,
}

/// What libFuzzer reported about one target's run.
#[derive(Debug, Default)]
struct Outcome {
    /// Inputs executed (`stat::number_of_executed_units`).
    runs: Option<u64>,
    /// Average executions per second (`stat::average_exec_per_sec`).
    per_second: Option<u64>,
    /// Inputs added to the corpus (`stat::new_units_added`).
    new_units: Option<u64>,
    /// Files libFuzzer says it wrote (crash, timeout, leak, slow-unit reproducers).
    written: Vec<PathBuf>,
}

impl Project {
    /// The project in `dir` (default `<root>/fuzz`), built with the eBPF nightly.
    pub fn new(root: &Path, dir: Option<&Path>) -> Result<Self> {
        let dir = dir.map_or_else(|| root.join("fuzz"), Path::to_path_buf);
        let dir = dir
            .canonicalize()
            .with_context(|| format!("Cannot find the fuzz project {}", dir.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            dir,
            nightly: Toolchain::ebpf(root)?,
        })
    }

    /// Builds every target, then fuzzes `only` (or every target) for `seconds` each;
    /// fails if any target found something. `seconds == 0` skips with a note.
    pub fn fuzz(&self, only: Option<&str>, seconds: u64) -> Result<()> {
        if seconds == 0 {
            println!("fuzz: skipped (0 seconds per target)");
            return Ok(());
        }
        let all = self.targets()?;
        let targets = match only {
            Some(target) => {
                ensure!(
                    all.iter().any(|t| t == target),
                    "No fuzz target `{target}` in {}; there are: {}",
                    self.dir.display(),
                    all.join(", ")
                );
                vec![target.to_owned()]
            }
            None => all,
        };
        cmd::run(&mut self.cargo_fuzz("build", &[]))?;
        // The helpers' own tests, among them that the committed seeds still speak this
        // build's protocol.
        let plus = self.nightly.plus();
        let manifest = self.dir.join("Cargo.toml");
        let mut helpers = cmd::cargo(&self.root, [plus.as_str(), "test", "--lib"]);
        helpers.arg("--manifest-path").arg(&manifest);
        cmd::run(&mut helpers)?;
        let mut failed = Vec::new();
        let mut summary = Vec::new();
        for target in &targets {
            let started = Instant::now();
            let result = self.run_target(target, seconds);
            let took = started.elapsed().as_secs();
            match result {
                Ok(outcome) => summary.push(format!("{target}: ok, {}", outcome.stats(took))),
                Err(err) => {
                    eprintln!("error: fuzz target {target}: {err:#}");
                    summary.push(format!("{target}: FAILED ({took} s)"));
                    failed.push(target.as_str());
                }
            }
        }
        for line in &summary {
            println!("fuzz: {line}");
        }
        if !failed.is_empty() {
            bail!("Fuzzing found problems in: {}", failed.join(", "));
        }
        Ok(())
    }

    /// The targets `cargo fuzz list` shows.
    fn targets(&self) -> Result<Vec<String>> {
        let list = cmd::output(&mut self.cargo_fuzz("list", &[]))?;
        let targets: Vec<String> = list.lines().map(str::trim).map(str::to_owned).collect();
        ensure!(
            !targets.is_empty(),
            "No fuzz targets in {}",
            self.dir.display()
        );
        Ok(targets)
    }

    /// Fuzzes one target for `seconds`; on failure names the reproducers.
    fn run_target(&self, target: &str, seconds: u64) -> Result<Outcome> {
        let corpus = self.dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)
            .with_context(|| format!("Cannot create {}", corpus.display()))?;
        let mut corpora = vec![corpus];
        let seeds = self.dir.join("seeds").join(target);
        if seeds.is_dir() {
            corpora.push(seeds);
        }
        let artifacts = self.dir.join("artifacts").join(target);
        let before = files_in(&artifacts);
        let mut args: Vec<String> = vec![target.to_owned()];
        args.extend(corpora.iter().map(|c| c.display().to_string()));
        args.push("--".to_owned());
        args.push(format!("-max_total_time={seconds}"));
        args.push(format!("-timeout={INPUT_TIMEOUT_SECONDS}"));
        args.push("-print_final_stats=1".to_owned());
        let dict = self.dir.join("dict").join(format!("{target}.dict"));
        if dict.is_file() {
            args.push(format!("-dict={}", dict.display()));
        }
        println!("==> fuzz {target} ({seconds} s)");
        let mut command = self.cargo_fuzz("run", &args);
        let (status, mut outcome) = run_filtered(&mut command)?;
        for file in files_in(&artifacts).difference(&before) {
            if !outcome.written.contains(file) {
                outcome.written.push(file.clone());
            }
        }
        if status.success() {
            for file in &outcome.written {
                sys::warn(format!(
                    "{target}: libFuzzer wrote {} (a slow input?)",
                    file.display()
                ));
            }
            return Ok(outcome);
        }
        if outcome.written.is_empty() {
            bail!("`cargo fuzz run {target}` failed ({status}) without saving a reproducer");
        }
        let plus = self.nightly.plus();
        let dir = self.dir.display();
        for file in &outcome.written {
            eprintln!(
                "reproducer: {}\n  re-run it: cargo {plus} fuzz run --fuzz-dir {dir} {target} {}",
                file.display(),
                file.display()
            );
        }
        bail!(
            "libFuzzer stopped ({status}); reproducer(s): {}",
            outcome
                .written
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// `cargo +<nightly> fuzz <sub> --fuzz-dir <dir> <args>`, run from the workspace root.
    fn cargo_fuzz(&self, sub: &str, args: &[String]) -> std::process::Command {
        let plus = self.nightly.plus();
        let mut command = cmd::cargo(&self.root, [plus.as_str(), "fuzz", sub, "--fuzz-dir"]);
        command.arg(&self.dir).args(args);
        command
    }
}

impl Outcome {
    /// One-line statistics for the summary.
    fn stats(&self, took: u64) -> String {
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!(
            "{took} s, {} runs ({} exec/s), {} new corpus inputs, nothing found",
            show(self.runs),
            show(self.per_second),
            show(self.new_units)
        )
    }

    /// Takes note of what one line of libFuzzer's output says.
    fn note(&mut self, line: &str) {
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            self.written.push(PathBuf::from(path.trim()));
        }
        let Some(stat) = line.strip_prefix("stat::") else {
            return;
        };
        let Some((name, value)) = stat.split_once(':') else {
            return;
        };
        let value = value.trim().parse().ok();
        match name {
            "number_of_executed_units" => self.runs = value,
            "average_exec_per_sec" => self.per_second = value,
            "new_units_added" => self.new_units = value,
            _ => {}
        }
    }
}

/// Runs `command` (echoed first) with its standard error filtered: libFuzzer's progress
/// lines (`#123 NEW ...`, `REDUCE`, `pulse`) are dropped so that a CI log stays readable;
/// everything else, crash reports included, is passed through.
fn run_filtered(
    command: &mut std::process::Command,
) -> Result<(std::process::ExitStatus, Outcome)> {
    let line = cmd::display(command);
    println!("$ {line}");
    let mut child = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("Cannot start `{line}`"))?;
    let mut outcome = Outcome::default();
    if let Some(stderr) = child.stderr.take() {
        for text in BufReader::new(stderr).lines() {
            let text = text.with_context(|| format!("Cannot read the output of `{line}`"))?;
            outcome.note(&text);
            if !is_progress(&text) {
                eprintln!("{text}");
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("Cannot wait for `{line}`"))?;
    Ok((status, outcome))
}

/// Whether `line` is one of libFuzzer's per-input progress lines.
fn is_progress(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let mut words = rest.split_whitespace();
    let numbered = words
        .next()
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
    numbered && matches!(words.next(), Some("NEW" | "REDUCE" | "pulse" | "RELOAD"))
}

/// The files directly in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_recognised() {
        assert!(is_progress(
            "#1024\tNEW    cov: 120 ft: 200 corp: 12/300b lim: 4 exec/s: 0 rss: 40Mb"
        ));
        assert!(is_progress("#65536\tpulse  cov: 120 ft: 200 corp: 12/300b"));
        assert!(!is_progress(
            "#2\tINITED cov: 80 ft: 81 corp: 1/1b exec/s: 0 rss: 38Mb"
        ));
        assert!(!is_progress(
            "#1000000\tDONE   cov: 120 ft: 200 corp: 12/300b"
        ));
        assert!(!is_progress("==123== ERROR: libFuzzer: deadly signal"));
    }

    #[test]
    fn final_stats_and_reproducers_are_noted() {
        let mut outcome = Outcome::default();
        for line in [
            "stat::number_of_executed_units: 1234567",
            "stat::average_exec_per_sec:     61728",
            "stat::new_units_added:          42",
            "stat::peak_rss_mb:              50",
            "artifact_prefix='/w/fuzz/artifacts/t/'; Test unit written to \
             /w/fuzz/artifacts/t/crash-da39a3ee",
        ] {
            outcome.note(line);
        }
        assert_eq!(outcome.runs, Some(1_234_567));
        assert_eq!(outcome.per_second, Some(61_728));
        assert_eq!(outcome.new_units, Some(42));
        assert_eq!(
            outcome.written,
            vec![PathBuf::from("/w/fuzz/artifacts/t/crash-da39a3ee")]
        );
    }
}
