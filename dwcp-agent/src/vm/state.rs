//! The VM lifecycle as a pure state machine.
//!
//! ```text
//! Creating --start--> Running <--pause/resume--> Paused
//! Running|Paused --stop--> Stopped --start--> Running
//! Running|Paused --begin_migration--> Migrating --finish--> Stopped, --abort--> Running
//! Creating --receive_migration--> Migrating --arrive--> Running   (destination side)
//! Creating|Stopped|Failed --delete--> Deleted
//! any state but Deleted --fail--> Failed(reason) --start--> Running
//! ```
//!
//! [`VmState::apply`] refuses every other pair with an error that names the current
//! state and the attempted action.

use serde::{Deserialize, Serialize};

/// Where a VM is in its life.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum VmState {
    /// Defined, never started.
    Creating,
    /// QEMU runs and the vCPUs run.
    Running,
    /// QEMU runs, the vCPUs are stopped.
    Paused,
    /// QEMU has exited after a stop.
    Stopped,
    /// Being migrated away.
    Migrating,
    /// QEMU died or could not start; the reason says why.
    Failed(String),
    /// Removed; nothing further is allowed.
    Deleted,
}

/// What a client (or the agent itself) asks of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Launch QEMU.
    Start,
    /// Stop the vCPUs.
    Pause,
    /// Continue the vCPUs.
    Resume,
    /// Power the guest down.
    Stop,
    /// Remove the VM.
    Delete,
    /// Start migrating away.
    BeginMigration,
    /// Migration completed: the source is done.
    FinishMigration,
    /// Migration failed or was cancelled: the source runs on.
    AbortMigration,
    /// Destination: a new VM waits for an incoming migration.
    ReceiveMigration,
    /// Destination: the incoming migration completed; the VM runs here now.
    ArriveMigration,
    /// QEMU died or misbehaved.
    Fail(String),
}

/// A transition the machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Cannot {action} the VM while it is {state}")]
pub struct TransitionError {
    /// The state the VM is in.
    pub state: &'static str,
    /// The action attempted.
    pub action: &'static str,
}

impl VmState {
    /// Lower-case name, as in the API and the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Migrating => "migrating",
            Self::Failed(_) => "failed",
            Self::Deleted => "deleted",
        }
    }

    /// Every state name, in lifecycle order.
    pub const NAMES: [&'static str; 7] = [
        "creating",
        "running",
        "paused",
        "stopped",
        "migrating",
        "failed",
        "deleted",
    ];

    /// Whether a QEMU process belongs to this state.
    pub fn has_process(&self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Migrating)
    }

    /// The state after `action`, or why it is refused.
    pub fn apply(&self, action: &Action) -> Result<Self, TransitionError> {
        use Action as A;
        use VmState as S;
        let next = match (self, action) {
            (S::Creating | S::Stopped | S::Failed(_), A::Start) => S::Running,
            (S::Running, A::Pause) => S::Paused,
            (S::Paused, A::Resume) => S::Running,
            (S::Running | S::Paused, A::Stop) => S::Stopped,
            (S::Creating | S::Stopped | S::Failed(_), A::Delete) => S::Deleted,
            (S::Running | S::Paused, A::BeginMigration) => S::Migrating,
            (S::Migrating, A::FinishMigration) => S::Stopped,
            (S::Migrating, A::AbortMigration | A::ArriveMigration) => S::Running,
            (S::Creating, A::ReceiveMigration) => S::Migrating,
            (state, A::Fail(reason)) if *state != S::Deleted => S::Failed(reason.clone()),
            _ => {
                return Err(TransitionError {
                    state: self.name(),
                    action: action.name(),
                });
            }
        };
        Ok(next)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(reason) => write!(f, "failed ({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

impl Action {
    /// Lower-case verb, as in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Stop => "stop",
            Self::Delete => "delete",
            Self::BeginMigration => "migrate",
            Self::FinishMigration => "finish migrating",
            Self::AbortMigration => "abort migrating",
            Self::ReceiveMigration => "receive a migration",
            Self::ArriveMigration => "complete an incoming migration",
            Self::Fail(_) => "fail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> VmState {
        VmState::Failed("x".into())
    }

    /// Every state x action pair and its expected outcome (None = refused).
    #[test]
    fn transition_table_is_exactly_as_designed() {
        use Action as A;
        use VmState as S;
        let states = [
            S::Creating,
            S::Running,
            S::Paused,
            S::Stopped,
            S::Migrating,
            failed(),
            S::Deleted,
        ];
        let actions = [
            A::Start,
            A::Pause,
            A::Resume,
            A::Stop,
            A::Delete,
            A::BeginMigration,
            A::FinishMigration,
            A::AbortMigration,
            A::ReceiveMigration,
            A::ArriveMigration,
            A::Fail("boom".into()),
        ];
        let f = || Some(S::Failed("boom".into()));
        // Rows: states in the order above; columns: actions in the order above.
        let expected: [[Option<S>; 11]; 7] = [
            // start pause resume stop delete migrate finish abort receive arrive fail
            [
                Some(S::Running),
                None,
                None,
                None,
                Some(S::Deleted),
                None,
                None,
                None,
                Some(S::Migrating),
                None,
                f(),
            ], // creating
            [
                None,
                Some(S::Paused),
                None,
                Some(S::Stopped),
                None,
                Some(S::Migrating),
                None,
                None,
                None,
                None,
                f(),
            ], // running
            [
                None,
                None,
                Some(S::Running),
                Some(S::Stopped),
                None,
                Some(S::Migrating),
                None,
                None,
                None,
                None,
                f(),
            ], // paused
            [
                Some(S::Running),
                None,
                None,
                None,
                Some(S::Deleted),
                None,
                None,
                None,
                None,
                None,
                f(),
            ], // stopped
            [
                None,
                None,
                None,
                None,
                None,
                None,
                Some(S::Stopped),
                Some(S::Running),
                None,
                Some(S::Running),
                f(),
            ], // migrating
            [
                Some(S::Running),
                None,
                None,
                None,
                Some(S::Deleted),
                None,
                None,
                None,
                None,
                None,
                f(),
            ], // failed
            [
                None, None, None, None, None, None, None, None, None, None, None,
            ], // deleted
        ];
        for (state, row) in states.iter().zip(&expected) {
            for (action, want) in actions.iter().zip(row) {
                let got = state.apply(action);
                match want {
                    Some(next) => assert_eq!(got.as_ref(), Ok(next), "{state:?} x {action:?}"),
                    None => match got {
                        Err(err) => {
                            assert_eq!(err.state, state.name());
                            assert_eq!(err.action, action.name());
                        }
                        Ok(next) => panic!("{state:?} x {action:?} must be refused, gave {next:?}"),
                    },
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_state_and_the_action() {
        let err = VmState::Stopped.apply(&Action::Pause).unwrap_err();
        assert_eq!(err.to_string(), "Cannot pause the VM while it is stopped");
        let err = VmState::Running.apply(&Action::Resume).unwrap_err();
        assert_eq!(err.to_string(), "Cannot resume the VM while it is running");
    }

    #[test]
    fn serialises_with_the_reason_of_a_failure() {
        let json = serde_json::to_string(&VmState::Failed("QEMU exited".into())).unwrap();
        assert_eq!(json, r#"{"state":"failed","reason":"QEMU exited"}"#);
        let back: VmState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, VmState::Failed("QEMU exited".into()));
        assert_eq!(
            serde_json::to_string(&VmState::Paused).unwrap(),
            r#"{"state":"paused"}"#
        );
        for state in [VmState::Creating, failed(), VmState::Deleted] {
            assert!(VmState::NAMES.contains(&state.name()));
        }
    }
}
