//! The outcome of each setup item, printed as it happens, and the final summary.

use anyhow::{Result, bail};

use crate::sys;

/// What a setup item found or did.
#[derive(Debug)]
pub enum Outcome {
    /// It was already there; nothing was done.
    Present,
    /// It was missing and is now there; the text says what was done.
    Installed(String),
    /// It was missing and was left so (not required, or not possible without root).
    Skipped(String),
}

/// Tally of the setup items.
#[derive(Debug, Default)]
pub struct Report {
    /// Items found already present.
    present: usize,
    /// Items installed by this run.
    installed: usize,
    /// Items skipped, with a warning.
    skipped: Vec<String>,
    /// Items that failed.
    failed: Vec<String>,
}

impl Report {
    /// Prints and tallies the result of checking (and perhaps installing) `item`.
    pub fn record(&mut self, item: &str, result: Result<Outcome>) {
        match result {
            Ok(Outcome::Present) => {
                println!("{item}: ok: already present");
                self.present += 1;
            }
            Ok(Outcome::Installed(what)) => {
                println!("{item}: ok: {what}");
                self.installed += 1;
            }
            Ok(Outcome::Skipped(why)) => {
                sys::warn(format!("{item}: skipped: {why}"));
                self.skipped.push(item.to_owned());
            }
            Err(err) => {
                eprintln!("error: {item}: {err:#}");
                self.failed.push(item.to_owned());
            }
        }
    }

    /// Prints the summary; fails if any item failed.
    pub fn finish(self) -> Result<()> {
        println!(
            "setup: {} already present, {} installed, {} skipped, {} failed",
            self.present,
            self.installed,
            self.skipped.len(),
            self.failed.len()
        );
        if !self.skipped.is_empty() {
            sys::warn(format!("setup skipped: {}", self.skipped.join(", ")));
        }
        if !self.failed.is_empty() {
            bail!("Setup failed for: {}", self.failed.join(", "));
        }
        Ok(())
    }
}

/// Prints that `item` is missing and what is about to be done about it.
pub fn installing(item: &str, what: &str) {
    println!("{item}: missing: {what}");
}
