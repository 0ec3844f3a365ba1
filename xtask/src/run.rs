//! `cargo xtask run`: the main job. Sets up the machine, builds the agent in release and
//! replaces this process with `dwcp-agent run <args>`, so that Ctrl-C and SIGTERM reach
//! the agent itself.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, Result};

use crate::{cmd, setup, sys};

/// Where the agent serves its metrics by default.
const METRICS_URL: &str = "http://127.0.0.1:9477/metrics";

/// Options of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Do not run `cargo xtask setup` first.
    #[arg(long)]
    pub no_setup: bool,
    /// Arguments for `dwcp-agent run` (after `--`).
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub agent_args: Vec<String>,
}

/// Builds the agent and execs it; returns only if that fails.
pub fn run(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        setup::run(&setup::Options::default())?;
    }
    let root = sys::workspace_root()?;
    cmd::run(&mut cmd::cargo(
        &root,
        ["build", "--release", "-p", "dwcp-agent"],
    ))?;
    let agent = sys::target_dir(&root).join("release").join("dwcp-agent");
    let mut command = cmd::new(&agent, ["run"]);
    command.args(&opts.agent_args);
    println!(
        "metrics: {METRICS_URL} (unless --http-addr or the config's http.addr moves them); \
         the agent runs in the foreground, Ctrl-C stops it"
    );
    println!("$ {}", cmd::display(&command));
    let err = command.exec();
    Err(err).with_context(|| format!("Cannot start {}", agent.display()))
}
