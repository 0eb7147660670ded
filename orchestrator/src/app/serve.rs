//! The status server (`augur serve`, `augur run --serve`) over the store, on either
//! backend: HTML pages whose charts the browser draws ([`super::pages`]), the JSON
//! API behind them, and Prometheus text at `/metrics`. Binds 127.0.0.1 unless told
//! otherwise.

use super::backend::Backend;
use super::logs::TrialLog;
use super::pages::{asset, compare_page, favicon, studies_page, study_page, trial_page};
use super::AppError;
use augur::report;
use augur::runner::CounterValues;
use augur_model::{leaderboard, StudyRecord, Trial, TrialState};
use augur_store::TrialStore;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the handlers share.
pub struct App {
    /// Who may read the server.
    pub access: super::access::Access,
    pub backend: Arc<Backend>,
    pub store: Arc<dyn TrialStore>,
    /// The counters of the runner in this process (`augur run --serve`).
    pub counters: Option<Box<dyn Fn() -> CounterValues + Send + Sync>>,
    /// Parameter importances already computed (pages poll every 5 s).
    pub importance: augur::analysis::importance::Memo,
    /// Each study's trials, refreshed from the change index.
    pub trials: super::trials::TrialCache,
}

impl App {
    /// The trials of `rec`'s study, read through the cache.
    pub(super) async fn trials_of(&self, rec: &StudyRecord) -> Result<Vec<Trial>, Problem> {
        Ok(self.trials.trials(self.store.as_ref(), rec, true).await?)
    }

    /// Every study with its trials (the studies page, `/api/studies`).
    pub(super) async fn studies(&self) -> Result<Vec<(StudyRecord, Vec<Trial>)>, Problem> {
        self.studies_with(true).await
    }

    /// Every study with its trials, the running ones' beats read afresh if `beats`
    /// (`/metrics` does without: see [`TrialCache::trials`](super::trials::TrialCache::trials)).
    pub(super) async fn studies_with(
        &self,
        beats: bool,
    ) -> Result<Vec<(StudyRecord, Vec<Trial>)>, Problem> {
        let recs = self.store.list_studies().await?;
        let names: Vec<String> = recs.iter().map(|r| r.name.clone()).collect();
        self.trials.keep_only(&names).await;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let trials = self.trials.trials(self.store.as_ref(), &rec, beats).await?;
            out.push((rec, trials));
        }
        Ok(out)
    }
}

pub(super) type Shared = Arc<App>;

/// An error page or JSON error with its status.
pub(super) struct Problem(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<augur_store::StoreError> for Problem {
    fn from(e: augur_store::StoreError) -> Problem {
        Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Problem {
        Problem(StatusCode::SERVICE_UNAVAILABLE, e.message)
    }
}

pub(super) async fn study(app: &App, name: &str) -> Result<(StudyRecord, Vec<Trial>), Problem> {
    super::study_name(name).map_err(|e| Problem(StatusCode::BAD_REQUEST, e))?;
    let rec = app
        .store
        .get_study(name)
        .await?
        .ok_or_else(|| Problem(StatusCode::NOT_FOUND, format!("no study named `{name}`")))?;
    let trials = app.trials_of(&rec).await?;
    Ok((rec, trials))
}

pub(super) async fn trial(app: &App, name: &str, id: u64) -> Result<(StudyRecord, Trial), Problem> {
    let (rec, _) = study(app, name).await?;
    let t = app.store.get_trial(name, id).await?.ok_or_else(|| {
        Problem(
            StatusCode::NOT_FOUND,
            format!("study `{name}` has no trial {id}"),
        )
    })?;
    Ok((rec, t))
}

/// The router: pages, API and metrics.
pub fn router(app: Shared) -> Router {
    let guard = axum::middleware::from_fn_with_state(app.clone(), super::access::guard);
    Router::new()
        .route("/", get(studies_page))
        .route("/studies/{name}", get(study_page))
        .route("/trials/{name}/{id}", get(trial_page))
        .route("/compare", get(compare_page))
        .route("/assets/{name}", get(asset))
        .route("/favicon.ico", get(favicon))
        .route("/api/studies/{name}/analysis", get(api_analysis))
        .route("/api/studies", get(api_studies))
        .route("/api/studies/{name}", get(api_study))
        .route("/api/studies/{name}/trials", get(api_trials))
        .route("/api/trials/{name}/{id}", get(api_trial))
        .route("/api/trials/{name}/{id}/log", get(api_log))
        .route("/metrics", get(metrics))
        .layer(guard)
        .with_state(app)
}

/// Serves until `stop` resolves, then lets the responses in flight finish (a log
/// that follows a trial ends with it).
pub async fn serve_on(
    app: Shared,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| AppError::unavailable(format!("status server: {e}")))
}

/// Binds `addr` (exit 2 when it cannot).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AppError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AppError::input(format!("cannot listen on {addr}: {e}")))
}

// --- JSON API ---------------------------------------------------------------------

async fn api_studies(State(app): State<Shared>) -> Result<Json<Value>, Problem> {
    let mut out = Vec::new();
    for (rec, trials) in app.studies().await? {
        out.push(report::study_json(&rec, &trials));
    }
    Ok(Json(Value::Array(out)))
}

async fn api_study(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (rec, trials) = study(&app, &name).await?;
    let mut v = report::study_json(&rec, &trials);
    let lb: Vec<Value> = leaderboard(&rec.spec, &trials)
        .iter()
        .enumerate()
        .map(|(i, r)| report::leaderboard_json(r, i + 1, &trials))
        .collect();
    if let Value::Object(o) = &mut v {
        o.insert("spec".into(), json!(rec.spec.redacted()));
        o.insert("leaderboard".into(), Value::Array(lb));
    }
    Ok(Json(v))
}

/// Everything the study page draws ([`augur::analysis`]).
async fn api_analysis(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (rec, trials) = study(&app, &name).await?;
    // The forest behind the importance takes milliseconds to seconds: off the
    // runtime's threads.
    let shared = app.clone();
    let out = tokio::task::spawn_blocking(move || {
        augur::analysis::analysis(&rec, &trials, &shared.importance)
    })
    .await
    .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(out))
}

async fn api_trials(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (_, trials) = study(&app, &name).await?;
    Ok(Json(Value::Array(
        trials.iter().map(report::trial_json).collect(),
    )))
}

async fn api_trial(
    State(app): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<Value>, Problem> {
    let (rec, t) = trial(&app, &name, id).await?;
    let ranks = report::pareto_ranks(&rec.spec, &app.trials_of(&rec).await?);
    Ok(Json(report::trial_export_json(&t, ranks.get(&id))))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    follow: Option<String>,
}

/// The trial's log as text (every attempt); with `?follow`, a response that streams
/// new lines until the trial is final.
async fn api_log(
    State(app): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, Problem> {
    let (rec, _) = trial(&app, &name, id).await?;
    let mut log = TrialLog::new(app.backend.trial_logs(&name).await, &name, id);
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if q.follow.is_none() {
        let (lines, _) = log
            .pump(app.store.as_ref(), &rec.spec)
            .await?
            .unwrap_or_default();
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        return Ok((text_plain, body).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                break; // the client went away
            }
            let got = log.pump(app.store.as_ref(), &rec.spec).await;
            let (lines, over) = match got {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Ok(format!("augur: {}\n", e.message))).await;
                    break;
                }
            };
            let empty = lines.is_empty();
            for l in lines {
                if tx.send(Ok(format!("{l}\n"))).await.is_err() {
                    return; // the client went away
                }
            }
            if over && empty {
                break;
            }
            if empty {
                tokio::time::sleep(app.backend.log_poll()).await;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((text_plain, axum::body::Body::from_stream(stream)).into_response())
}

/// Prometheus text exposition: trials by study and state, studies by state, and the
/// runner's counters when a run is in this process.
async fn metrics(State(app): State<Shared>) -> Result<Response, Problem> {
    let mut out = String::new();
    let studies = app.studies_with(false).await?;
    out.push_str("# HELP augur_trials Trials by study and state.\n# TYPE augur_trials gauge\n");
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    let mut spend = Vec::new();
    for (rec, trials) in &studies {
        *by_state.entry(rec.state.as_word().to_string()).or_default() += 1;
        spend.push((
            prom_escape(&rec.name),
            augur_model::cost::Spend::of(trials, augur_store::now_ms()),
        ));
        for s in TrialState::ALL {
            let n = trials
                .iter()
                .filter(|t| !t.is_dataset() && t.state == s)
                .count();
            let _ = writeln!(
                out,
                "augur_trials{{study=\"{}\",state=\"{s}\"}} {n}",
                prom_escape(&rec.name)
            );
        }
    }
    out.push_str("# HELP augur_studies Studies by state.\n# TYPE augur_studies gauge\n");
    for (s, n) in &by_state {
        let _ = writeln!(out, "augur_studies{{state=\"{s}\"}} {n}");
    }
    out.push_str("# HELP augur_cost_usd_total What a study's machines have cost, in US dollars (local machines are free).\n# TYPE augur_cost_usd_total counter\n");
    for (name, s) in &spend {
        let _ = writeln!(out, "augur_cost_usd_total{{study=\"{name}\"}} {:.6}", s.usd);
    }
    out.push_str("# HELP augur_machine_hours_total Machine time of a study's attempts, in hours.\n# TYPE augur_machine_hours_total counter\n");
    for (name, s) in &spend {
        let _ = writeln!(
            out,
            "augur_machine_hours_total{{study=\"{name}\"}} {:.6}",
            s.machine_ms as f64 / 3_600_000.0
        );
    }
    if let Some(counters) = &app.counters {
        runner_metrics(&mut out, &counters());
    }
    aws_calls(&mut out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// The runner's counters, when a run is in this process.
fn runner_metrics(out: &mut String, c: &CounterValues) {
    for (name, help, v) in [
        ("launched", "Machines asked for.", c.launched),
        ("succeeded", "Trials that succeeded.", c.succeeded),
        ("failed", "Trials that failed.", c.failed),
        ("lost", "Trials whose machine or agent was lost.", c.lost),
        ("retried", "Attempts retried.", c.retried),
        ("cancelled", "Trials cancelled.", c.cancelled),
        ("pruned", "Trials stopped early by the pruner.", c.pruned),
        (
            "preempted",
            "Attempts whose machine was taken away (spot reclaims).",
            c.preempted,
        ),
        (
            "terminated",
            "Machines ended by the orchestrator.",
            c.terminated,
        ),
        (
            "backend_errors",
            "Backend calls that failed after their retries.",
            c.backend_errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP augur_runner_{name}_total {help}\n# TYPE augur_runner_{name}_total counter\naugur_runner_{name}_total {v}"
        );
    }
    // `augur_reconcile_tick_seconds` is its old name (a tick is one scheduled
    // invocation, which runs many passes): kept for one release.
    for (name, help) in [
        (
            "augur_reconcile_pass_seconds",
            "Time spent in reconcile passes.",
        ),
        (
            "augur_reconcile_tick_seconds",
            "Deprecated: augur_reconcile_pass_seconds under its old name (kept for one release).",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
            c.pass_micros as f64 / 1e6,
            c.passes
        );
    }
}

/// This process's AWS call attempts by service and outcome, and its retries by
/// service (the SDK's retries included, counted by an interceptor on every client).
fn aws_calls(out: &mut String) {
    let calls = augur_aws::calls::snapshot();
    if calls.is_empty() {
        return;
    }
    out.push_str("# HELP augur_aws_requests_total AWS call attempts by service and outcome.\n# TYPE augur_aws_requests_total counter\n");
    for (service, c) in &calls {
        for outcome in augur_aws::calls::CallOutcome::ALL {
            let n = c.attempts.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "augur_aws_requests_total{{service=\"{service}\",outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
    }
    out.push_str("# HELP augur_aws_errors_total AWS call attempts that were throttled, answered 5xx or got no answer.\n# TYPE augur_aws_errors_total counter\n");
    for (service, c) in &calls {
        let n: u64 = c
            .attempts
            .iter()
            .filter(|(o, _)| o.is_error())
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "augur_aws_errors_total{{service=\"{service}\"}} {n}");
    }
    out.push_str("# HELP augur_aws_throttled_total AWS call attempts the service throttled, by operation (DynamoDB transactions cancelled for throttling included).\n# TYPE augur_aws_throttled_total counter\n");
    for (service, c) in &calls {
        for (op, n) in &c.throttled {
            let _ = writeln!(
                out,
                "augur_aws_throttled_total{{service=\"{service}\",operation=\"{}\"}} {n}",
                prom_escape(op)
            );
        }
    }
    out.push_str("# HELP augur_aws_retries_total AWS call attempts that retried an earlier attempt.\n# TYPE augur_aws_retries_total counter\n");
    for (service, c) in &calls {
        let _ = writeln!(
            out,
            "augur_aws_retries_total{{service=\"{service}\"}} {}",
            c.retries
        );
    }
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
