//! Turns the cases of a run into one [`MetricResult`] per target and profile.

use super::{
    cases::{CaseResult, Kind},
    link::LinkInfo,
    plan::GOAL_PROFILE,
    targets::{self, MetricResult, PeerValue, Target},
};
use crate::stats::median;

/// Why transfer time against zstd-only is not measured: the suite's transfers send
/// random files, on which any codec's ratio means nothing (the codec rows themselves are
/// measured on the guest-memory corpus, see [`super::codec`]).
const NO_CODEC: &str = "needs transfers of guest memory (the suite sends random files); \
                        see the codec rows measured on the corpus";

/// The cases of one profile.
struct ProfileCases<'a> {
    link: &'a LinkInfo,
    cases: Vec<&'a CaseResult>,
}

impl ProfileCases<'_> {
    fn ok(&self, kind: Kind, requested: &str) -> Vec<&CaseResult> {
        self.cases
            .iter()
            .copied()
            .filter(|c| c.kind == Some(kind) && c.requested == requested && c.error.is_none())
            .collect()
    }

    /// Median of `f` over the successful cases of `kind` with `requested` streams.
    fn median_of(
        &self,
        kind: Kind,
        requested: &str,
        f: impl Fn(&CaseResult) -> Option<f64>,
    ) -> Option<f64> {
        let values: Vec<f64> = self.ok(kind, requested).into_iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&values))
    }

    fn auto_goodput(&self) -> Option<f64> {
        self.median_of(Kind::Dwcp, "auto", |c| c.goodput_bps)
    }

    /// `(label, requested)` of every contender other than dwcp auto, in run order.
    fn others(&self) -> Vec<(Kind, String, String)> {
        let mut out: Vec<(Kind, String, String)> = Vec::new();
        for c in &self.cases {
            let Some(kind) = c.kind else { continue };
            if kind == Kind::Dwcp && c.requested == "auto" {
                continue;
            }
            if !out.iter().any(|(k, r, _)| *k == kind && *r == c.requested) {
                out.push((kind, c.requested.clone(), c.label()));
            }
        }
        out
    }

    /// Peers' values of `f` (medians), in the metric's unit.
    fn peers(&self, f: impl Fn(&CaseResult) -> Option<f64>) -> Vec<PeerValue> {
        self.others()
            .into_iter()
            .filter_map(|(kind, requested, label)| {
                self.median_of(kind, &requested, &f)
                    .map(|value| PeerValue { peer: label, value })
            })
            .collect()
    }

    /// Why auto has no successful case, for "not measured" rows.
    fn why_no_auto(&self) -> String {
        let failed = self
            .cases
            .iter()
            .find(|c| c.kind == Some(Kind::Dwcp) && c.requested == "auto" && c.error.is_some());
        match failed {
            Some(c) => format!(
                "`dwcp --streams auto` failed: {}",
                c.error.as_deref().unwrap_or("")
            ),
            None => "`dwcp --streams auto` did not run".into(),
        }
    }
}

/// Every target judged on every profile it applies to.
pub fn evaluate(links: &[LinkInfo], cases: &[CaseResult]) -> Vec<MetricResult> {
    let profiles: Vec<ProfileCases<'_>> = links
        .iter()
        .map(|link| ProfileCases {
            link,
            cases: cases.iter().filter(|c| c.profile == link.name).collect(),
        })
        .collect();
    let mut out = Vec::new();
    for p in &profiles {
        out.push(utilization(p, &targets::UTILIZATION));
    }
    match profiles.iter().find(|p| p.link.name == GOAL_PROFILE) {
        Some(p) => out.push(utilization(p, &targets::UTILIZATION_GOAL)),
        None => out.push(MetricResult::not_measured(
            &targets::UTILIZATION_GOAL,
            None,
            format!("the profile {GOAL_PROFILE} was not in this run"),
        )),
    }
    for p in &profiles {
        out.push(time_vs_v1(p));
    }
    out.push(MetricResult::not_measured(
        &targets::TIME_VS_V2,
        None,
        NO_CODEC,
    ));
    for p in &profiles {
        out.push(cpu(p));
        out.push(pba(p));
    }
    for p in &profiles {
        out.push(vs_iperf3(p));
    }
    out
}

fn utilization(p: &ProfileCases<'_>, target: &Target) -> MetricResult {
    let name = Some(p.link.name.as_str());
    let Some(rate) = p.link.rate_bps.filter(|r| *r > 0) else {
        return MetricResult::not_measured(target, name, "the link has no configured rate");
    };
    let percent = |bps: f64| bps / rate as f64 * 100.0;
    match p.auto_goodput() {
        Some(g) => MetricResult::measured(
            target,
            name,
            percent(g),
            p.peers(|c| c.goodput_bps.map(percent)),
        ),
        None => MetricResult::not_measured(target, name, p.why_no_auto()),
    }
}

fn time_vs_v1(p: &ProfileCases<'_>) -> MetricResult {
    let target = &targets::TIME_VS_V1;
    let name = Some(p.link.name.as_str());
    let Some(v1) = p
        .median_of(Kind::Copy, "1", |c| c.seconds)
        .filter(|s| *s > 0.0)
    else {
        return MetricResult::not_measured(
            target,
            name,
            "the plain single-stream copy did not run or failed",
        );
    };
    match p.median_of(Kind::Dwcp, "auto", |c| c.seconds) {
        Some(ours) => MetricResult::measured(
            target,
            name,
            ours / v1,
            p.peers(|c| c.seconds.map(|s| s / v1)),
        ),
        None => MetricResult::not_measured(target, name, p.why_no_auto()),
    }
}

fn cpu(p: &ProfileCases<'_>) -> MetricResult {
    let target = &targets::CPU_OVERHEAD;
    let name = Some(p.link.name.as_str());
    if p.ok(Kind::Dwcp, "auto").is_empty() {
        return MetricResult::not_measured(target, name, p.why_no_auto());
    }
    let busier = |c: &CaseResult| {
        let seconds = c.seconds.filter(|s| *s > 0.0)?;
        let cpu = match (c.sender_cpu_seconds, c.receiver_cpu_seconds) {
            (Some(a), Some(b)) => a.max(b),
            (one, other) => one.or(other)?,
        };
        Some(cpu / seconds * 100.0)
    };
    match p.median_of(Kind::Dwcp, "auto", |c| {
        (c.sender_cpu_seconds.is_some() && c.receiver_cpu_seconds.is_some())
            .then(|| busier(c))
            .flatten()
    }) {
        Some(v) => MetricResult::measured(target, name, v, p.peers(busier)),
        None if p.ok(Kind::Dwcp, "auto").iter().all(|c| c.capped) => MetricResult::not_measured(
            target,
            name,
            "`dwcp --streams auto` was stopped at the cap: no sender summary with its CPU time",
        ),
        None => MetricResult::not_measured(
            target,
            name,
            "no kernel CPU figures: the agents' eBPF probes were not loaded (run as root)",
        ),
    }
}

fn pba(p: &ProfileCases<'_>) -> MetricResult {
    let target = &targets::PBA_OVERHEAD;
    let name = Some(p.link.name.as_str());
    if p.ok(Kind::Dwcp, "auto").is_empty() {
        return MetricResult::not_measured(target, name, p.why_no_auto());
    }
    match p.median_of(Kind::Dwcp, "auto", |c| c.pba_overhead_percent) {
        Some(v) => MetricResult::measured(target, name, v, p.peers(|c| c.pba_overhead_percent)),
        None => MetricResult::not_measured(
            target,
            name,
            "no per-second sample of the receiving agent had a pool block in use",
        ),
    }
}

fn vs_iperf3(p: &ProfileCases<'_>) -> MetricResult {
    let target = &targets::VS_IPERF3;
    let name = Some(p.link.name.as_str());
    let Some(ours) = p.auto_goodput() else {
        return MetricResult::not_measured(target, name, p.why_no_auto());
    };
    let counts: Vec<usize> = p
        .ok(Kind::Dwcp, "auto")
        .iter()
        .filter_map(|c| c.streams)
        .collect();
    let n = median(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>()).round() as usize;
    match p
        .median_of(Kind::Iperf3, &n.to_string(), |c| c.goodput_bps)
        .filter(|g| *g > 0.0)
    {
        Some(ceiling) => MetricResult::measured(
            target,
            name,
            ours / ceiling * 100.0,
            p.peers(|c| c.goodput_bps.map(|g| g / ceiling * 100.0)),
        ),
        None => {
            MetricResult::not_measured(target, name, format!("no iperf3 -P {n} result in this run"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::targets::Status;

    fn link(name: &str, rate: Option<u64>) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            rate_bps: rate,
            rtt_ms: None,
            loss: None,
            kind: String::new(),
        }
    }

    fn case(kind: Kind, requested: &str, gbps: f64, streams: usize) -> CaseResult {
        CaseResult {
            profile: GOAL_PROFILE.into(),
            kind: Some(kind),
            requested: requested.into(),
            streams: Some(streams),
            bytes: 1_000_000_000,
            seconds: Some(8.0 / gbps),
            goodput_bps: Some(gbps * 1e9),
            sender_cpu_seconds: Some(0.5),
            receiver_cpu_seconds: Some(1.0),
            pba_overhead_percent: Some(10.0),
            ..CaseResult::default()
        }
    }

    fn find<'a>(results: &'a [MetricResult], id: &str) -> &'a MetricResult {
        results.iter().find(|r| r.target == id).unwrap()
    }

    #[test]
    fn judges_a_run_with_every_contender() {
        let cases = [
            case(Kind::Dwcp, "auto", 0.96, 8),
            case(Kind::Dwcp, "1", 0.1, 1),
            case(Kind::Iperf3, "8", 0.98, 8),
            case(Kind::Copy, "1", 0.08, 1),
        ];
        let results = evaluate(&[link(GOAL_PROFILE, Some(1_000_000_000))], &cases);
        let util = find(&results, targets::UTILIZATION.id);
        assert!((util.value.unwrap() - 96.0).abs() < 1e-9);
        assert_eq!(util.status, Status::Pass);
        assert_eq!(util.peers.len(), 3, "{:?}", util.peers);
        assert_eq!(
            find(&results, targets::UTILIZATION_GOAL.id).status,
            Status::Pass
        );
        let v1 = find(&results, targets::TIME_VS_V1.id);
        assert!((v1.value.unwrap() - 0.08 / 0.96).abs() < 1e-9);
        // 1.0 CPU-s of receiver over 8/0.96 s.
        let cpu = find(&results, targets::CPU_OVERHEAD.id);
        assert!((cpu.value.unwrap() - 12.0).abs() < 1e-9);
        let vs = find(&results, targets::VS_IPERF3.id);
        assert!((vs.value.unwrap() - 0.96 / 0.98 * 100.0).abs() < 1e-9);
        assert!(matches!(
            find(&results, targets::TIME_VS_V2.id).status,
            Status::NotMeasured(_)
        ));
        // The codec rows come from the corpus (`super::codec`), not from the transfers.
        assert!(!results.iter().any(|r| r.target == targets::HDE_RATIO.id));
    }

    #[test]
    fn loopback_and_failures_are_not_measured_not_zero() {
        let mut auto = case(Kind::Dwcp, "auto", 1.0, 4);
        auto.profile = "loopback".into();
        auto.error = Some("Connection refused".into());
        auto.goodput_bps = None;
        let results = evaluate(&[link("loopback", None)], &[auto]);
        let util = find(&results, targets::UTILIZATION.id);
        assert_eq!(
            util.status,
            Status::NotMeasured("the link has no configured rate".into())
        );
        let cpu = find(&results, targets::CPU_OVERHEAD.id);
        assert!(matches!(&cpu.status, Status::NotMeasured(w) if w.contains("Connection refused")));
        assert_eq!(cpu.value, None);
        let goal = find(&results, targets::UTILIZATION_GOAL.id);
        assert!(matches!(&goal.status, Status::NotMeasured(w) if w.contains("not in this run")));
    }

    #[test]
    fn a_capped_auto_case_is_not_blamed_on_the_probes() {
        let mut auto = case(Kind::Dwcp, "auto", 0.1, 4);
        auto.capped = true;
        auto.sender_cpu_seconds = None;
        let results = evaluate(&[link(GOAL_PROFILE, Some(1_000_000_000))], &[auto.clone()]);
        let cpu = find(&results, targets::CPU_OVERHEAD.id);
        assert!(matches!(&cpu.status, Status::NotMeasured(w) if w.contains("stopped at the cap")));
        auto.capped = false;
        let results = evaluate(&[link(GOAL_PROFILE, Some(1_000_000_000))], &[auto]);
        let cpu = find(&results, targets::CPU_OVERHEAD.id);
        assert!(matches!(&cpu.status, Status::NotMeasured(w) if w.contains("probes")));
    }
}
