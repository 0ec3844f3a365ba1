//! `dwcp-agent run`: the long-running service.
//!
//! Start-up order: probes (or a logged reason why not), HTTP listener, DWCP receiver,
//! VM manager (re-attaching to VMs that outlived the previous agent), control socket,
//! readiness to systemd. Stopping the agent leaves VMs running. A drain task refreshes the metrics on a timer and pings the watchdog only
//! while it really runs. SIGTERM or SIGINT starts a graceful stop: the HTTP server
//! finishes, the drain task ends, the probes are detached, then the process exits.

use std::sync::{Arc, Mutex};

use tokio::{net::TcpListener, sync::watch};

use crate::{
    amst::{
        receiver::{Receiver, ReceiverConfig},
        socket::SocketTuning,
    },
    api,
    config::AgentConfig,
    http::{self, HttpState},
    metrics::AgentMetrics,
    notify,
    probe::Probes,
    protocol::handshake::Psk,
    telemetry::Telemetry,
    vm::{ManagerConfig, VmManager},
};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP address could not be bound.
    #[error("Cannot listen on {addr}")]
    Bind {
        /// Address configured.
        addr: std::net::SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the signal handlers or serving HTTP failed.
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The pre-shared key file could not be read or is too short.
    #[error("Cannot use pre-shared key file {path}: {reason}")]
    Psk {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The receiver could not start.
    #[error("Cannot start the DWCP receiver")]
    Receiver(#[source] crate::amst::AmstError),
    /// The VM manager could not load its state.
    #[error("Cannot load the VM state")]
    Vms(#[source] crate::vm::VmError),
    /// The control socket could not be set up.
    #[error("Cannot serve the control API")]
    Control(#[source] api::ApiServeError),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), DaemonError> {
    let metrics = Arc::new(AgentMetrics::new());
    let probes = load_probes(&config);
    let telemetry = Arc::new(Mutex::new(Telemetry::new(probes, Arc::clone(&metrics))));

    let listener = TcpListener::bind(config.http.addr)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.http.addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(DaemonError::Serve)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let receiver = start_receiver(&config, &telemetry)?;
    let incoming = receiver
        .as_ref()
        .map(|(_, _, receiver)| Arc::clone(receiver));
    let control_server = match start_vms(&config, &metrics, stop_rx.clone(), incoming).await {
        Ok(server) => Some(server),
        Err(err) => {
            tracing::error!(
                error = %crate::error_chain(&err),
                hint = "run as root, or set state_dir and control_socket to writable paths",
                "VM control unavailable; serving metrics without it"
            );
            None
        }
    };

    let app = http::router(HttpState {
        telemetry: Arc::clone(&telemetry),
        metrics,
    });
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await
    });

    let probes_up = lock(&telemetry).probes().is_some();
    tracing::info!(
        %http_addr,
        data_listen = %config.transport.listen,
        control_socket = %config.control_socket.display(),
        probes = probes_up,
        "dwcp-agent ready"
    );
    notify::ready(&format!(
        "Serving metrics on {http_addr}, probes {}",
        on_off(probes_up)
    ));
    // Started after READY, so systemd never sees a watchdog ping before readiness.
    let drain = tokio::spawn(drain_loop(
        Arc::clone(&telemetry),
        config.clone(),
        stop_rx.clone(),
    ));

    wait_for_signal().await.map_err(DaemonError::Serve)?;
    tracing::info!("Stopping");
    notify::stopping();
    let _ = stop_tx.send(true);
    let served = server.await;
    if let Some(control_server) = control_server {
        let _ = control_server.await;
    }
    let _ = drain.await;
    if let Some((thread, stop, _)) = receiver {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    lock(&telemetry).unload();
    match served {
        Ok(result) => result.map_err(DaemonError::Serve),
        Err(join) => Err(DaemonError::Serve(std::io::Error::other(join))),
    }
}

/// Loads the VMs (re-attaching to running ones), lets `receiver` take incoming
/// migrations, and serves the control API.
async fn start_vms(
    config: &AgentConfig,
    metrics: &Arc<AgentMetrics>,
    stop: watch::Receiver<bool>,
    receiver: Option<Arc<Receiver>>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, DaemonError> {
    let mut manager_config = ManagerConfig::new(config.state_dir.clone());
    manager_config.migration_psk_file = config.transport.psk_file.clone();
    let vms = VmManager::open(manager_config, Arc::clone(metrics))
        .await
        .map_err(DaemonError::Vms)?;
    if let Some(receiver) = receiver {
        receiver.set_control_handler(Arc::new(crate::migrate::destination::Destination::new(
            vms.clone(),
            &receiver,
            tokio::runtime::Handle::current(),
        )));
    }
    let listener = api::bind(&config.control_socket).map_err(DaemonError::Control)?;
    tracing::info!(socket = %config.control_socket.display(), vms = vms.list().len(), "Control API listening");
    Ok(tokio::spawn(api::serve(
        listener,
        config.control_socket.clone(),
        vms,
        stop,
    )))
}

type ReceiverHandle = (
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Receiver>,
);

/// Starts the DWCP receiver when `transport.receive_dir` is set.
fn start_receiver(
    config: &AgentConfig,
    telemetry: &Mutex<Telemetry>,
) -> Result<Option<ReceiverHandle>, DaemonError> {
    let (Some(dir), Some(psk_path)) = (&config.transport.receive_dir, &config.transport.psk_file)
    else {
        tracing::info!("Receiving is off (set transport.receive_dir and transport.psk_file)");
        return Ok(None);
    };
    let psk_err = |reason: String| DaemonError::Psk {
        path: psk_path.display().to_string(),
        reason,
    };
    let key = std::fs::read(psk_path).map_err(|e| psk_err(e.to_string()))?;
    let psk = Psk::new(&key).map_err(|e| psk_err(e.to_string()))?;
    let receiver = Receiver::new(ReceiverConfig {
        dir: dir.clone(),
        psk,
        tuning: SocketTuning::default(),
    })
    .map_err(DaemonError::Receiver)?;
    let addr = config.transport.listen;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Bind { addr, source })?;
    lock(telemetry).attach_receiver(Arc::clone(&receiver));
    let kept = Arc::clone(&receiver);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("dwcp-accept".into())
        .spawn(move || {
            if let Err(err) = receiver.serve(listener, &thread_stop) {
                tracing::error!(error = %err, "DWCP receiver stopped");
            }
        })
        .map_err(DaemonError::Serve)?;
    tracing::info!(%addr, dir = %dir.display(), "DWCP receiver listening");
    Ok(Some((thread, stop, kept)))
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Loads the probes for this process, or explains in the log why the agent runs without.
fn load_probes(config: &AgentConfig) -> Option<Probes> {
    if !config.probes.enabled {
        tracing::info!("eBPF probes disabled by configuration (probes.enabled = false)");
        return None;
    }
    match Probes::load(&[std::process::id()]) {
        Ok(probes) => {
            tracing::info!(programs = ?probes.program_ids(), "eBPF probes attached");
            Some(probes)
        }
        Err(err) => {
            tracing::warn!(
                error = %crate::error_chain(&err),
                hint = "run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN",
                "eBPF probes unavailable; serving metrics without kernel figures (dwcp_probe_up 0)"
            );
            None
        }
    }
}

/// Refreshes metrics every interval and, while doing so, pings the systemd watchdog.
async fn drain_loop(
    telemetry: Arc<Mutex<Telemetry>>,
    config: AgentConfig,
    mut stop: watch::Receiver<bool>,
) {
    let period = match notify::watchdog_interval() {
        Some(watchdog) => watchdog.min(config.probes.interval()),
        None => config.probes.interval(),
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                http::refresh(&telemetry);
                notify::watchdog();
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
}

fn lock(telemetry: &Mutex<Telemetry>) -> std::sync::MutexGuard<'_, Telemetry> {
    telemetry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "Signal received"),
    }
    Ok(())
}
