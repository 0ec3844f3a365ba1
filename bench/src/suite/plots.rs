//! The suite's plots, per profile: goodput against stream count (dwcp, iperf3 -P N,
//! the plain copy) and the link's utilization over time from the receiving agent's
//! per-second kernel byte counts.

use std::path::Path;

use super::{
    cases::{CaseResult, Kind},
    link::LinkInfo,
};
use crate::{plot, stats::median};

/// File name of a profile's goodput plot.
pub fn goodput_file(profile: &str) -> String {
    format!("goodput-{}.svg", profile.replace([':', '/'], "_"))
}

/// File name of a profile's utilization plot.
pub fn utilization_file(profile: &str) -> String {
    format!("utilization-{}.svg", profile.replace([':', '/'], "_"))
}

/// Stream-count categories in numeric order, `auto` last.
fn categories(cases: &[&CaseResult]) -> Vec<String> {
    let mut numbers: Vec<usize> = cases
        .iter()
        .filter_map(|c| c.requested.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut out: Vec<String> = numbers.iter().map(usize::to_string).collect();
    if cases.iter().any(|c| c.requested == "auto") {
        out.push("auto".into());
    }
    out
}

/// Draws both plots of every profile into `dir`.
pub fn draw(dir: &Path, links: &[LinkInfo], cases: &[CaseResult]) -> anyhow::Result<()> {
    for link in links {
        let mine: Vec<&CaseResult> = cases.iter().filter(|c| c.profile == link.name).collect();
        goodput(&dir.join(goodput_file(&link.name)), link, &mine)?;
        utilization(&dir.join(utilization_file(&link.name)), link, &mine)?;
    }
    Ok(())
}

fn goodput(path: &Path, link: &LinkInfo, cases: &[&CaseResult]) -> anyhow::Result<()> {
    let labels = categories(cases);
    let per_kind = |kind: Kind| -> (Vec<f64>, Vec<Vec<f64>>) {
        let rounds: Vec<Vec<f64>> = labels
            .iter()
            .map(|label| {
                cases
                    .iter()
                    .filter(|c| c.kind == Some(kind) && &c.requested == label)
                    .filter_map(|c| c.goodput_bps.map(|b| b / 1e9))
                    .collect()
            })
            .collect();
        let medians = rounds
            .iter()
            .map(|v| if v.is_empty() { f64::NAN } else { median(v) })
            .collect();
        (medians, rounds)
    };
    let (dwcp, dwcp_rounds) = per_kind(Kind::Dwcp);
    let (iperf, iperf_rounds) = per_kind(Kind::Iperf3);
    let (copy, copy_rounds) = per_kind(Kind::Copy);
    plot::categories_svg(
        path,
        &format!("Goodput vs streams, {}", link.name),
        "streams",
        "Gbit/s",
        &labels,
        &[
            plot::Line {
                name: "dwcp-agent send",
                medians: &dwcp,
                rounds: &dwcp_rounds,
            },
            plot::Line {
                name: "iperf3 -P N",
                medians: &iperf,
                rounds: &iperf_rounds,
            },
            plot::Line {
                name: "socat copy",
                medians: &copy,
                rounds: &copy_rounds,
            },
        ],
    )
}

fn utilization(path: &Path, link: &LinkInfo, cases: &[&CaseResult]) -> anyhow::Result<()> {
    let (scale, unit, reference) = match link.rate_bps {
        Some(rate) if rate > 0 => (
            100.0 / rate as f64,
            "% of the link rate",
            Some(("link rate", 100.0)),
        ),
        _ => (1e-9, "Gbit/s", None),
    };
    let named: Vec<(String, Vec<(f64, f64)>)> = cases
        .iter()
        .filter(|c| c.kind == Some(Kind::Dwcp) && c.round == 0)
        .map(|c| {
            let points = c
                .rx_series
                .iter()
                .map(|&(t, bps)| (t, bps * scale))
                .collect();
            (c.label(), points)
        })
        .collect();
    let series: Vec<plot::Series<'_>> = named
        .iter()
        .map(|(name, points)| plot::Series { name, points })
        .collect();
    plot::series_svg(
        path,
        &format!(
            "Link utilization over time (receiver's kernel bytes), {}",
            link.name
        ),
        ("seconds since the send started", unit),
        &series,
        reference,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_numeric_then_auto() {
        let case = |r: &str| CaseResult {
            requested: r.into(),
            ..CaseResult::default()
        };
        let cases = [case("16"), case("auto"), case("4"), case("1"), case("16")];
        let refs: Vec<&CaseResult> = cases.iter().collect();
        assert_eq!(categories(&refs), ["1", "4", "16", "auto"]);
    }

    #[test]
    fn draws_both_plots_per_profile() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::super::report::sample::report();
        draw(dir.path(), &report.links, &report.cases).unwrap();
        let name = &report.links[0].name;
        assert!(
            std::fs::read_to_string(dir.path().join(goodput_file(name)))
                .unwrap()
                .contains("socat copy")
        );
        let util = std::fs::read_to_string(dir.path().join(utilization_file(name))).unwrap();
        assert!(util.contains("% of the link rate"), "rate known");
    }
}
