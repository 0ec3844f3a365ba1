//! `dwcp-wan`: a WAN link emulator for a kernel without netem.
//!
//! [`WanLink::start`] builds three network namespaces, host A, router R and host B,
//! joined by veth pairs. R's policy routing sends every forwarded packet into one TUN
//! device; threads of the calling process read them, apply the [`LinkProfile`] (rate with
//! a bounded tail-drop queue, one-way delay and jitter, random loss) per direction and
//! write them back, and R routes them on. Run programs in the hosts with
//! [`Host::command`] or closures with [`Host::run_in`]. Dropping the link tears it all
//! down. See `dwcp-wan/README.md` for the design and its measured fidelity.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use dwcp_wan::{LinkProfile, WanLink};
//!
//! let profile = LinkProfile::builtin("metro-1g-5ms").expect("a built-in profile");
//! let link = WanLink::start(&profile)?;
//! let mut server = link.b().command("iperf3").args(["-s", "-1"]).spawn()?;
//! let b = link.b().addr;
//! // A socket created in host A stays there; use it from any thread.
//! let stream = link.a().run_in(move || std::net::TcpStream::connect((b, 5201)))?;
//! drop(stream);
//! server.kill()?;
//! let stats = link.stop()?;
//! println!("A->B: {} bytes, {} lost", stats.a_to_b.bytes, stats.a_to_b.dropped_loss);
//! # Ok(())
//! # }
//! ```

mod clock;
mod engine;
mod error;
mod host;
mod link;
mod netns;
pub mod profile;
mod ring;
mod shaper;
mod stats;
pub mod steal;
mod topology;
mod tun;

pub use error::WanError;
pub use host::Host;
pub use link::WanLink;
pub use netns::PREFIX as NETNS_PREFIX;
pub use profile::{LinkProfile, ProfileError, ProfileFileError, QueueLimit};
pub use stats::{DirectionStats, LinkStats};

/// The namespaces of emulated links that exist now (of any process), by name.
pub fn existing_namespaces() -> Vec<String> {
    netns::existing()
}
