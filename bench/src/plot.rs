//! SVG line plots (plotters, SVG only): one value per category for several contenders,
//! and time series.

use std::path::Path;

use anyhow::Context as _;
use plotters::{
    coord::ranged1d::{IntoSegmentedCoord as _, SegmentValue},
    prelude::*,
};

/// Line colours, in order.
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// One line: a name, the median per category and every round's value per category.
#[derive(Debug)]
pub struct Line<'a> {
    /// Legend text.
    pub name: &'a str,
    /// Median per category (the line); NaN where the contender has no value.
    pub medians: &'a [f64],
    /// Each round's value per category (the dots).
    pub rounds: &'a [Vec<f64>],
}

/// Draws `lines` over the categories `labels` into an SVG file at `path`.
pub fn categories_svg(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    labels: &[String],
    lines: &[Line<'_>],
) -> anyhow::Result<()> {
    let n = u32::try_from(labels.len()).context("Too many categories")?;
    let top = lines
        .iter()
        .flat_map(|l| l.medians.iter().chain(l.rounds.iter().flatten()))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        // An integer range includes its end: 0..n-1 gives exactly n segments.
        .build_cartesian_2d(
            (0..n.saturating_sub(1)).into_segmented(),
            0.0..(top * 1.35).max(1.0),
        )?;
    let label_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            labels.get(*i as usize).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(labels.len())
        .x_label_formatter(&label_of)
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (line, color) in lines.iter().zip(COLORS.iter().cycle()) {
        let color = *color;
        let at = |i: usize| SegmentValue::CenterOf(u32::try_from(i).unwrap_or(u32::MAX));
        let points = || {
            line.medians
                .iter()
                .enumerate()
                .filter(|(_, y)| y.is_finite())
                .map(move |(i, &y)| (at(i), y))
        };
        chart
            .draw_series(LineSeries::new(points(), color.stroke_width(2)))?
            .label(format!("{} (median)", line.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points().map(|p| Circle::new(p, 4, color.filled())))?;
        chart.draw_series(line.rounds.iter().enumerate().flat_map(|(i, values)| {
            values
                .iter()
                .map(move |&y| Circle::new((at(i), y), 2, color.mix(0.5).filled()))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("Write {}", path.display()))?;
    Ok(())
}

/// One time series: a name and its `(x, y)` points.
#[derive(Debug)]
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// Points in x order.
    pub points: &'a [(f64, f64)],
}

/// Draws time series into an SVG file at `path`, with an optional horizontal reference
/// line (e.g. 100% of the link rate).
pub fn series_svg(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series<'_>],
    reference: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let right = all().map(|p| p.0).fold(1.0_f64, f64::max);
    let top = all()
        .map(|p| p.1)
        .chain(reference.map(|r| r.1))
        .fold(0.0_f64, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..right * 1.02, 0.0..(top * 1.25).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(TRANSPARENT)
        .draw()?;
    if let Some((name, y)) = reference {
        chart
            .draw_series(LineSeries::new(
                [(0.0, y), (right * 1.02, y)],
                BLACK.mix(0.4),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    }
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("Write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_both_lines_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let labels: Vec<String> = ["1", "4", "auto (8)"].map(String::from).to_vec();
        categories_svg(
            &path,
            "t",
            "streams",
            "Gbit/s",
            &labels,
            &[
                Line {
                    name: "ours",
                    medians: &[1.0, 2.0, 3.0],
                    rounds: &[vec![0.9, 1.1], vec![2.0], vec![3.0]],
                },
                Line {
                    name: "peer",
                    medians: &[2.0, 3.0, 4.0],
                    rounds: &[vec![], vec![], vec![]],
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in ["auto (8)", "ours (median)", "peer (median)", "streams"] {
            assert!(svg.contains(text), "missing {text}");
        }
    }

    #[test]
    fn one_category_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.svg");
        let line = Line {
            name: "ours",
            medians: &[1.0],
            rounds: &[vec![1.0]],
        };
        categories_svg(&path, "t", "x", "y", &["16".into()], &[line]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(">\n16\n<"));
    }

    #[test]
    fn series_plot_has_every_legend_and_skips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.svg");
        series_svg(
            &path,
            "utilization",
            ("seconds", "% of link rate"),
            &[
                Series {
                    name: "dwcp --streams 4",
                    points: &[(1.0, 50.0), (2.0, 90.0)],
                },
                Series {
                    name: "dwcp --streams auto",
                    points: &[],
                },
            ],
            Some(("link rate", 100.0)),
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "dwcp --streams 4",
            "dwcp --streams auto",
            "link rate",
            "seconds",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
    }

    #[test]
    fn missing_category_values_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.svg");
        let line = Line {
            name: "ours",
            medians: &[1.0, f64::NAN],
            rounds: &[vec![], vec![]],
        };
        categories_svg(&path, "t", "x", "y", &["1".into(), "256".into()], &[line]).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("NaN"));
    }
}
