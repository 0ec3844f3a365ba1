//! The source agent's side: from the API request to the VM running on the destination,
//! or back to running here.
//!
//! [`start`] checks the request, puts the VM in Migrating and has the destination agent
//! prepare (its QEMU waiting with `-incoming`); any refusal up to there is returned to
//! the client and the VM runs on untouched. The rest runs as a task ([`drive`]): a cold
//! migration with a local disk first pauses the guest and copies the disk
//! ([`super::disk`]); then QEMU
//! migrates to a unix socket of this agent, whose bytes [`send_stream`] carries to the
//! destination; `query-migrate` is polled every 500 ms for progress; once QEMU reports
//! `completed` and the stream is verified, the destination is told to commit and the
//! VM here ends Stopped ("migrated"). Any failure before the destination confirmed
//! cancels QEMU's migration, continues the guest here and tells the destination to
//! discard its copy.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    Direction, MigrateError, MigrateRequest, MigrationMode, MigrationProgress, MigrationReport,
    Phase,
    channel::{Arrived, Channel},
    disk::{self, CopyTarget, DiskOffer, DiskProgress},
    metrics,
    pacing::LinkPacer,
    warm::WarmPolicy,
};
use crate::{
    amst::{
        sender::{Hooks, SendOptions, StreamCount},
        socket::SocketTuning,
        stream::send::send_stream,
    },
    protocol::handshake::Psk,
    vm::{VmManager, outgoing::OutgoingVm},
};

/// How often QEMU's migration status is read.
const POLL: Duration = Duration::from_millis(500);
/// Default data streams.
const DEFAULT_STREAMS: usize = 8;
/// Default time limit of a migration.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long QEMU may take to connect to the agent's migration socket.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// QEMU's bandwidth cap during migration: far above any link (the default 128 MiB/s
/// would be the bottleneck).
const MAX_BANDWIDTH: u64 = 100 << 30;
/// Stream block size: a quarter of the file default, so that a block waiting to be sent
/// is a small delay at the switch-over.
const BLOCK_SIZE: usize = 256 << 10;
/// Unacknowledged blocks per stream: 4 MiB, as files have, so that a stream's window
/// never caps TCP on a long, queueing link (a 1 MiB window held 8 streams to one
/// stream's rate on wan-1g-50ms-0.1pct).
const WINDOW: usize = 16;
/// Unsent bytes a stream's socket may queue: whatever is queued when QEMU stops the guest
/// still has to cross the link before the destination resumes it, so the kernel keeps
/// little more than what TCP can send next.
const NOTSENT_LOWAT: u32 = 256 << 10;
/// QEMU's downtime limit: the live target, and QEMU's default.
const DOWNTIME_LIMIT_MS: u64 = 300;
/// Warm: a limit QEMU cannot meet while the guest dirties memory, so that the switch-over
/// happens when the agent pauses the guest (see [`WarmPolicy`]), not at a downtime target.
const WARM_DOWNTIME_LIMIT_MS: u64 = 1;

/// A checked request.
#[derive(Clone, Debug)]
struct Settings {
    addr: SocketAddr,
    psk: Psk,
    mode: MigrationMode,
    options: SendOptions,
    timeout: Duration,
}

/// Checks `request`, prepares the destination and starts migrating VM `name`; returns
/// the report as the migration begins (follow it with [`VmManager::migration`]).
pub async fn start(
    manager: &VmManager,
    name: &str,
    request: MigrateRequest,
) -> Result<MigrationReport, MigrateError> {
    let settings = settings(manager, &request).await?;
    let spec = manager.status(name)?.record.spec;
    let disk = match (&spec.disk, settings.mode) {
        (None, _) => None,
        (Some(path), MigrationMode::Cold) => Some((path.clone(), DiskOffer::of(name, path)?)),
        (Some(_), mode) => return Err(MigrateError::LocalDisk(name.to_owned(), mode.as_str())),
    };
    let mut report = MigrationReport::new(
        Direction::Outgoing,
        request.to.clone(),
        settings.mode,
        request.codec.clone(),
    );
    let vm = manager.begin_migration(name, report.clone()).await?;
    let stream = format!("{name}.migration");
    let prepared = {
        let (spec, psk, stream, addr, mode, accel) = (
            vm.spec.clone(),
            settings.psk.clone(),
            stream.clone(),
            settings.addr,
            settings.mode,
            vm.accel,
        );
        let offer = disk.as_ref().map(|(_, offer)| offer.clone());
        tokio::task::spawn_blocking(move || {
            Channel::prepare(addr, &psk, &spec, &stream, (mode, accel), offer.as_ref())
        })
        .await
        .unwrap_or_else(|join| {
            Err(MigrateError::Refused(format!(
                "preparation crashed: {join}"
            )))
        })
    };
    let channel = match prepared {
        Ok(channel) => channel,
        Err(err) => {
            report.finish(Phase::RolledBack, Some(crate::error_chain(&err)));
            if let Err(rollback) = manager.abort_migration(name, report).await {
                tracing::error!(vm = %name, error = %crate::error_chain(&rollback), "Cannot restore the VM after a refused migration");
            }
            return Err(err);
        }
    };
    match &disk {
        Some((_, offer)) => {
            report.phase = Phase::CopyingDisk;
            report.disk = Some(DiskProgress {
                file: offer.file.clone(),
                done_bytes: 0,
                total_bytes: offer.size,
            });
        }
        None => report.phase = Phase::Transferring,
    }
    manager.update_migration(name, &report);
    tracing::info!(vm = %name, to = %request.to, mode = settings.mode.as_str(), disk = ?spec.disk, "Migration started");
    tokio::spawn(drive(
        manager.clone(),
        name.to_owned(),
        (vm, disk),
        channel,
        stream,
        settings,
        report.clone(),
    ));
    Ok(report)
}

async fn settings(manager: &VmManager, request: &MigrateRequest) -> Result<Settings, MigrateError> {
    let streams = request.streams.unwrap_or(DEFAULT_STREAMS);
    if !crate::amst::STREAM_RANGE.contains(&streams) {
        return Err(MigrateError::Request(format!(
            "streams {streams} is outside 1..=256"
        )));
    }
    let bad = |reason: String| MigrateError::Destination {
        to: request.to.clone(),
        reason,
    };
    let addr = tokio::net::lookup_host(&request.to)
        .await
        .map_err(|e| bad(format!("{e} (expected HOST:PORT)")))?
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))?;
    let psk_file = request
        .psk_file
        .clone()
        .or_else(|| manager.migration_psk_file())
        .ok_or_else(|| {
            MigrateError::Psk(
                "give psk_file, or set transport.psk_file in the agent's configuration".into(),
            )
        })?;
    let key = std::fs::read(&psk_file)
        .map_err(|e| MigrateError::Psk(format!("cannot read {}: {e}", psk_file.display())))?;
    let psk =
        Psk::new(&key).map_err(|e| MigrateError::Psk(format!("{}: {e}", psk_file.display())))?;
    Ok(Settings {
        addr,
        psk,
        mode: request.mode,
        options: SendOptions {
            streams: StreamCount::Fixed(streams),
            block_size: BLOCK_SIZE,
            window: WINDOW,
            tuning: SocketTuning {
                notsent_lowat: Some(NOTSENT_LOWAT),
                ..SocketTuning::default()
            },
            codec_tally: Some(Arc::clone(&manager.metrics().codec.sender)),
            ..SendOptions::default()
        }
        .with_codec(&request.codec)
        .map_err(MigrateError::Request)?,
        timeout: request
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
    })
}

/// Runs the migration to its end and records the outcome.
async fn drive(
    manager: VmManager,
    name: String,
    (vm, disk): (OutgoingVm, Option<(PathBuf, DiskOffer)>),
    channel: Channel,
    stream: String,
    settings: Settings,
    mut report: MigrationReport,
) {
    let copied = match &disk {
        Some((path, offer)) => {
            move_disk(
                &manager,
                &name,
                &vm,
                (path, offer),
                channel,
                &settings,
                &mut report,
            )
            .await
        }
        None => Ok(channel),
    };
    let outcome = match copied {
        Err(reason) => Err(reason),
        Ok(channel) => {
            match transfer(&manager, &name, &vm, &stream, &settings, &mut report).await {
                Ok(()) => commit(&manager, &name, channel, &mut report).await,
                Err(reason) => {
                    let _ = vm.qmp.migrate_cancel().await;
                    abort_channel(channel, reason.clone()).await;
                    Err(reason)
                }
            }
        }
    };
    match outcome {
        Ok(arrived) => {
            let status = arrived.status;
            // From the guest's last stop here to its resumption there, by the two
            // hosts' clocks.
            let stopped_at = vm.qmp.last_event("STOP").and_then(|e| e.timestamp_us);
            report.guest_downtime_ms = stopped_at
                .zip(arrived.resumed_at_us)
                .and_then(|(stop, resume)| resume.checked_sub(stop))
                .map(|us| us / 1000);
            report.finish(Phase::Completed, None);
            metrics::finished(manager.metrics(), &name, &report);
            tracing::info!(vm = %name, to = %report.peer, %status, seconds = ?report.total_seconds, "Migration completed");
            if let Err(err) = manager.finish_migration(&name, report).await {
                tracing::error!(vm = %name, error = %crate::error_chain(&err), "Cannot record the completed migration");
            }
        }
        Err(reason) => {
            report.finish(Phase::RolledBack, Some(reason));
            metrics::finished(manager.metrics(), &name, &report);
            if let Err(err) = manager.abort_migration(&name, report).await {
                tracing::error!(vm = %name, error = %crate::error_chain(&err), "Cannot record the rolled back migration");
            }
        }
    }
}

/// Asks the destination to take the VM over; returns its QEMU's run state.
async fn commit(
    manager: &VmManager,
    name: &str,
    mut channel: Channel,
    report: &mut MigrationReport,
) -> Result<Arrived, String> {
    report.phase = Phase::Committing;
    manager.update_migration(name, report);
    let (channel, result) = tokio::task::spawn_blocking(move || {
        let result = channel.commit();
        (channel, result)
    })
    .await
    .map_err(|join| format!("The commit crashed: {join}"))?;
    match result {
        Ok(status) => Ok(status),
        Err(reason) => {
            abort_channel(channel, reason.clone()).await;
            Err(reason)
        }
    }
}

/// Cold migration's disk step: pauses the guest, copies its disk, and has the
/// destination start its QEMU with the copy. On failure the destination was told to
/// roll back (the channel is gone) and the reason is returned.
async fn move_disk(
    manager: &VmManager,
    name: &str,
    vm: &OutgoingVm,
    (path, offer): (&Path, &DiskOffer),
    channel: Channel,
    settings: &Settings,
    report: &mut MigrationReport,
) -> Result<Channel, String> {
    let paused = vm.qmp.stop().await.map_err(|e| crate::error_chain(&e));
    report.paused_by_agent = paused.is_ok();
    let target = CopyTarget {
        addr: settings.addr,
        psk: settings.psk.clone(),
        options: settings.options.clone(),
    };
    let copied = match paused {
        Ok(()) => disk::copy(manager, name, path, offer, &target, report).await,
        Err(reason) => Err(reason),
    };
    if let Err(reason) = copied {
        abort_channel(channel, reason.clone()).await;
        return Err(reason);
    }
    let (channel, ready) = tokio::task::spawn_blocking(move || {
        let mut channel = channel;
        let ready = channel.disk_sent();
        (channel, ready)
    })
    .await
    .map_err(|join| format!("The disk hand-over crashed: {join}"))?;
    if let Err(reason) = ready {
        abort_channel(channel, reason.clone()).await;
        return Err(reason);
    }
    report.phase = Phase::Transferring;
    manager.update_migration(name, report);
    Ok(channel)
}

async fn abort_channel(channel: Channel, reason: String) {
    let _ = tokio::task::spawn_blocking(move || channel.abort(&reason)).await;
}

/// Sets QEMU up for the mode, starts its migration into the AMST stream and follows it
/// until QEMU completed and the destination verified every byte.
async fn transfer(
    manager: &VmManager,
    name: &str,
    vm: &OutgoingVm,
    stream: &str,
    settings: &Settings,
    report: &mut MigrationReport,
) -> Result<(), String> {
    let qmp = &vm.qmp;
    let qmp_err = |e: crate::vm::qmp::QmpError| crate::error_chain(&e);
    qmp.migrate_set_capabilities(&[("auto-converge", settings.mode == MigrationMode::Live)])
        .await
        .map_err(qmp_err)?;
    qmp.migrate_set_parameters(json!({
        "max-bandwidth": MAX_BANDWIDTH,
        "downtime-limit": match settings.mode {
            MigrationMode::Warm => WARM_DOWNTIME_LIMIT_MS,
            MigrationMode::Live | MigrationMode::Cold => DOWNTIME_LIMIT_MS,
        },
    }))
    .await
    .map_err(qmp_err)?;
    if settings.mode == MigrationMode::Cold && !report.paused_by_agent {
        qmp.stop().await.map_err(qmp_err)?;
        report.paused_by_agent = true;
    }
    let socket = vm.dir.join("migrate-out.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("Cannot listen on {}: {e}", socket.display()))?;
    qmp.migrate(&format!("unix:{}", socket.display()))
        .await
        .map_err(qmp_err)?;
    let accepted = tokio::time::timeout(ACCEPT_TIMEOUT, listener.accept()).await;
    let _ = std::fs::remove_file(&socket);
    let source = match accepted {
        Ok(Ok((conn, _))) => conn
            .into_std()
            .and_then(|c| c.set_nonblocking(false).map(|()| c))
            .map_err(|e| format!("Cannot take QEMU's migration connection: {e}"))?,
        Ok(Err(e)) => return Err(format!("Cannot accept QEMU's migration connection: {e}")),
        Err(_) => {
            return Err(format!(
                "QEMU did not connect to the migration socket within {ACCEPT_TIMEOUT:?}"
            ));
        }
    };
    // QEMU's bytes handed to the streams (for pacing), and the same after the codec;
    // the disk copy's bytes, if any, came first.
    let base = report.wire_bytes;
    let (raw, wire) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut sender = Some({
        let (raw, wire) = (Arc::clone(&raw), Arc::clone(&wire));
        let (stream, addr) = (stream.to_owned(), settings.addr);
        let (psk, options) = (settings.psk.clone(), settings.options.clone());
        tokio::task::spawn_blocking(move || {
            let on_progress = |p: crate::amst::sender::Progress| {
                raw.store(p.done_bytes, Ordering::Relaxed);
                wire.store(p.wire_bytes, Ordering::Relaxed);
            };
            let hooks = Hooks {
                on_stream: None,
                on_progress: Some(&on_progress),
            };
            send_stream(source, &stream, addr, &psk, &options, &hooks)
        })
    });
    let deadline = Instant::now() + settings.timeout;
    let mut warm = WarmPolicy::default();
    let mut pacer = LinkPacer::default();
    let mut sent = false;
    let mut ticker = tokio::time::interval(POLL);
    loop {
        ticker.tick().await;
        if let Some(handle) = sender.take_if(|h| h.is_finished()) {
            match handle.await {
                Ok(Ok(summary)) => {
                    report.wire_bytes = report.wire_bytes.max(base + wire.load(Ordering::Relaxed));
                    tracing::info!(vm = %name, bytes = summary.bytes, wire = report.wire_bytes, "Migration stream verified by the destination");
                    sent = true;
                }
                Ok(Err(err)) => {
                    return Err(format!(
                        "The AMST stream failed: {}",
                        crate::error_chain(&err)
                    ));
                }
                Err(join) => return Err(format!("The AMST sender crashed: {join}")),
            }
        }
        let reply = qmp.query_migrate().await.map_err(qmp_err)?;
        let progress = MigrationProgress::from_query(&reply);
        report.wire_bytes = report.wire_bytes.max(base + wire.load(Ordering::Relaxed));
        report.progress = Some(progress.clone());
        manager.update_migration(name, report);
        metrics::progress(manager.metrics(), name, report);
        let sent_raw = raw.load(Ordering::Relaxed);
        if progress.status == "active"
            && let Some(cap) = pacer.cap(Instant::now(), sent_raw, progress.transferred_bytes)
        {
            tracing::debug!(vm = %name, cap, sent = sent_raw, written = progress.transferred_bytes, "Pacing QEMU to the link");
            if let Err(e) = qmp
                .migrate_set_parameters(json!({ "max-bandwidth": cap }))
                .await
            {
                tracing::warn!(vm = %name, error = %crate::error_chain(&e), "Cannot pace QEMU to the link");
            }
        }
        match progress.status.as_str() {
            "completed" if sent => return Ok(()),
            "failed" | "cancelled" | "cancelling" => {
                return Err(format!(
                    "QEMU's migration {}: {}",
                    progress.status,
                    progress.error.as_deref().unwrap_or("no reason given")
                ));
            }
            _ => {}
        }
        if settings.mode == MigrationMode::Warm
            && !report.paused_by_agent
            && warm.should_pause(&progress)
        {
            qmp.stop().await.map_err(qmp_err)?;
            report.paused_by_agent = true;
            tracing::info!(vm = %name, round = progress.round, remaining = progress.remaining_bytes, "Warm migration: guest paused for the final sync");
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "The migration did not complete within {:?} (QEMU status {}, round {}, {} bytes remaining)",
                settings.timeout, progress.status, progress.round, progress.remaining_bytes
            ));
        }
    }
}
