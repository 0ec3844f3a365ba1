//! systemd service notifications (`sd_notify`): readiness, status, watchdog, stopping.
//!
//! All calls are no-ops when the agent is not started by systemd (`NOTIFY_SOCKET` unset).

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells the service manager the agent is ready, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the agent is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Stopping")]);
}

/// Keeps the watchdog happy; call at least every [`watchdog_interval`].
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WatchdogSec`, or `None` when it is off.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "Notifying the service manager failed");
    }
}
