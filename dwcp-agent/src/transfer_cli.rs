//! The `dwcp-agent send` experience: probes for kernel figures, a progress bar, and the
//! summary (text or JSON).

use std::{net::SocketAddr, os::fd::AsFd as _, path::Path, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    amst::{
        AmstError,
        sender::{Hooks, Progress, SendOptions, send_file},
        stream::send::send_stream_probed,
        summary::Summary,
    },
    probe::Probes,
    protocol::handshake::Psk,
};

/// What to send.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A file or block device (random access, resumable).
    File(&'a Path),
    /// Standard input, delivered in order as `name` (a pipe or socket: read once).
    Stdin {
        /// Name of the file the receiver creates.
        name: &'a str,
    },
}

/// Sends `source`, printing a progress bar on stderr and the summary on stdout.
pub fn send(
    source: Source<'_>,
    to: SocketAddr,
    psk: &Psk,
    options: &SendOptions,
    json: bool,
) -> Result<(), AmstError> {
    let probes = match Probes::load(&[std::process::id()]) {
        Ok(probes) => Some(probes),
        Err(err) => {
            eprintln!(
                "Note: no kernel figures ({}); run as root for them",
                crate::error_chain(&err)
            );
            None
        }
    };
    let bar = ProgressBar::new(0);
    let template = match source {
        Source::File(_) => {
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}"
        }
        Source::Stdin { .. } => {
            "{spinner} [{elapsed_precise}] {bytes} {binary_bytes_per_sec} {msg}"
        }
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let on_progress = |p: Progress| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
        bar.set_message(format!("{} streams", p.streams));
    };
    let hooks = Hooks {
        on_stream: None,
        on_progress: Some(&on_progress),
    };
    let result = match source {
        Source::File(path) if !options.codec.is_none() => {
            // Encoded blocks are decoded in order: the file goes as a stream.
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    AmstError::Invalid(format!("{} has no UTF-8 file name", path.display()))
                })?
                .to_owned();
            let file = std::fs::File::open(path).map_err(|source| AmstError::File {
                what: "Cannot open",
                path: path.display().to_string(),
                source,
            })?;
            send_stream_probed(file, &name, to, psk, options, probes.as_ref(), &hooks)
        }
        Source::File(path) => send_file(path, to, psk, options, probes.as_ref(), &hooks),
        Source::Stdin { name } => {
            let stdin =
                std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().map_err(
                    |source| AmstError::File {
                        what: "Cannot use",
                        path: "standard input".into(),
                        source,
                    },
                )?);
            send_stream_probed(stdin, name, to, psk, options, probes.as_ref(), &hooks)
        }
    };
    bar.finish_and_clear();
    let mut summary = result?;
    if let Some(probes) = &probes {
        add_kernel_figures(&mut summary, probes);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        println!("{}", summary.render());
    }
    Ok(())
}

/// Fills the kernel-measured fields from this process's flows and threads.
pub fn add_kernel_figures(summary: &mut Summary, probes: &Probes) {
    if let Ok(flows) = probes.flows() {
        summary.kernel_tx_bytes = Some(flows.iter().map(|f| f.tx_bytes).sum());
        summary.retransmits = Some(flows.iter().map(|f| f.retransmits).sum());
    }
    if let Ok(threads) = probes.threads() {
        summary.cpu_seconds = Some(threads.iter().map(|t| t.on_cpu.as_secs_f64()).sum());
    }
}
