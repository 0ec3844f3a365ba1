//! The suite's VM rows: `dwcp-bench migration` run inside the suite (QEMU native,
//! QEMU multifd with zstd and dwcp live, one after the other over fresh
//! `wan-1g-50ms-0.1pct` links), judged against the migration and VM start targets.
//! It boots three 1 GiB TCG guests (about 5 minutes), so the suite runs it with
//! `--migration` or in the full suite; otherwise the rows say how to get them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::targets::{self, MetricResult, PeerValue, Target};
use crate::migration::{self, CaseResult, Measured, Method};

/// Why the VM rows are not measured when the run did not ask for them.
pub const NOT_ASKED: &str =
    "run with `--migration` or `--suite full` (boots three 1 GiB TCG guests, ~5 min)";

/// What the report says about the VM rows' data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationData {
    /// The command that repeats the measurement on its own (`None`: not run).
    pub command: Option<String>,
    /// One line per method with its figures.
    pub summary: Vec<String>,
    /// Where its own report, logs and serial consoles are.
    pub dir: Option<PathBuf>,
}

const VM_TARGETS: [&Target; 5] = [
    &targets::MIGRATION_TIME,
    &targets::MIGRATION_DOWNTIME_SEED,
    &targets::MIGRATION_DOWNTIME,
    &targets::MIGRATION_SPEEDUP,
    &targets::VM_START,
];

/// The rows, all "not measured" for `why`.
pub fn not_measured(why: &str) -> Vec<MetricResult> {
    VM_TARGETS
        .iter()
        .map(|t| MetricResult::not_measured(t, Some(migration::PROFILE), why))
        .collect()
}

/// Runs the migration benchmark into `dir` and judges it.
pub fn evaluate(agent: Option<PathBuf>, dir: &Path) -> (Vec<MetricResult>, MigrationData) {
    eprintln!("== VM rows: live migration side by side (dwcp-bench migration)");
    let options = migration::Options::defaults(agent, dir.to_path_buf());
    let mut data = MigrationData {
        command: Some(options.command()),
        dir: Some(dir.to_path_buf()),
        ..MigrationData::default()
    };
    match migration::measure(&options, dir) {
        Ok(measured) => {
            data.summary = measured.cases.iter().map(line).collect();
            if let Err(err) = migration::write(&options, &measured, dir) {
                data.summary
                    .push(format!("its own report could not be written: {err:#}"));
            }
            (results(&measured, options.timeout_ms()), data)
        }
        Err(err) => (
            not_measured(&format!("the migration benchmark failed: {err:#}")),
            data,
        ),
    }
}

fn line(c: &CaseResult) -> String {
    let s =
        |v: Option<u64>, scale: f64| v.map_or("—".into(), |v| format!("{:.1}", v as f64 / scale));
    format!(
        "{}: {}, total {} s, downtime {} ms (QEMU) / {} ms (guest: STOP to RESUME), \
         {:.0} MB on the wire, guest after: {}{}",
        c.method,
        if c.completed {
            "completed"
        } else {
            "not completed"
        },
        s(c.total_ms, 1000.0),
        s(c.downtime_ms, 1.0),
        s(c.guest_downtime_ms, 1.0),
        c.wire_bytes as f64 / 1e6,
        c.verify.as_deref().unwrap_or("—"),
        c.error
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})")),
    )
}

/// The case of `method`, if it ran.
fn case(m: &Measured, method: Method) -> Option<&CaseResult> {
    m.cases.iter().find(|c| c.method == method.label())
}

fn results(m: &Measured, timeout_ms: u64) -> Vec<MetricResult> {
    let Some(dwcp) = case(m, Method::Dwcp) else {
        return not_measured("the dwcp method did not run");
    };
    let mut out = Vec::new();
    let profile = Some(migration::PROFILE);
    // VM start does not depend on the migration's outcome.
    out.push(match dwcp.vm_start_ms {
        Some(ms) => MetricResult::measured(&targets::VM_START, profile, ms as f64 / 1000.0, vec![]),
        None => MetricResult::not_measured(&targets::VM_START, profile, "the VM did not start"),
    });
    let intact = dwcp
        .verify
        .as_deref()
        .is_some_and(|v| v.starts_with("DWCP-VERIFY ok"));
    let (Some(total), Some(downtime), true) =
        (dwcp.total_ms, dwcp.downtime_ms, dwcp.completed && intact)
    else {
        let why = format!(
            "dwcp's live migration did not complete with the guest intact: {}",
            dwcp.error
                .as_deref()
                .or(dwcp.verify.as_deref())
                .unwrap_or("no verdict")
        );
        out.extend(not_measured(&why).into_iter().take(4));
        return out;
    };
    let peers = |f: fn(&CaseResult) -> Option<u64>, scale: f64| -> Vec<PeerValue> {
        [Method::Native, Method::MultifdZstd]
            .into_iter()
            .filter_map(|method| {
                let c = case(m, method)?;
                Some(PeerValue {
                    peer: method.label().to_owned(),
                    value: f(c)? as f64 / scale,
                })
            })
            .collect()
    };
    out.push(MetricResult::measured(
        &targets::MIGRATION_TIME,
        profile,
        total as f64 / 1000.0,
        peers(|c| c.total_ms, 1000.0),
    ));
    for target in [
        &targets::MIGRATION_DOWNTIME_SEED,
        &targets::MIGRATION_DOWNTIME,
    ] {
        out.push(MetricResult::measured(
            target,
            profile,
            downtime as f64,
            peers(|c| c.downtime_ms, 1.0),
        ));
    }
    out.push(match case(m, Method::Native) {
        Some(native) => {
            let native_ms = if native.completed {
                native.total_ms
            } else {
                Some(timeout_ms)
            };
            match native_ms {
                Some(ms) => MetricResult::measured(
                    &targets::MIGRATION_SPEEDUP,
                    profile,
                    ms as f64 / total.max(1) as f64,
                    peers(|c| c.total_ms, 1000.0),
                ),
                None => MetricResult::not_measured(
                    &targets::MIGRATION_SPEEDUP,
                    profile,
                    "QEMU native gave no total time",
                ),
            }
        }
        None => MetricResult::not_measured(
            &targets::MIGRATION_SPEEDUP,
            profile,
            "QEMU native did not run",
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::GuestShape;

    fn case(method: Method, total_ms: Option<u64>, downtime_ms: u64, verify: &str) -> CaseResult {
        CaseResult {
            method: method.label().to_owned(),
            completed: total_ms.is_some(),
            total_ms,
            downtime_ms: Some(downtime_ms),
            verify: Some(verify.to_owned()),
            vm_start_ms: (method == Method::Dwcp).then_some(1200),
            ..CaseResult::default()
        }
    }

    fn measured(cases: Vec<CaseResult>) -> Measured {
        Measured {
            profile: migration::PROFILE.into(),
            guest: GuestShape {
                mem_mib: 1024,
                workload_mib: 512,
                rate_mib_s: 16,
            },
            cases,
            load_before: String::new(),
            load_after: String::new(),
        }
    }

    fn value(results: &[MetricResult], id: &str) -> (Option<f64>, targets::Status) {
        let r = results.iter().find(|r| r.target == id).expect("row");
        (r.value, r.status.clone())
    }

    #[test]
    fn rows_come_from_the_dwcp_case_with_the_qemu_methods_as_peers() {
        let m = measured(vec![
            case(Method::Native, Some(60_000), 290, "DWCP-VERIFY ok pass=3"),
            case(
                Method::MultifdZstd,
                Some(10_000),
                310,
                "DWCP-VERIFY ok pass=3",
            ),
            case(Method::Dwcp, Some(15_000), 320, "DWCP-VERIFY ok pass=3"),
        ]);
        let r = results(&m, 240_000);
        assert_eq!(r.len(), 5);
        assert_eq!(
            value(&r, "vm_migration_speedup_vs_qemu"),
            (Some(4.0), targets::Status::Pass)
        );
        assert_eq!(
            value(&r, "vm_migration_time"),
            (Some(15.0), targets::Status::Pass)
        );
        assert_eq!(
            value(&r, "vm_migration_downtime"),
            (Some(320.0), targets::Status::Fail)
        );
        assert_eq!(
            value(&r, "vm_migration_downtime_seed"),
            (Some(320.0), targets::Status::Pass)
        );
        assert_eq!(
            value(&r, "vm_start_time"),
            (Some(1.2), targets::Status::Pass)
        );
        let time = r
            .iter()
            .find(|r| r.target == "vm_migration_time")
            .expect("row");
        assert_eq!(time.peers.len(), 2);
        assert_eq!(time.peers[1].value, 10.0);
    }

    #[test]
    fn a_native_run_that_did_not_finish_counts_as_the_limit() {
        let m = measured(vec![
            case(Method::Native, None, 0, "—"),
            case(Method::Dwcp, Some(40_000), 200, "DWCP-VERIFY ok pass=1"),
        ]);
        let r = results(&m, 240_000);
        assert_eq!(value(&r, "vm_migration_speedup_vs_qemu").0, Some(6.0));
        assert_eq!(value(&r, "vm_migration_time").1, targets::Status::Fail);
    }

    #[test]
    fn a_guest_that_did_not_verify_measures_nothing_but_its_start() {
        let m = measured(vec![case(
            Method::Dwcp,
            Some(15_000),
            100,
            "DWCP-VERIFY FAIL page=3",
        )]);
        let r = results(&m, 240_000);
        assert_eq!(r.len(), 5);
        assert_eq!(value(&r, "vm_start_time").1, targets::Status::Pass);
        for id in [
            "vm_migration_time",
            "vm_migration_downtime",
            "vm_migration_speedup_vs_qemu",
        ] {
            let (v, status) = value(&r, id);
            assert_eq!(v, None);
            assert!(
                matches!(&status, targets::Status::NotMeasured(why) if why.contains("FAIL page=3")),
                "{status:?}"
            );
        }
    }
}
