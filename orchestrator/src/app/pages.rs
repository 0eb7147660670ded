//! The status pages, as HTML through maud (every value escaped unless marked).
//! Charts are drawn in the browser by ECharts, vendored in `assets/` and served by
//! augur itself under `/assets/` (nothing is fetched from the network): the study
//! page from `/api/studies/NAME/analysis` ([`augur::analysis`]), the trial page from
//! the series it embeds, the compare page from each study's analysis.

use super::serve::{study, trial, Problem, Shared};
use augur::report;
use augur::report::cost::{self as cost_view, usd};
use augur_model::cost::Spend;
use augur_model::{leaderboard, Trial, TrialState};
use augur_store::logfile::rfc3339;
use augur_store::now_ms;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::collections::BTreeMap;

/// The vendored chart library: Apache ECharts 6.1.0 (`echarts/dist/echarts.min.js`
/// from the npm registry, Apache-2.0, licence beside it; `scripts/vendor-echarts.sh`
/// fetches it again and checks its SHA-256).
const ECHARTS: &str = include_str!("../../assets/echarts-6.1.0.min.js");
const ECHARTS_PATH: &str = "/assets/echarts-6.1.0.min.js";

/// augur's own assets, by name under `/assets/`.
const ASSETS: [(&str, &str, &str); 7] = [
    ("echarts-6.1.0.min.js", ECHARTS, "text/javascript"),
    (
        "study.js",
        include_str!("../../assets/study.js"),
        "text/javascript",
    ),
    (
        "trial.js",
        include_str!("../../assets/trial.js"),
        "text/javascript",
    ),
    (
        "compare.js",
        include_str!("../../assets/compare.js"),
        "text/javascript",
    ),
    (
        "sort.js",
        include_str!("../../assets/sort.js"),
        "text/javascript",
    ),
    (
        "augur.css",
        include_str!("../../assets/augur.css"),
        "text/css",
    ),
    (
        "favicon.svg",
        include_str!("../../assets/favicon.svg"),
        "image/svg+xml",
    ),
];

/// `/assets/NAME`: cached by browsers (a new augur version serves new names for
/// changed libraries; its own scripts are revalidated).
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((n, body, kind)) => {
            let cache = if n.starts_with("echarts-") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, *kind),
                    (header::CACHE_CONTROL, cache),
                ],
                *body,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// `/favicon.ico`, for browsers that ask there before reading a page's icon link.
pub(super) async fn favicon() -> Response {
    asset(Path("favicon.svg".into())).await
}

/// A page: its title, the trail of links above it, its body and its scripts.
fn page(title: &str, crumbs: Markup, body: Markup, scripts: &[&str]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · augur" }
                link rel="stylesheet" href="/assets/augur.css";
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                nav { a href="/" { "augur" } (crumbs) }
                h1 { (title) }
                (body)
                script src="/assets/sort.js" {}
                @for s in scripts { script src=(s) {} }
            }
        }
    }
}

fn state(s: TrialState) -> Markup {
    html! { span class={"state-" (s)} { (s) } }
}

fn elapsed(from: i64, to: i64) -> String {
    let s = ((to - from).max(0) / 1000) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

fn counts_text(trials: &[Trial]) -> String {
    report::counts(trials)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) async fn studies_page(State(app): State<Shared>) -> Result<Markup, Problem> {
    let mut rows = Vec::new();
    for (rec, trials) in app.studies().await? {
        let best = leaderboard(&rec.spec, &trials).first().map(|r| r.value);
        let first = trials.iter().filter_map(|t| t.started_ms).min();
        let last = trials
            .iter()
            .filter_map(|t| t.finished_ms.or(t.heartbeat_ms))
            .max();
        let spent = Spend::of(&trials, now_ms());
        rows.push(html! {
            tr {
                td { input type="checkbox" name="studies" value=(rec.name) form="compare" aria-label={"compare " (rec.name)}; }
                td { a href={"/studies/" (rec.name)} { (rec.name) } }
                td title=[report::study_note(&rec)] { (rec.state.to_string()) }
                td { (report::finished(&rec, &trials)) "/" (rec.spec.trials) ": " (counts_text(&trials)) }
                td { @if let Some(v) = best { (rec.spec.objective.metric) " = " (report::short(v)) } }
                td { (first.map(rfc3339).unwrap_or_default()) }
                td { (first.zip(last).map(|(f, l)| elapsed(f, l)).unwrap_or_default()) }
                td .num { (cost_view::spend_cell(&spent)) }
            }
        });
    }
    let body = html! {
        @if rows.is_empty() {
            p { "No studies yet: " code { "augur run study.toml" } "." }
        } @else {
            form id="compare" action="/compare" method="get" {
                button type="submit" { "compare the ticked studies" }
            }
            table class="sortable studies" {
                thead { tr { th { span .visually-hidden { "compare" } } th { "study" } th { "state" } th { "trials" } th { "best" } th { "started" } th { "elapsed" } th { "cost" } } }
                tbody { @for r in &rows { (r) } }
            }
        }
    };
    Ok(page("Studies", html! {}, body, &[]))
}

pub(super) async fn study_page(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Markup, Problem> {
    let (rec, trials) = study(&app, &name).await?;
    let body = html! {
        p #progress { (rec.state.to_string()) " · " (report::finished(&rec, &trials)) " of " (rec.spec.trials) " finished · " (counts_text(&trials)) }
        @if let Some(note) = report::study_note(&rec) { p #note { (note) } }
        p #cost { (Spend::of(&trials, now_ms()).summary()) }
        p .muted { span #refresh {} " " span #shown {} }
        div #analysis data-src={"/api/studies/" (name) "/analysis"} data-study=(name) {
            p #objective-pick {}
            p #pareto-pick {}
            p #contour-pick {}
            div #charts {}
            p #importance-note .muted {}
        }
        h2 { "Leaderboard" }
        (leaderboard_table(&rec.spec, &trials, &name))
        h2 { "Trials" }
        p .muted { "Filter a column with text, or a range as lo..hi; states as a list (succeeded,pruned). Click a row for its trial." }
        table #trial-table .trials {}
    };
    Ok(page(
        &name,
        html! { " / " (name) },
        body,
        &[ECHARTS_PATH, "/assets/study.js"],
    ))
}

/// The leaderboard, sortable, a column per parameter, each point linking to its
/// trials.
fn leaderboard_table(spec: &augur_model::Study, trials: &[Trial], name: &str) -> Markup {
    let value = |v: Option<&augur_model::Value>| match v {
        Some(augur_model::Value::Float(f)) => report::short(*f),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let priced = cost_view::priced(trials);
    // Several objectives or constraints: the front each point is on, and each objective.
    let pareto = spec.is_multi() || !spec.constraints.is_empty();
    let objectives = spec.objectives();
    html! {
        table class="sortable leaderboard" {
            thead { tr {
                th { @if pareto { "front" } @else { "rank" } }
                @for o in objectives { th { (o.metric) } }
                @if !spec.constraints.is_empty() { th { "feasible" } }
                @for p in spec.params.keys() { th { (p) } }
                th { "trials" }
                @if priced { th { "cost" } }
            } }
            tbody {
                @for (i, r) in leaderboard(spec, trials).iter().enumerate() {
                    tr {
                        td .num { @if pareto { (r.rank) } @else { (i + 1) } }
                        @for o in objectives {
                            td .num {
                                (r.metrics.get(&o.metric).map(|v| report::short(*v)).unwrap_or_default())
                                @if r.pruned && o.metric == spec.objective.metric { " (pruned)" }
                            }
                        }
                        @if !spec.constraints.is_empty() { td { @if r.feasible { "yes" } @else { "no" } } }
                        @for p in spec.params.keys() { td .num { (value(r.params.get(p))) } }
                        td { @for id in &r.trials { a href={"/trials/" (name) "/" (id)} { (id) } " " } }
                        @if priced { td .num { (usd(report::row_cost(r, trials))) } }
                    }
                }
            }
        }
    }
}

/// `/compare?studies=a&studies=b`: best-so-far curves of several studies together.
pub(super) async fn compare_page(
    State(app): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Markup, Problem> {
    let names: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "studies")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect();
    if names.is_empty() {
        return Err(Problem(
            StatusCode::BAD_REQUEST,
            "name the studies to compare: /compare?studies=a,b".into(),
        ));
    }
    for n in &names {
        study(&app, n).await?;
    }
    let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    let body = html! {
        p .muted { "This page's address keeps the studies compared." }
        div #compare data-studies=(list) {}
    };
    Ok(page(
        &format!("compare {}", names.join(", ")),
        html! { " / compare" },
        body,
        &[ECHARTS_PATH, "/assets/compare.js"],
    ))
}

pub(super) async fn trial_page(
    State(app): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Markup, Problem> {
    let (rec, t) = trial(&app, &name, id).await?;
    // The whole series, from the log (the record keeps a thinned one); a log that
    // cannot be read leaves the record's.
    let mut logs = app.backend.trial_logs(&name).await;
    let (t, _) = super::logs::with_full_series(logs.as_mut(), t).await;
    let step = rec.spec.prune.as_ref().map_or("step", |p| p.step.as_str());
    let live = !matches!(
        t.state,
        TrialState::Succeeded | TrialState::Failed | TrialState::Cancelled | TrialState::Pruned
    );
    let log = format!(
        "/api/trials/{name}/{id}/log{}",
        if live { "?follow" } else { "" }
    );
    // Embedded as JSON text: `</` cannot end the script element early.
    let series = serde_json::json!({ "step": step, "metrics": series(&t, step) })
        .to_string()
        .replace("</", "<\\/");
    let body = html! {
        table .facts { tbody { @for (k, v) in trial_facts(&t) { tr { td { (k) } td { (v) } } } } }
        @if !t.history.is_empty() {
            h2 { "Attempts" }
            table .attempts {
                thead { tr { @for c in report::ATTEMPT_COLUMNS { th { (c) } } } }
                tbody { @for r in report::attempt_rows(&t) { tr { @for c in &r { td { (c) } } } } }
            }
        }
        div .charts #charts {}
        script #series-data type="application/json" { (PreEscaped(series)) }
        h2 { "Log" }
        p { a href={"/api/trials/" (name) "/" (id) "/log"} { "plain text" } @if live { " · following live" } }
        // Focusable, so a keyboard can scroll it (WCAG 2.1.1).
        pre .log #log data-src=(log) tabindex="0" aria-label="the trial's log" {}
    };
    Ok(page(
        &format!("{name}/{id}"),
        html! { " / " a href={"/studies/" (name)} { (name) } " / " (id) },
        body,
        &[ECHARTS_PATH, "/assets/trial.js"],
    ))
}

/// The trial's facts, a row each.
fn trial_facts(t: &Trial) -> Vec<(&'static str, Markup)> {
    let opt = |v: Option<i64>| v.map(rfc3339).unwrap_or_else(|| "-".into());
    let text = |s: String| html! { (s) };
    let mut facts = vec![
        ("state", state(t.state)),
        (
            "attempt",
            text(format!("{} ({} reached the script)", t.attempt, t.runs)),
        ),
        (
            "params",
            text(augur_model::value::params_display(&t.params)),
        ),
        ("metrics", text(report::metrics_display(&t.metrics))),
        (
            "exit code",
            text(t.exit_code.map_or("-".into(), |c| c.to_string())),
        ),
        (
            "machine",
            text(t.machine.clone().unwrap_or_else(|| "-".into())),
        ),
        ("created", text(opt(Some(t.created_ms)))),
        ("launched", text(opt(t.launched_ms))),
        ("started", text(opt(t.started_ms))),
        ("last heartbeat", text(opt(t.heartbeat_ms))),
        ("finished", text(opt(t.finished_ms))),
    ];
    if let Some(c) = &t.checkpoint {
        facts.push(("checkpoint", text(report::checkpoint_display(c))));
    }
    facts.push(("cost", text(cost_view::trial_cost_display(t, now_ms()))));
    if let Some(b) = &t.billing {
        facts.push(("billed as", text(cost_view::billing_display(b))));
    }
    if let Some(e) = &t.error {
        let label = if t.state == TrialState::Pruned {
            "pruned by"
        } else {
            "error"
        };
        facts.push((label, text(e.clone())));
    }
    facts
}

/// Each metric's series as `[step, value]` pairs, over the step (or the reading's
/// order).
fn series(t: &Trial, step: &str) -> BTreeMap<String, Vec<[f64; 2]>> {
    let mut out: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
    for (k, p) in t.series.iter().enumerate() {
        let x = p.values.get(step).copied().unwrap_or((k + 1) as f64);
        for (m, v) in &p.values {
            if m != step && v.is_finite() && x.is_finite() {
                out.entry(m.clone()).or_default().push([x, *v]);
            }
        }
    }
    out
}
