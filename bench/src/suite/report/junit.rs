//! `junit.xml`: one test case per judged metric and per failed case, so CI shows the
//! verdict next to the tests. FAIL is a `<failure>`, "not measured" is `<skipped>`, a
//! case that could not run is an `<error>`.

use std::fmt::Write as _;

use super::Report;
use crate::suite::targets::Status;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report as a JUnit XML document.
pub fn render(r: &Report) -> String {
    let failures = r
        .metrics
        .iter()
        .filter(|m| m.status == Status::Fail)
        .count();
    let skipped = r
        .metrics
        .iter()
        .filter(|m| matches!(m.status, Status::NotMeasured(_)))
        .count();
    let failed_cases: Vec<_> = r.cases.iter().filter(|c| c.error.is_some()).collect();
    let tests = r.metrics.len() + failed_cases.len();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"dwcp-bench\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        failed_cases.len(),
        r.wall_seconds
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"dwcp-bench suite {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
        r.plan.suite,
        failed_cases.len(),
        r.wall_seconds,
        escape(&r.started_utc)
    );
    let _ = writeln!(
        out,
        "    <properties><property name=\"verdict\" value=\"{}\"/></properties>",
        escape(&r.verdict.to_string())
    );
    for m in &r.metrics {
        let name = match &m.profile {
            Some(p) => format!("{} [{p}]", m.target),
            None => m.target.clone(),
        };
        let value = m.value.map_or_else(|| "none".into(), |v| format!("{v:.3}"));
        let _ = write!(
            out,
            "    <testcase classname=\"dwcp-bench.targets\" name=\"{}\">",
            escape(&name)
        );
        match &m.status {
            Status::Pass => {}
            Status::Fail => {
                let _ = write!(
                    out,
                    "<failure message=\"{}\"/>",
                    escape(&format!("measured {value}, target missed"))
                );
            }
            Status::NotMeasured(why) => {
                let _ = write!(out, "<skipped message=\"{}\"/>", escape(why));
            }
        }
        let _ = write!(
            out,
            "<system-out>{}</system-out>",
            escape(&format!("value {value}"))
        );
        out.push_str("</testcase>\n");
    }
    for c in failed_cases {
        let _ = writeln!(
            out,
            "    <testcase classname=\"dwcp-bench.cases\" name=\"{}\"><error message=\"{}\"/></testcase>",
            escape(&format!(
                "{} [{}] round {}",
                c.label(),
                c.profile,
                c.round + 1
            )),
            escape(c.error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::sample;

    #[test]
    fn is_well_formed_and_counts_match() {
        let xml = render(&sample::report());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(
            suite.attribute("tests"),
            Some(cases.len().to_string().as_str())
        );
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("skipped"), Some("1"));
        assert_eq!(suite.attribute("errors"), Some("1"));
        let error = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
        assert_eq!(
            error.attribute("message"),
            Some("socat <failed> & \"exited\"")
        );
    }

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("<a href='x'>&\u{1}"),
            "&lt;a href=&apos;x&apos;&gt;&amp;?"
        );
    }
}
