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
//! Any failure before `MigrateDone` rolls back: the source cancels QEMU's migration,
//! continues the guest and marks the VM Running with the reason; the destination kills
//! its QEMU and removes the record when it gets `Abort`, when the control connection
//! closes (source agent gone), or when its QEMU dies. Modes ([`MigrationMode`]): live
//! (downtime limit 300 ms, auto-converge), warm (pre-copy, then the agent pauses the
//! guest: [`warm`]), cold (paused first). Live and warm move RAM and device state only,
//! so VMs with a local disk are refused (QEMU 7.2's `blk` migration is deprecated); cold
//! refuses them too for now. Files: [`channel`] (source's control conversation),
//! [`source`], [`destination`], [`report`] (progress), [`metrics`], [`error`].

pub mod channel;
pub mod destination;
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
