//! The status pages: HTML rendered on the server, charts as inline SVG
//! ([`super::plot`]), sortable tables; nothing is fetched from the network.

use super::plot::{chart, esc, Series, PALETTE};
use super::serve::{study, trial, Problem, Shared};
use augur::report;
use augur_model::{leaderboard, Trial, TrialState};
use augur_store::logfile::rfc3339;
use axum::extract::{Path, State};
use axum::response::Html;
use std::fmt::Write;

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
a{color:#1f5fbf;text-decoration:none} a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:8px 0 20px} th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
th{cursor:pointer;background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.state-succeeded{color:#2a7d2a}.state-failed,.state-lost{color:#c0392b}.state-pruned{color:#8e44ad}.state-running{color:#1f5fbf}
.charts{display:flex;flex-wrap:wrap;gap:12px} svg.chart{border:1px solid #e4e4e4;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#444} svg .ct{font-weight:600} svg .axis line{stroke:#888} svg line.grid{stroke:#eee}
pre.log{background:#111;color:#ddd;padding:10px;max-height:480px;overflow:auto;font:12px/1.35 monospace}
"#;

/// Sorts a table by the clicked header (numbers numerically); no library needed.
const SORT_SCRIPT: &str = r#"
document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click', () => {
  const tb = th.closest('table').tBodies[0], rows = [...tb.rows], asc = th.dataset.asc !== '1';
  th.dataset.asc = asc ? '1' : '0';
  const key = r => { const t = r.cells[i].innerText.trim(), n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => tb.appendChild(r));
}));
"#;

fn page(title: &str, crumbs: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · augur</title><style>{STYLE}</style></head><body><nav><a href=\"/\">augur</a>{crumbs}</nav><h1>{t}</h1>{body}<script>{SORT_SCRIPT}</script></body></html>",
        t = esc(title)
    ))
}

fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table class=\"{class}\">");
    if head.iter().any(|h| !h.is_empty()) {
        s.push_str("<thead><tr>");
        for h in head {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr></thead>");
    }
    s.push_str("<tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            // Cells are already-escaped HTML.
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn elapsed(from: i64, to: i64) -> String {
    let s = ((to - from).max(0) / 1000) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

pub(super) async fn studies_page(State(app): State<Shared>) -> Result<Html<String>, Problem> {
    let mut rows = Vec::new();
    for rec in app.store.list_studies().await? {
        let trials = app.store.list_trials(&rec.name).await?;
        let lb = leaderboard(&rec.spec, &trials);
        let counts = report::counts(&trials);
        let first = trials.iter().filter_map(|t| t.started_ms).min();
        let last = trials
            .iter()
            .filter_map(|t| t.finished_ms.or(t.heartbeat_ms))
            .max();
        rows.push(vec![
            format!("<a href=\"/studies/{0}\">{0}</a>", esc(&rec.name)),
            esc(&rec.state.to_string()),
            esc(&format!(
                "{}/{}: {}",
                report::finished(&rec, &trials),
                rec.spec.trials,
                counts
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            lb.first()
                .map(|r| {
                    format!(
                        "{} = {}",
                        esc(&rec.spec.objective.metric),
                        report::short(r.value)
                    )
                })
                .unwrap_or_default(),
            first.map(rfc3339).unwrap_or_default(),
            first
                .zip(last)
                .map(|(f, l)| elapsed(f, l))
                .unwrap_or_default(),
        ]);
    }
    let body = if rows.is_empty() {
        "<p>No studies yet: <code>augur run study.toml</code>.</p>".to_string()
    } else {
        table(
            "sortable studies",
            &["study", "state", "trials", "best", "started", "elapsed"],
            &rows,
        )
    };
    Ok(page("Studies", "", &body))
}

pub(super) async fn study_page(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Html<String>, Problem> {
    let (rec, trials) = study(&app, &name).await?;
    let obj = &rec.spec.objective;
    let runs: Vec<&Trial> = trials.iter().filter(|t| !t.is_dataset()).collect();
    let mut body = format!(
        "<p>{} · objective: {} {} · oracle {} · {} of {} finished · parallel {} · {}</p>",
        esc(&rec.state.to_string()),
        match obj.goal {
            augur_model::Goal::Minimize => "minimize",
            augur_model::Goal::Maximize => "maximize",
        },
        esc(&obj.metric),
        rec.spec.oracle.as_str(),
        report::finished(&rec, &trials),
        rec.spec.trials,
        rec.spec.parallel,
        esc(&report::counts(&trials)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "))
    );
    let mut charts = vec![objective_chart(obj, &runs)];
    charts.extend(param_charts(&rec.spec, &runs));
    charts.extend(states_chart(&runs));
    let _ = write!(body, "<div class=\"charts\">{}</div>", charts.join(""));
    let _ = write!(
        body,
        "<h2>Leaderboard</h2>{}<h2>Trials</h2>{}",
        leaderboard_table(&rec.spec, &trials, &name),
        trials_table(&trials, &name)
    );
    Ok(page(&name, &format!(" / {}", esc(&name)), &body))
}

/// The objective per trial, with the best so far.
fn objective_chart(obj: &augur_model::Objective, runs: &[&Trial]) -> String {
    let mut dots = Vec::new();
    let mut best_line = Vec::new();
    let mut best: Option<f64> = None;
    for t in runs {
        let Some(v) = t
            .result_metrics(obj)
            .and_then(|m| m.get(&obj.metric).copied())
        else {
            continue;
        };
        dots.push((t.id as f64, v));
        if best.is_none_or(|b| obj.better(v, b)) {
            best = Some(v);
        }
        best_line.push((t.id as f64, best.unwrap_or(v)));
    }
    chart(
        &format!("{} per trial", obj.metric),
        "trial",
        &obj.metric,
        &[
            Series {
                name: "trial",
                color: PALETTE[0],
                points: dots,
                line: false,
                step: false,
            },
            Series {
                name: "best so far",
                color: PALETTE[1],
                points: best_line,
                line: true,
                step: true,
            },
        ],
    )
}

/// The objective against each numeric parameter.
fn param_charts(spec: &augur_model::Study, runs: &[&Trial]) -> Vec<String> {
    let obj = &spec.objective;
    let mut charts = Vec::new();
    for pname in spec.params.keys() {
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|t| {
                let x = t.params.get(pname)?.as_f64()?;
                let y = t.result_metrics(obj)?.get(&obj.metric).copied()?;
                Some((x, y))
            })
            .collect();
        if !pts.is_empty() {
            charts.push(chart(
                &format!("{} vs {pname}", obj.metric),
                pname,
                &obj.metric,
                &[Series {
                    name: pname,
                    color: PALETTE[2],
                    points: pts,
                    line: false,
                    step: false,
                }],
            ));
        }
    }
    charts
}

/// Trials finished by state over time (minutes since the first start).
fn states_chart(runs: &[&Trial]) -> Option<String> {
    let t0 = runs.iter().filter_map(|t| t.started_ms).min()?;
    let mut series = Vec::new();
    for (i, s) in [
        TrialState::Succeeded,
        TrialState::Failed,
        TrialState::Pruned,
        TrialState::Lost,
        TrialState::Cancelled,
    ]
    .iter()
    .enumerate()
    {
        let mut ends: Vec<i64> = runs
            .iter()
            .filter(|t| t.state == *s)
            .filter_map(|t| t.finished_ms)
            .collect();
        if ends.is_empty() {
            continue;
        }
        ends.sort();
        let mut pts = vec![(0.0, 0.0)];
        pts.extend(
            ends.iter()
                .enumerate()
                .map(|(k, e)| ((e - t0) as f64 / 60_000.0, (k + 1) as f64)),
        );
        series.push(Series {
            name: s.as_str(),
            color: PALETTE[(i + 2) % PALETTE.len()],
            points: pts,
            line: true,
            step: true,
        });
    }
    Some(chart(
        "trials by state over time",
        "minutes",
        "trials",
        &series,
    ))
}

/// The leaderboard, sortable, each point linking to its trials.
fn leaderboard_table(spec: &augur_model::Study, trials: &[Trial], name: &str) -> String {
    let rows: Vec<Vec<String>> = leaderboard(spec, trials)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                format!(
                    "{}{}",
                    report::short(r.value),
                    if r.pruned { " (pruned)" } else { "" }
                ),
                esc(&augur_model::value::params_display(&r.params)),
                r.trials
                    .iter()
                    .map(|id| format!("<a href=\"/trials/{}/{id}\">{id}</a>", esc(name)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    table(
        "sortable leaderboard",
        &["rank", &spec.objective.metric, "params", "trials"],
        &rows,
    )
}

/// Every trial, sortable, linking to its page.
fn trials_table(trials: &[Trial], name: &str) -> String {
    let rows: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            vec![
                format!("<a href=\"/trials/{}/{}\">{}</a>", esc(name), t.id, t.id),
                format!("<span class=\"state-{0}\">{0}</span>", t.state),
                t.attempt.to_string(),
                match &t.dataset {
                    Some(d) => format!("dataset {}", esc(d)),
                    None => esc(&augur_model::value::params_display(&t.params)),
                },
                esc(&report::metrics_display(&t.metrics)),
                t.started_ms
                    .zip(t.finished_ms)
                    .map(|(s, f)| format!("{:.1}s", (f - s) as f64 / 1000.0))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        "sortable trials",
        &["trial", "state", "attempt", "params", "metrics", "ran"],
        &rows,
    )
}

pub(super) async fn trial_page(
    State(app): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Html<String>, Problem> {
    let (rec, t) = trial(&app, &name, id).await?;
    let mut body = table("facts", &["", ""], &trial_facts(&t));
    if !t.history.is_empty() {
        let rows: Vec<Vec<String>> = report::attempt_rows(&t)
            .into_iter()
            .map(|r| r.iter().map(|c| esc(c)).collect())
            .collect();
        let _ = write!(
            body,
            "<h2>Attempts</h2>{}",
            table("attempts", &report::ATTEMPT_COLUMNS, &rows)
        );
    }
    let step = rec.spec.prune.as_ref().map_or("step", |p| p.step.as_str());
    let _ = write!(
        body,
        "<div class=\"charts\">{}</div>",
        series_charts(&t, step).join("")
    );
    let live = !matches!(
        t.state,
        TrialState::Succeeded | TrialState::Failed | TrialState::Cancelled | TrialState::Pruned
    );
    let _ = write!(
        body,
        "<h2>Log</h2><p><a href=\"/api/trials/{n}/{id}/log\">plain text</a>{follow}</p><pre class=\"log\" id=\"log\" data-src=\"/api/trials/{n}/{id}/log{q}\"></pre>\
<script>(async () => {{ const pre = document.getElementById('log'); const r = await fetch(pre.dataset.src); const rd = r.body.getReader(); const dec = new TextDecoder();\
for (;;) {{ const {{done, value}} = await rd.read(); if (done) break; pre.textContent += dec.decode(value, {{stream: true}}); pre.scrollTop = pre.scrollHeight; }} }})();</script>",
        n = esc(&name),
        follow = if live { " · following live" } else { "" },
        q = if live { "?follow" } else { "" },
    );
    Ok(page(
        &format!("{name}/{id}"),
        &format!(" / <a href=\"/studies/{0}\">{0}</a> / {id}", esc(&name)),
        &body,
    ))
}

/// The trial's facts, a row each.
fn trial_facts(t: &Trial) -> Vec<Vec<String>> {
    let opt = |v: Option<i64>| v.map(rfc3339).unwrap_or_else(|| "-".into());
    let mut facts = vec![
        (
            "state",
            format!("<span class=\"state-{0}\">{0}</span>", t.state),
        ),
        (
            "attempt",
            format!("{} ({} reached the script)", t.attempt, t.runs),
        ),
        (
            "params",
            esc(&augur_model::value::params_display(&t.params)),
        ),
        ("metrics", esc(&report::metrics_display(&t.metrics))),
        (
            "exit code",
            t.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
        ),
        ("machine", esc(t.machine.as_deref().unwrap_or("-"))),
        ("created", opt(Some(t.created_ms))),
        ("launched", opt(t.launched_ms)),
        ("started", opt(t.started_ms)),
        ("last heartbeat", opt(t.heartbeat_ms)),
        ("finished", opt(t.finished_ms)),
    ];
    if let Some(e) = &t.error {
        let label = if t.state == TrialState::Pruned {
            "pruned by"
        } else {
            "error"
        };
        facts.push((label, esc(e)));
    }
    facts
        .into_iter()
        .map(|(k, v)| vec![k.to_string(), v])
        .collect()
}

/// One chart per metric series, over the step (or the reading's order).
fn series_charts(t: &Trial, step: &str) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = t
        .series
        .iter()
        .flat_map(|p| p.values.keys())
        .filter(|k| k.as_str() != step)
        .collect();
    names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let pts: Vec<(f64, f64)> = t
                .series
                .iter()
                .enumerate()
                .filter_map(|(k, p)| {
                    let y = *p.values.get(*m)?;
                    let x = p.values.get(step).copied().unwrap_or((k + 1) as f64);
                    Some((x, y))
                })
                .collect();
            chart(
                m,
                step,
                m,
                &[Series {
                    name: m,
                    color: PALETTE[i % PALETTE.len()],
                    points: pts,
                    line: true,
                    step: false,
                }],
            )
        })
        .collect()
}
