//! QEMU virtual machines on this host, driven over QMP.
//!
//! [`spec`] says what a VM is, [`state`] what may happen to it, [`store`] remembers it
//! on disk, [`process`] launches and re-finds its QEMU, [`qmp`] talks to that QEMU,
//! [`accel`] picks KVM or TCG, [`runtime`] holds one running QEMU and watches it die, and
//! [`manager`] puts them together behind the operations the API and CLI offer;
//! [`outgoing`] and [`incoming`] add the two ends of a migration (driven by
//! [`crate::migrate`]).

pub mod accel;
pub mod incoming;
pub mod manager;
pub mod outgoing;
pub mod process;
pub mod qmp;
pub mod recover;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod store;

pub use manager::{ManagerConfig, VmError, VmManager, VmStatus};
pub use spec::VmSpec;
pub use state::VmState;
