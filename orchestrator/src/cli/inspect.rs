//! Read-only commands: studies, trials, show, leaderboard; and delete.

use super::{parse_target, AppError, CmdResult};
use crate::app::backend::Backend;
use augur::report;
use augur_model::value::params_display;
use augur_model::{StudyRecord, Trial, TrialState};
use augur_store::logfile::rfc3339;
use augur_store::TrialStore;
use std::sync::Arc;

async fn study_and_trials(
    ctx: &Backend,
    name: &str,
) -> Result<(Arc<dyn TrialStore>, StudyRecord, Vec<Trial>), AppError> {
    let no = || AppError::input(format!("no study named `{name}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(name).await?.ok_or_else(no)?;
    let trials = store.list_trials(name).await?;
    Ok((store, rec, trials))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn studies(ctx: &Backend, json: bool) -> CmdResult {
    let Some(store) = ctx.existing_store().await? else {
        if json {
            println!("[]");
        } else {
            eprintln!("no studies yet in {}", ctx.layout.root.display());
        }
        return Ok(0);
    };
    let mut objs = Vec::new();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // Studies the serverless tick drives (`augur submit`).
    let submitted: std::collections::BTreeSet<String> =
        store.submitted().await?.into_iter().collect();
    for rec in store.list_studies().await? {
        let by_tick = submitted.contains(&rec.name);
        let trials = store.list_trials(&rec.name).await?;
        let lb = augur_model::leaderboard(&rec.spec, &trials);
        let counts = report::counts(&trials);
        let done = report::finished(&rec, &trials);
        let spent = augur_model::cost::Spend::of(&trials, augur_store::now_ms());
        rows.push(vec![
            rec.name.clone(),
            if by_tick {
                format!("{} (submitted)", rec.state)
            } else {
                rec.state.to_string()
            },
            format!("{done}/{}", rec.spec.trials),
            counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            lb.first()
                .map(|r| format!("{}={}", rec.spec.objective.metric, report::short(r.value)))
                .unwrap_or_default(),
            report::cost::spend_cell(&spent),
            rfc3339(rec.updated_ms),
        ]);
        if let Some(note) = report::study_note(&rec) {
            notes.push(format!("{}: {note}", rec.name));
        }
        let mut obj = report::study_json(&rec, &trials);
        if let Some(o) = obj.as_object_mut() {
            o.insert("submitted".into(), by_tick.into());
        }
        objs.push(obj);
    }
    if json {
        print_json(&serde_json::Value::Array(objs));
    } else {
        print!(
            "{}",
            report::table(
                &["STUDY", "STATE", "DONE", "TRIALS", "BEST", "COST", "UPDATED"],
                &rows
            )
        );
        for n in notes {
            println!("{n}");
        }
    }
    Ok(0)
}

pub async fn trials(ctx: &Backend, study: &str, json: bool, csv: bool) -> CmdResult {
    let (_, rec, trials) = study_and_trials(ctx, study).await?;
    if csv {
        print!("{}", report::trials_csv(&rec.spec, &trials));
    } else if json {
        print_json(&serde_json::Value::Array(
            trials.iter().map(report::trial_json).collect(),
        ));
    } else {
        print!("{}", report::trials_table(&trials));
        let spent = augur_model::cost::Spend::of(&trials, augur_store::now_ms());
        println!("{}", spent.summary());
    }
    Ok(0)
}

pub async fn show(ctx: &Backend, target: &str, json: bool) -> CmdResult {
    let (study, id) = parse_target(target)?;
    let (store, rec, trials) = study_and_trials(ctx, &study).await?;
    let t = store
        .get_trial(&study, id)
        .await?
        .ok_or_else(|| AppError::input(format!("study `{study}` has no trial {id}")))?;
    if json {
        let mut logs = ctx.trial_logs(&study).await;
        let t = with_full_series(logs.as_mut(), t).await;
        let ranks = report::pareto_ranks(&rec.spec, &trials);
        print_json(&report::trial_export_json(&t, ranks.get(&id)));
        return Ok(0);
    }
    println!("trial      {study}/{}", t.id);
    if let Some(note) = report::study_note(&rec) {
        println!("study      {note}");
    }
    if let Some(d) = &t.dataset {
        println!("dataset    {d}");
    }
    println!("state      {}", t.state);
    println!("attempt    {} ({} reached the script)", t.attempt, t.runs);
    println!("replicate  {}", t.replicate);
    println!("params     {}", params_display(&t.params));
    if !t.needs.is_empty() {
        println!("needs      {}", t.needs.join(", "));
    }
    println!("metrics    {}", report::metrics_display(&t.metrics));
    println!(
        "exit code  {}",
        t.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if let Some(c) = &t.checkpoint {
        println!("checkpoint {}", report::checkpoint_display(c));
    }
    println!(
        "cost       {}",
        report::cost::trial_cost_display(&t, augur_store::now_ms())
    );
    if let Some(b) = &t.billing {
        println!("billed as  {}", report::cost::billing_display(b));
    }
    if let Some(e) = &t.error {
        let label = if t.state == TrialState::Pruned {
            "pruned by"
        } else {
            "error"
        };
        println!("{label:<10} {e}");
    }
    if let Some(s) = &t.status {
        println!("status     {s}");
    }
    print_machine_and_times(&t);
    Ok(0)
}

/// `augur show`'s second half: the launch, the machine, the times, the attempts and
/// the last lines.
fn print_machine_and_times(t: &Trial) {
    let opt = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    if t.launch_tries > 0 {
        println!(
            "launch     {} of {} tries without an answer to record",
            t.launch_tries,
            augur_model::MAX_LAUNCH_TRIES
        );
    }
    println!(
        "machine    {}",
        t.machine.clone().unwrap_or_else(|| "-".into())
    );
    println!("created    {}", rfc3339(t.created_ms));
    println!("started    {}", opt(t.started_ms));
    println!("heartbeat  {}", opt(t.heartbeat_ms));
    println!("finished   {}", opt(t.finished_ms));
    println!("log        {}", t.log.clone().unwrap_or_else(|| "-".into()));
    if !t.history.is_empty() {
        println!("attempts:");
        let rows: Vec<Vec<String>> = report::attempt_rows(t)
            .into_iter()
            .map(|r| r.to_vec())
            .collect();
        for line in report::table(&report::ATTEMPT_COLUMNS, &rows).lines() {
            println!("  {line}");
        }
    }
    if !t.log_tail.is_empty() {
        println!("last lines:");
        for l in &t.log_tail {
            println!("  {l}");
        }
    }
}

/// How `augur leaderboard` shows a study's points.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeaderboardView {
    /// The best N points only.
    pub limit: Option<usize>,
    pub json: bool,
    pub csv: bool,
    /// Only points that cost at most this many dollars, and the best of them named.
    pub budget: Option<f64>,
}

pub async fn leaderboard(ctx: &Backend, study: &str, view: LeaderboardView) -> CmdResult {
    let (_, rec, trials) = study_and_trials(ctx, study).await?;
    let mut rows = augur_model::leaderboard(&rec.spec, &trials);
    if let Some(usd) = view.budget {
        rows.retain(|r| report::row_cost(r, &trials) <= usd);
    }
    if let Some(n) = view.limit {
        rows.truncate(n);
    }
    if view.csv {
        print!("{}", report::leaderboard_csv(&rec.spec, &rows, &trials));
    } else if view.json {
        print_json(&leaderboard_json(&rows, &trials));
    } else if let Some(usd) = view.budget {
        println!("{}", report::best_within(&rec.spec, &rows, &trials, usd));
        if !rows.is_empty() {
            print!("{}", report::leaderboard_table(&rec.spec, &rows, &trials));
        }
    } else {
        print_leaderboard(&rec, &trials, view.limit, false);
    }
    Ok(0)
}

fn leaderboard_json(rows: &[augur_model::LeaderboardRow], trials: &[Trial]) -> serde_json::Value {
    rows.iter()
        .enumerate()
        .map(|(i, r)| report::leaderboard_json(r, i + 1, trials))
        .collect()
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// `augur export STUDY`: every trial, datasets included, in id order.
pub async fn export(
    ctx: &Backend,
    study: &str,
    format: ExportFormat,
    output: Option<&std::path::Path>,
) -> CmdResult {
    let (_, rec, trials) = study_and_trials(ctx, study).await?;
    let count = trials.len();
    let text = match format {
        ExportFormat::Csv => report::trials_csv(&rec.spec, &trials),
        ExportFormat::Jsonl => {
            let mut logs = ctx.trial_logs(study).await;
            let ranks = report::pareto_ranks(&rec.spec, &trials);
            let mut text = String::new();
            for t in trials {
                let ranked = ranks.get(&t.id);
                let t = with_full_series(logs.as_mut(), t).await;
                text.push_str(&format!("{}\n", report::trial_export_json(&t, ranked)));
            }
            text
        }
    };
    match output {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| AppError::unavailable(format!("writing the export: {e}")))?;
        }
        Some(path) => {
            // Written whole, then moved into place: a reader never sees half a file.
            let tmp = path.with_extension("augur-tmp");
            std::fs::write(&tmp, &text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| AppError::input(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("wrote {count} trial(s) of `{study}` to {}", path.display());
        }
    }
    Ok(0)
}

/// `t` with its whole metric series, read back from its log (the record keeps a
/// thinned one); a log that cannot be read is said, and the record's series kept.
async fn with_full_series(logs: &mut dyn crate::app::logs::LogReader, t: Trial) -> Trial {
    let (t, failed) = crate::app::logs::with_full_series(logs, t).await;
    if let Some(e) = failed {
        eprintln!(
            "augur: trial {}: {}; its series is the record's (thinned)",
            t.id, e.message
        );
    }
    t
}

/// Prints a study's leaderboard (also at the end of `augur run`).
pub fn print_leaderboard(rec: &StudyRecord, trials: &[Trial], n: Option<usize>, json: bool) {
    let mut rows = augur_model::leaderboard(&rec.spec, trials);
    if let Some(n) = n {
        rows.truncate(n);
    }
    if json {
        print_json(&leaderboard_json(&rows, trials));
    } else if rows.is_empty() {
        println!(
            "no trial of `{}` has succeeded with metric `{}` yet",
            rec.name, rec.spec.objective.metric
        );
    } else {
        print!("{}", report::leaderboard_table(&rec.spec, &rows, trials));
    }
}

pub async fn delete(ctx: &Backend, study: &str, force: bool, yes: bool) -> CmdResult {
    let (_, _, trials) = study_and_trials(ctx, study).await?;
    let busy = trials.iter().filter(|t| t.state.is_active()).count();
    if busy > 0 && !force {
        return Err(AppError::input(format!(
            "study `{study}` has {busy} trial(s) starting or running: `augur stop {study}` first (or --force)"
        )));
    }
    if !yes
        && !confirmed(&format!(
            "delete study `{study}`: {} trial record(s), their logs and files? [y/N] ",
            trials.len()
        ))?
    {
        eprintln!("nothing deleted");
        return Ok(0);
    }
    let store = ctx.store().await?;
    store.delete_study(study).await?;
    let gone = ctx.delete_artifacts(study).await?;
    eprintln!("deleted study `{study}` ({} trials)", trials.len());
    for g in gone {
        eprintln!("  removed {g}");
    }
    Ok(0)
}

/// Asks on the terminal; without one, refuses (exit 2) rather than guess.
fn confirmed(question: &str) -> Result<bool, AppError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(AppError::input(
            "standard input is not a terminal, so augur cannot ask: pass --yes to delete",
        ));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| AppError::input(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}
