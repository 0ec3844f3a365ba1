//! Grafana dashboards and the Prometheus configuration, recording rules and alerts,
//! checked three ways: against the one list of exported metrics (`metrics::names::ALL`),
//! by `promtool`, and by a real Prometheus scraping real agents, which must evaluate
//! every dashboard query and every rule to data.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The files directly in a repository folder whose names end in `ext`, sorted.
fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "No *{ext} in {dir}");
    files
}

/// Every exported metric name, from the one module that defines them.
fn exported() -> BTreeSet<&'static str> {
    dwcp_agent::metrics::names::ALL
        .iter()
        .map(|d| d.name)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Dashboards

/// A dashboard JSON file in grafana/dashboards/.
struct Dashboard {
    /// File name.
    file: String,
    /// Parsed JSON.
    json: Value,
}

impl Dashboard {
    /// Every dashboard, sorted by file name.
    fn all() -> Vec<Self> {
        files_in("grafana/dashboards", ".json")
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("read dashboard");
                let json = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
                let file = path
                    .file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned();
                Self { file, json }
            })
            .collect()
    }

    /// Panels, with those nested in collapsed rows.
    fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            out.push(panel);
            out.extend(panel["panels"].as_array().into_iter().flatten());
        }
        out
    }

    /// The query of every panel target, labelled `file / panel title`.
    fn panel_queries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a target of {panel} has no expr", self.file));
                let title = panel["title"].as_str().unwrap_or_default();
                let what = format!("{} / {title}", self.file);
                out.push((what, expr.to_owned()));
            }
        }
        out
    }

    /// The queries of the template variables that read Prometheus (`label_values(...)`).
    fn variable_queries(&self) -> Vec<(String, String)> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "query")
            .map(|v| {
                let query = v["query"]["query"]
                    .as_str()
                    .or_else(|| v["query"].as_str())
                    .unwrap_or_else(|| panic!("{}: variable {} has no query", self.file, v));
                let name = v["name"].as_str().unwrap_or_default();
                (format!("{} / ${name}", self.file), query.to_owned())
            })
            .collect()
    }
}

/// Values Grafana substitutes before a query reaches Prometheus, as the tests substitute
/// them: every host, and windows that hold several samples at a 1 s scrape interval.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// `expr` as Grafana sends it to Prometheus with every host selected.
fn grafana_substituted(expr: &str) -> String {
    let out = GRAFANA_VARIABLES
        .iter()
        .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value));
    assert!(
        !out.contains('$'),
        "{expr}: a Grafana variable the tests do not know; add it to GRAFANA_VARIABLES"
    );
    out
}

/// The (selector, label) of a `label_values(selector, label)` variable query.
fn label_values_args(query: &str) -> (&str, &str) {
    let args = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("Unsupported variable query {query}: use label_values(m, l)"));
    let (selector, label) = args
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("{query}: label_values needs a metric and a label"));
    (selector.trim(), label.trim())
}

// ---------------------------------------------------------------------------------------
// Prometheus rules

/// Whether a rule records a series or raises an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RuleKind {
    /// `record:`
    Recording,
    /// `alert:`
    Alerting,
}

/// A rule read from prometheus/rules/.
#[derive(Debug)]
struct Rule {
    /// File name.
    file: String,
    /// Recording or alerting.
    kind: RuleKind,
    /// The recorded series or the alert's name.
    name: String,
    /// The PromQL expression.
    expr: String,
}

impl Rule {
    /// Every rule of every file in prometheus/rules/.
    ///
    /// The files are read line by line, not by a YAML parser: each rule is `- record:` or
    /// `- alert:` followed by `expr:` on one line or as a block scalar (`|`, `>`). The
    /// privileged test checks that Prometheus loads exactly the rules found here.
    fn all() -> Vec<Self> {
        let mut rules = Vec::new();
        for path in files_in("prometheus/rules", ".yml") {
            let file = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read rule file");
            let lines: Vec<&str> = text.lines().collect();
            let mut head: Option<(RuleKind, String)> = None;
            let mut i = 0;
            while let Some(line) = lines.get(i) {
                let indent = line.len() - line.trim_start().len();
                let item = line.trim_start().trim_start_matches("- ");
                if let Some(name) = item.strip_prefix("record:") {
                    assert!(head.is_none(), "{file}: {line}: previous rule has no expr");
                    head = Some((RuleKind::Recording, name.trim().to_owned()));
                } else if let Some(name) = item.strip_prefix("alert:") {
                    assert!(head.is_none(), "{file}: {line}: previous rule has no expr");
                    head = Some((RuleKind::Alerting, name.trim().to_owned()));
                } else if let Some(value) = item.strip_prefix("expr:") {
                    let value = value.trim();
                    let expr = if value.starts_with(['|', '>']) {
                        let mut block = Vec::new();
                        while let Some(next) = lines.get(i + 1).filter(|next| {
                            next.trim().is_empty() || next.len() - next.trim_start().len() > indent
                        }) {
                            block.push(next.trim());
                            i += 1;
                        }
                        block.join("\n").trim().to_owned()
                    } else {
                        assert!(
                            !value.starts_with(['"', '\'']),
                            "{file}: {line}: write expressions unquoted or as a block (|)"
                        );
                        value.to_owned()
                    };
                    let (kind, name) = head
                        .take()
                        .unwrap_or_else(|| panic!("{file}: {line}: expr without record/alert"));
                    assert!(!expr.is_empty(), "{file}: {name} has an empty expr");
                    rules.push(Self {
                        file: file.clone(),
                        kind,
                        name,
                        expr,
                    });
                }
                i += 1;
            }
            assert!(head.is_none(), "{file}: last rule has no expr");
        }
        assert!(!rules.is_empty(), "No rules in prometheus/rules");
        rules
    }
}

// ---------------------------------------------------------------------------------------
// PromQL

/// The identifiers of a PromQL expression (metric, recording rule, function, label and
/// keyword names), skipping strings, range and subquery brackets, and numbers.
fn identifiers(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            '[' => {
                for (_, d) in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_' || d == ':' || d == '.') {
                        break;
                    }
                    end = i + d.len_utf8();
                    chars.next();
                }
                if !c.is_ascii_digit() {
                    out.push(&expr[start..end]);
                }
            }
            _ => {}
        }
    }
    out
}

/// The agent metrics an expression names.
fn metric_names(expr: &str) -> BTreeSet<&str> {
    identifiers(expr)
        .into_iter()
        .filter(|i| i.starts_with("dwcp_"))
        .collect()
}

/// The recording-rule series an expression names (`level:metric:operations`).
fn recorded_names(expr: &str) -> BTreeSet<&str> {
    identifiers(expr)
        .into_iter()
        .filter(|i| i.contains(':'))
        .collect()
}

/// `expr` with each comparison made a `bool` comparison: an alert's condition returns
/// only the series past its threshold (none on a healthy host), its `bool` form returns
/// 0 or 1 for every series compared, so evaluating it shows the alert watches real data.
fn with_bool_comparisons(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len() + 16);
    let mut braces = 0_u32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut chars = expr.char_indices();
    while let Some((i, c)) = chars.next() {
        out.push(c);
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '=' | '!' | '>' | '<' if braces == 0 => {
                let rest = &expr[i + 1..];
                let op = if rest.starts_with('=') {
                    out.push('=');
                    chars.next();
                    &expr[i..i + 2]
                } else {
                    &expr[i..=i]
                };
                assert!(op != "=" && op != "!", "{expr}: stray {op}");
                let after = &expr[i + op.len()..];
                if !after.trim_start().starts_with("bool") {
                    out.push_str(" bool");
                    if !after.starts_with(char::is_whitespace) {
                        out.push(' ');
                    }
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Checks without an agent

#[test]
fn dashboards_and_rules_name_only_exported_metrics() {
    let exported = exported();
    let rules = Rule::all();
    let recorded: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r.kind == RuleKind::Recording)
        .map(|r| r.name.as_str())
        .collect();
    let mut checked = 0;
    for dashboard in Dashboard::all() {
        let mut queries = dashboard.panel_queries();
        queries.extend(dashboard.variable_queries());
        assert!(!queries.is_empty(), "{} has no queries", dashboard.file);
        for (what, expr) in &queries {
            for name in metric_names(expr) {
                let name = dwcp_agent::metrics::names::metric_of_series(name);
                assert!(exported.contains(name), "{what}: {name} is not exported");
                checked += 1;
            }
            // Dashboards read the agents' own series, so that they work on a Prometheus
            // without our recording rules.
            let recorded = recorded_names(expr);
            assert!(
                recorded.is_empty(),
                "{what}: uses recording rules {recorded:?}; query the exported metrics"
            );
        }
    }
    for rule in &rules {
        for name in metric_names(&rule.expr) {
            assert!(
                exported.contains(name),
                "{} / {}: {name} is not exported",
                rule.file,
                rule.name
            );
            checked += 1;
        }
        for name in recorded_names(&rule.expr) {
            assert!(
                recorded.contains(name),
                "{} / {}: {name} is not a recording rule in prometheus/rules",
                rule.file,
                rule.name
            );
        }
    }
    assert!(checked > 0, "No metric referenced by any dashboard or rule");
}

#[test]
fn every_exported_metric_is_on_a_dashboard_panel() {
    let mut shown = BTreeSet::new();
    for dashboard in Dashboard::all() {
        for (_, expr) in dashboard.panel_queries() {
            shown.extend(
                metric_names(&expr)
                    .into_iter()
                    .map(|n| dwcp_agent::metrics::names::metric_of_series(n).to_owned()),
            );
        }
    }
    let missing: Vec<&str> = exported()
        .into_iter()
        .filter(|name| !shown.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "Exported but on no dashboard panel: {missing:?}"
    );
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for dashboard in Dashboard::all() {
        let file = &dashboard.file;
        let json = &dashboard.json;
        let uid = json["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        assert!(
            json["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert!(
            json["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&"dwcp".into())),
            "{file}: needs the tag dwcp (the dashboards link each other by it)"
        );

        let variables = json["templating"]["list"].as_array().expect("templating");
        let variable = |name: &str| {
            variables
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{file}: no ${name} variable"))
        };
        let datasource = variable("datasource");
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");
        let instance = variable("instance");
        assert_eq!(instance["type"], "query", "{file}");
        assert_eq!(instance["datasource"]["uid"], "${datasource}", "{file}");
        assert_eq!(instance["includeAll"], true, "{file}: $instance needs All");
        assert_eq!(
            instance["allValue"], ".*",
            "{file}: $instance All must be .*"
        );

        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for panel in dashboard.panels() {
            let title = panel["title"].as_str().expect("panel title");
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let grid = &panel["gridPos"];
            let (x, y, w, h) = (
                grid["x"].as_u64().expect("x"),
                grid["y"].as_u64().expect("y"),
                grid["w"].as_u64().expect("w"),
                grid["h"].as_u64().expect("h"),
            );
            assert!(w > 0 && h > 0 && x + w <= 24, "{file} / {title}: gridPos");
            for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
                assert!(
                    cells.insert(cell),
                    "{file} / {title} overlaps another panel"
                );
            }
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file} / {title}: describe what the panel shows"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file} / {title}"
            );
            if panel["type"] != "table" {
                assert!(
                    panel["fieldConfig"]["defaults"]["unit"].is_string(),
                    "{file} / {title}: set a unit"
                );
            }
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file} / {title}: no query");
            let mut ref_ids = BTreeSet::new();
            for target in targets {
                assert!(
                    ref_ids.insert(target["refId"].as_str().expect("refId")),
                    "{file} / {title}: refId used twice"
                );
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file} / {title}"
                );
                let expr = target["expr"].as_str().expect("expr");
                // Each selector of an agent metric follows the host picker.
                for (at, _) in expr.match_indices("dwcp_") {
                    let selector = expr[at..]
                        .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
                    assert!(
                        selector.starts_with("{instance=~\"$instance\""),
                        "{file} / {title}: {expr}: filter each metric by instance=~\"$instance\""
                    );
                }
            }
        }
    }
}

/// Runs promtool, failing with its output.
fn promtool(args: &[&Path]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package prometheus; run `cargo xtask setup`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_config_and_the_rules() {
    let config = repo("prometheus/prometheus.yml");
    let out = promtool(&[Path::new("check"), Path::new("config"), &config]);
    let rule_files = files_in("prometheus/rules", ".yml");
    // The configuration loads every rule file (check config checks them too).
    assert!(
        out.contains(&format!("{} rule files found", rule_files.len())),
        "prometheus.yml must list every file of prometheus/rules: {out}"
    );
    let mut args = vec![Path::new("check"), Path::new("rules")];
    args.extend(rule_files.iter().map(PathBuf::as_path));
    promtool(&args);
}

#[test]
fn promtool_rule_unit_tests_pass_and_cover_every_alert() {
    let tests = files_in("prometheus/tests", ".yml");
    let mut text = String::new();
    for file in &tests {
        promtool(&[Path::new("test"), Path::new("rules"), file]);
        text.push_str(&std::fs::read_to_string(file).expect("read test file"));
    }
    for rule in Rule::all().iter().filter(|r| r.kind == RuleKind::Alerting) {
        assert!(
            text.contains(&format!("alertname: {}\n", rule.name)),
            "No promtool unit test in prometheus/tests for alert {}",
            rule.name
        );
    }
}

#[test]
fn readme_describes_every_dashboard() {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let section = readme
        .split_once("## Prometheus and Grafana")
        .expect("README section \"Prometheus and Grafana\"")
        .1;
    for dashboard in Dashboard::all() {
        let title = dashboard.json["title"].as_str().expect("title");
        assert!(
            section.contains(&format!("**{title}**")),
            "README's Prometheus and Grafana section does not describe **{title}**"
        );
    }
}

#[test]
fn promql_helpers() {
    assert_eq!(
        identifiers(r#"sum by (instance) (rate(dwcp_x_total{a="dwcp_no:t"}[5m:1m])) / 1e9"#),
        ["sum", "by", "instance", "rate", "dwcp_x_total", "a"]
    );
    assert_eq!(
        recorded_names("instance:dwcp_a:rate1m > 15 and b"),
        BTreeSet::from(["instance:dwcp_a:rate1m"])
    );
    assert_eq!(
        with_bool_comparisons(r#"up{job!="x"} == 0"#),
        r#"up{job!="x"} == bool 0"#
    );
    assert_eq!(
        with_bool_comparisons("a > 15\nand b >= bool 10 or c<1"),
        "a > bool 15\nand b >= bool 10 or c< bool 1"
    );
    assert_eq!(
        grafana_substituted("rate(m{instance=~\"$instance\"}[$__rate_interval])"),
        "rate(m{instance=~\".*\"}[1m])"
    );
    assert_eq!(
        label_values_args("label_values(dwcp_build_info, instance)"),
        ("dwcp_build_info", "instance")
    );
}

// ---------------------------------------------------------------------------------------
// A real Prometheus

/// Percent-encodes a URL query value.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").expect("write to String");
        }
    }
    out
}

/// A `prometheus` process running the repository's configuration and rules (with test
/// targets and a 1 s interval) on a free port, with its storage in a temporary
/// directory; killed when dropped, before the directory is removed.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) as the job `dwcp-agent`.
    fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = std::fs::read_to_string(repo("prometheus/prometheus.yml"))
            .expect("prometheus/prometheus.yml");
        let target_lines: String = targets
            .iter()
            .map(|t| format!("          - {t}\n"))
            .collect();
        let config = [
            ("scrape_interval: 15s", "scrape_interval: 1s"),
            ("evaluation_interval: 15s", "evaluation_interval: 1s"),
            ("          - 127.0.0.1:9477\n", target_lines.as_str()),
        ]
        .iter()
        .fold(config, |text, (from, to)| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "prometheus/prometheus.yml changed: the test replaces {from:?} once"
            );
            text.replacen(from, to, 1)
        });
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        std::fs::create_dir(dir.path().join("rules")).expect("mkdir rules");
        for file in files_in("prometheus/rules", ".yml") {
            let name = file.file_name().expect("file name");
            std::fs::copy(&file, dir.path().join("rules").join(name)).expect("copy rules");
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .expect("addr");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (Debian package prometheus; run `cargo xtask setup`)");
        Self { child, addr, dir }
    }

    /// Waits until /-/ready answers 200; fails with the log if Prometheus exits or hangs.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _)) = common::http_get(self.addr, "/-/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Prometheus exited early ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus not ready after 60 s: {}", self.log_text());
    }

    /// GET an API path; returns `data` of a successful answer, or the error.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) =
            common::http_get(self.addr, path).map_err(|e| format!("GET {path}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))?;
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {}: {}",
                json["errorType"], json["error"]
            ))
        }
    }

    /// Evaluates `expr` now; returns the result (vector, matrix or scalar) or the error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values of `label` on the series matching `selector`.
    fn label_values(&self, selector: &str, label: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?{}={}",
            url_encode("match[]"),
            url_encode(selector)
        ))?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }

    /// The end of Prometheus's log.
    fn log_text(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod privileged {
    use super::*;
    use common::Agent;

    /// What one round of checks found wrong; empty when everything holds.
    struct Round {
        problems: Vec<String>,
    }

    impl Round {
        fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
            if !ok {
                self.problems.push(problem());
            }
        }

        /// `expr` must evaluate and, unless `may_be_empty`, return data.
        fn query(&mut self, prometheus: &Prometheus, what: &str, expr: &str, may_be_empty: bool) {
            match prometheus.query(expr) {
                Ok(result) => {
                    self.check(may_be_empty || !result.is_empty(), || {
                        format!("{what}: no data for {expr}")
                    });
                }
                Err(e) => self.problems.push(format!("{what}: {expr}: {e}")),
            }
        }
    }

    /// Every check against the running Prometheus, once.
    fn round(prometheus: &Prometheus, healthy: &str, unprobed: &str, down: &str) -> Round {
        let mut round = Round {
            problems: Vec::new(),
        };
        // The agent's own sockets are measured: Prometheus's scrapes are traffic on them,
        // and its keep-alive scrape connection is an open flow with tcp_probe data.
        for (what, expr) in [
            (
                "bytes of the scrapes",
                format!("dwcp_kernel_tx_bytes_total{{instance=\"{healthy}\"}} > 0"),
            ),
            (
                "the scrape connection as a flow",
                format!("dwcp_tcp_srtt_seconds{{instance=\"{healthy}\", local=\"{healthy}\"}}"),
            ),
        ] {
            round.query(prometheus, what, &expr, false);
        }

        for dashboard in Dashboard::all() {
            for (what, expr) in dashboard.panel_queries() {
                let expr = grafana_substituted(&expr);
                round.query(prometheus, &what, &expr, during_a_migration_only(&expr));
            }
            for (what, query) in dashboard.variable_queries() {
                let (selector, label) = label_values_args(&query);
                match prometheus.label_values(selector, label) {
                    Ok(values) => round.check(
                        values.contains(&healthy.into()) && values.contains(&unprobed.into()),
                        || format!("{what}: {query} lacks the agents: {values:?}"),
                    ),
                    Err(e) => round.problems.push(format!("{what}: {query}: {e}")),
                }
            }
        }

        // The rules as Prometheus loaded them.
        let rules = match prometheus.api("/api/v1/rules") {
            Ok(data) => data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<Value>>(),
            Err(e) => {
                round.problems.push(format!("/api/v1/rules: {e}"));
                Vec::new()
            }
        };
        let loaded: BTreeSet<(RuleKind, String)> = rules
            .iter()
            .map(|r| {
                let kind = if r["type"] == "alerting" {
                    RuleKind::Alerting
                } else {
                    RuleKind::Recording
                };
                (kind, r["name"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        let in_files: BTreeSet<(RuleKind, String)> =
            Rule::all().into_iter().map(|r| (r.kind, r.name)).collect();
        round.check(loaded == in_files, || {
            format!("Prometheus loaded {loaded:?}, the files hold {in_files:?}")
        });
        for rule in &rules {
            let name = rule["name"].as_str().unwrap_or_default();
            let expr = rule["query"].as_str().unwrap_or_default();
            round.check(rule["health"] == "ok", || {
                format!(
                    "rule {name}: health {} {}",
                    rule["health"], rule["lastError"]
                )
            });
            if rule["type"] == "alerting" {
                // Valid, empty on healthy hosts; its comparisons as bool return data.
                round.query(prometheus, name, expr, true);
                round.query(
                    prometheus,
                    name,
                    &with_bool_comparisons(expr),
                    during_a_migration_only(expr),
                );
            } else {
                round.query(prometheus, name, expr, false);
                round.query(prometheus, &format!("recorded {name}"), name, false);
            }
        }

        // Alerts: probe down on the agent without probes, agent down on the dead target,
        // nothing on the healthy agent.
        let alerts = match prometheus.api("/api/v1/alerts") {
            Ok(data) => data["alerts"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                round.problems.push(format!("/api/v1/alerts: {e}"));
                Vec::new()
            }
        };
        let active = |name: &str, instance: &str| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == name
                    && a["labels"]["instance"] == instance
                    && (a["state"] == "pending" || a["state"] == "firing")
            })
        };
        round.check(active("DwcpProbeDown", unprobed), || {
            format!("DwcpProbeDown not active for {unprobed}: {alerts:?}")
        });
        round.check(active("DwcpAgentDown", down), || {
            format!("DwcpAgentDown not active for {down}: {alerts:?}")
        });
        let on_healthy: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["labels"]["instance"] == healthy)
            .collect();
        round.check(on_healthy.is_empty(), || {
            format!("Alerts on the healthy agent {healthy}: {on_healthy:?}")
        });
        round
    }

    /// Whether `expr` reads only series that exist while a VM migrates (or, for
    /// `dwcp_migrations_total`, once one finished). These agents run none, so such a query
    /// must be valid but may be empty; `migrate::metrics`' unit test and the
    /// `vm_migrate` tests check that real migrations fill them.
    fn during_a_migration_only(expr: &str) -> bool {
        expr.contains("dwcp_migration")
    }

    #[test]
    fn prometheus_evaluates_every_dashboard_query_and_rule_on_live_agents() {
        common::require_root();
        let listen = || format!("127.0.0.1:{}", common::free_port());
        let mut agent = Agent::start(&["--listen", &listen()], |_| {});
        agent.wait_ready();
        // A VM defined on the healthy agent (never started: no QEMU needed) gives the
        // per-VM panels a real series.
        let vm_dir = tempfile::tempdir().expect("tempdir");
        let disk = vm_dir.path().join("disk.img");
        std::fs::write(&disk, [0_u8; 512]).expect("disk image");
        dwcp_agent::api::client::ApiClient::new(&agent.control_socket)
            .call(
                "POST",
                "/v1/vms",
                Some(&format!(
                    r#"{{"name":"panel","disk":"{}"}}"#,
                    disk.display()
                )),
            )
            .unwrap_or_else(|e| panic!("create a VM: {e}: {}", agent.log_text()));
        let mut unprobed = Agent::start(&["--no-probes", "--listen", &listen()], |_| {});
        unprobed.wait_ready();
        // A target nothing listens on: the agent-down alert.
        let down = listen();
        let healthy = agent.http.to_string();
        let without_probes = unprobed.http.to_string();
        let mut prometheus =
            Prometheus::start(&[healthy.clone(), without_probes.clone(), down.clone()]);
        prometheus.wait_ready();

        // Scrapes every second, rules every second: wait until a round of checks passes.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = round(&prometheus, &healthy, &without_probes, &down);
        while !last.problems.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            last = round(&prometheus, &healthy, &without_probes, &down);
        }
        assert!(
            last.problems.is_empty(),
            "After 120 s:\n{}\n\nPrometheus log:\n{}\n\nAgent log:\n{}",
            last.problems.join("\n"),
            prometheus.log_text(),
            agent.log_text()
        );
        assert_eq!(
            agent.child.try_wait().expect("wait"),
            None,
            "agent exited: {}",
            agent.log_text()
        );
    }
}
