//! [`WanLink`]: an emulated link between two hosts, set up on start and torn down by
//! [`WanLink::stop`] or on drop (also while unwinding from a panic).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Engine;
use crate::error::WanError;
use crate::host::Host;
use crate::netns;
use crate::profile::LinkProfile;
use crate::stats::{LinkCounters, LinkStats};
use crate::topology::{A_ADDR, B_ADDR, Namespaces, TUN_NAME};
use crate::tun;

/// Numbers the links of this process so their namespace names differ.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A running emulated link between host [`WanLink::a`] and host [`WanLink::b`].
pub struct WanLink {
    profile: LinkProfile,
    a: Host,
    b: Host,
    router: String,
    counters: Arc<LinkCounters>,
    // Field order is teardown order: the engine (threads and the TUN descriptor, which
    // keeps the router's namespace alive) goes before the namespaces.
    engine: Option<Engine>,
    namespaces: Namespaces,
}

impl WanLink {
    /// Sets up the namespaces, links and TUN device for `profile` and starts emulating.
    /// Namespaces left by dead processes are removed first.
    pub fn start(profile: &LinkProfile) -> Result<WanLink, WanError> {
        profile.validate()?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(WanError::NotRoot);
        }
        netns::remove_stale()?;
        let instance = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let namespaces = Namespaces::create(instance)?;
        namespaces.wire()?;
        let tun = tun::create(&namespaces.r, TUN_NAME)?;
        namespaces.route_through_tun()?;
        let counters = Arc::new(LinkCounters::default());
        let engine = Engine::start(tun, profile, Arc::clone(&counters))?;
        Ok(WanLink {
            profile: profile.clone(),
            a: Host {
                netns: namespaces.a.clone(),
                addr: A_ADDR,
            },
            b: Host {
                netns: namespaces.b.clone(),
                addr: B_ADDR,
            },
            router: namespaces.r.clone(),
            counters,
            engine: Some(engine),
            namespaces,
        })
    }

    /// Host A.
    pub fn a(&self) -> &Host {
        &self.a
    }

    /// Host B.
    pub fn b(&self) -> &Host {
        &self.b
    }

    /// The router's namespace (where the TUN device lives), for inspection.
    pub fn router_netns(&self) -> &str {
        &self.router
    }

    /// The profile the link emulates.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// What the link has done so far, per direction.
    pub fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// Stops emulating, tears everything down and returns the final statistics.
    pub fn stop(mut self) -> Result<LinkStats, WanError> {
        self.teardown()?;
        Ok(self.counters.snapshot())
    }

    fn teardown(&mut self) -> Result<(), WanError> {
        if let Some(mut engine) = self.engine.take() {
            engine.stop();
        }
        self.namespaces.delete()
    }
}

impl Drop for WanLink {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            eprintln!("dwcp-wan: tearing down: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_hosts_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<WanLink>();
        shareable::<Host>();
    }
}
