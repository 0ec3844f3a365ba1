//! Publishes a migration's progress and outcome on `/metrics` (`dwcp_migration_*`).

use super::{MigrationReport, Phase};
use crate::metrics::{AgentMetrics, OutcomeLabels, VmLabels};

/// Sets the per-VM gauges from the latest report of an outgoing migration.
pub fn progress(metrics: &AgentMetrics, vm: &str, report: &MigrationReport) {
    let m = &metrics.migration;
    let labels = VmLabels { vm: vm.to_owned() };
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.wire_bytes
        .get_or_create(&labels)
        .set(int(report.wire_bytes));
    let Some(p) = &report.progress else {
        return;
    };
    m.round.get_or_create(&labels).set(int(p.round));
    m.remaining_bytes
        .get_or_create(&labels)
        .set(int(p.remaining_bytes));
    m.transferred_bytes
        .get_or_create(&labels)
        .set(int(p.transferred_bytes));
    m.dirty_rate
        .get_or_create(&labels)
        .set(int(p.dirty_rate_bytes_per_second));
    m.expected_downtime
        .get_or_create(&labels)
        .set(p.expected_downtime_ms.unwrap_or(0) as f64 / 1000.0);
}

/// Counts the outcome, observes time and downtime of a completed migration, and drops
/// the per-VM gauges (the migration no longer runs).
pub fn finished(metrics: &AgentMetrics, vm: &str, report: &MigrationReport) {
    let m = &metrics.migration;
    let outcome = match report.phase {
        Phase::Completed => "completed",
        _ => "rolled_back",
    };
    m.finished
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    if report.phase == Phase::Completed {
        if let Some(seconds) = report.total_seconds {
            m.seconds.observe(seconds);
        }
        if let Some(downtime) = report.progress.as_ref().and_then(|p| p.downtime_ms) {
            m.downtime_seconds.observe(downtime as f64 / 1000.0);
        }
    }
    let labels = VmLabels { vm: vm.to_owned() };
    for family in [
        &m.round,
        &m.remaining_bytes,
        &m.transferred_bytes,
        &m.wire_bytes,
        &m.dirty_rate,
    ] {
        let _ = family.remove(&labels);
    }
    let _ = m.expected_downtime.remove(&labels);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{Direction, MigrationMode, MigrationProgress};

    #[test]
    fn progress_then_outcome_on_metrics() {
        let metrics = AgentMetrics::new();
        let mut report = MigrationReport::new(
            Direction::Outgoing,
            "10.0.0.2:9478".into(),
            MigrationMode::Live,
            "hde".into(),
        );
        report.wire_bytes = 1234;
        report.progress = Some(MigrationProgress {
            status: "active".into(),
            round: 3,
            remaining_bytes: 4096,
            expected_downtime_ms: Some(250),
            ..MigrationProgress::default()
        });
        progress(&metrics, "vm1", &report);
        let text = metrics.encode();
        assert!(
            text.contains(r#"dwcp_migration_round{vm="vm1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dwcp_migration_wire_bytes{vm="vm1"} 1234"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dwcp_migration_expected_downtime_seconds{vm="vm1"} 0.25"#),
            "{text}"
        );
        report.progress.as_mut().unwrap().downtime_ms = Some(80);
        report.finish(Phase::Completed, None);
        finished(&metrics, "vm1", &report);
        let text = metrics.encode();
        assert!(
            !text.contains(r#"dwcp_migration_round{vm="vm1"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dwcp_migrations_total{outcome="completed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("dwcp_migration_downtime_seconds_count 1"),
            "{text}"
        );
    }
}
