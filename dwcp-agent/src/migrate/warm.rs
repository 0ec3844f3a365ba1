//! When a warm migration stops pre-copying: the agent pauses the guest once enough
//! rounds went by or a round no longer shrank what is left, and QEMU then sends the rest
//! with the guest paused, however long that takes (no downtime target).

use super::MigrationProgress;

/// Pre-copy rounds after which the guest is paused in any case.
pub const MAX_ROUNDS: u64 = 5;

/// Watches the rounds of one warm migration.
#[derive(Debug, Default)]
pub struct WarmPolicy {
    round: u64,
    remaining: Option<u64>,
}

impl WarmPolicy {
    /// Feeds one progress sample; true when the guest should be paused now.
    pub fn should_pause(&mut self, progress: &MigrationProgress) -> bool {
        if progress.status != "active" {
            return false;
        }
        if progress.round >= MAX_ROUNDS {
            return true;
        }
        if progress.round <= self.round {
            return false;
        }
        let shrank = self
            .remaining
            .is_none_or(|before| progress.remaining_bytes < before);
        self.round = progress.round;
        self.remaining = Some(progress.remaining_bytes);
        progress.round >= 2 && !shrank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u64, remaining: u64) -> MigrationProgress {
        MigrationProgress {
            status: "active".into(),
            round,
            remaining_bytes: remaining,
            ..MigrationProgress::default()
        }
    }

    #[test]
    fn pauses_when_a_round_stops_shrinking() {
        let mut policy = WarmPolicy::default();
        assert!(!policy.should_pause(&sample(1, 200)));
        assert!(!policy.should_pause(&sample(1, 150)));
        assert!(!policy.should_pause(&sample(2, 100)));
        assert!(
            !policy.should_pause(&sample(2, 120)),
            "same round: no decision"
        );
        assert!(policy.should_pause(&sample(3, 130)));
    }

    #[test]
    fn pauses_after_the_last_round_and_never_before_setup() {
        let mut policy = WarmPolicy::default();
        let mut setup = sample(0, 0);
        setup.status = "setup".into();
        assert!(!policy.should_pause(&setup));
        for round in 1..MAX_ROUNDS {
            assert!(!policy.should_pause(&sample(round, 1000 - round * 100)));
        }
        assert!(policy.should_pause(&sample(MAX_ROUNDS, 10)));
    }
}
