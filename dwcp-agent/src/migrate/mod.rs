//! VM migration between agents: the source QEMU migrates into its local agent, AMST
//! carries the stream (HDE-coded by default) to the destination agent, which feeds a
//! QEMU it started with `-incoming`.
//!
//! ```text
//! client      source agent                          destination agent        dest QEMU
//!   | POST migrate |                                        |                      |
//!   |------------->| VM Running -> Migrating                |                      |
//!   |              |--- control: MigratePrepare{spec} ----->| record Migrating     |
//!   |              |                                        |-- start -incoming -->|
//!   |              |                                        | expect_stream(name)  |
//!   |              |<------------------ MigrateReady -------|                      |
//!   |<-- 202 ------| QMP migrate unix:<vm>/migrate-out.sock |                      |
//!   |              | accept, send_stream(name) ==== AMST ==>| consumer ----------->|
//!   | GET migration| poll query-migrate every 500 ms        |                      |
//!   |              | QEMU completed, stream verified        |                      |
//!   |              |--- MigrateCommit --------------------->| wait !inmigrate,     |
//!   |              |                                        | cont if paused       |
//!   |              |<------------------ MigrateDone --------| record Running       |
//!   |              | QEMU quit, VM Stopped (migrated)       |                      |
//! ```
//!
//! A cold migration of a VM with a local disk moves the disk first ([`disk`]):
//! `MigratePrepare` carries a [`disk::DiskOffer`] (file name, size, transfer name); the
//! destination reserves the VM (Migrating, no QEMU) with its spec's disk pointing into the
//! VM's own directory under its state dir, registers that path for the transfer and
//! answers `MigrateDiskReady`; the source pauses the guest, sends the image as an AMST
//! file transfer (written atomically, BLAKE3-verified, same file name so the same format),
//! then `MigrateDiskSent`; the destination starts QEMU `-incoming` on the copy and answers
//! `MigrateReady`, and the state stream follows as above. The report shows the copy (phase
//! `copying_disk`, `disk` bytes done/total) and counts it in `wire_bytes`.
//!
//! Any failure before `MigrateDone` rolls back: the source cancels QEMU's migration,
//! continues the guest and marks the VM Running with the reason (its disk was only read);
//! the destination kills its QEMU and removes the record and the VM's directory (with a
//! copied disk, whole or partial) when it gets `Abort`, when the control connection
//! closes (source agent gone), or when its QEMU dies; a destination agent that died
//! removes the half-received VM when it starts again. Modes ([`MigrationMode`]): live
//! (downtime limit 300 ms, auto-converge), warm (pre-copy, then the agent pauses the
//! guest: [`warm`]), cold (paused first). Live and warm move RAM and device state only,
//! so VMs with a local disk are refused for them (they would need shared storage or
//! block mirroring; QEMU 7.2's `blk` migration is deprecated). Files: [`channel`]
//! (source's control conversation), [`source`], [`destination`], [`disk`], [`report`]
//! (progress), [`metrics`], [`error`].

pub mod channel;
pub mod destination;
pub mod disk;
pub mod error;
pub mod metrics;
pub mod mode;
pub mod pacing;
pub mod report;
pub mod source;
pub mod warm;

pub use error::MigrateError;
pub use mode::{MigrateRequest, MigrationMode};
pub use report::{Direction, MigrationProgress, MigrationReport, Phase};
