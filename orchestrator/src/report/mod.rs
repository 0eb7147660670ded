//! How studies, trials and leaderboards are shown: aligned tables for people, JSON
//! objects for programs (integers stay integers).

pub mod cost;
mod export;
pub use export::{leaderboard_csv, pareto_ranks, trials_csv, Ranked};

use augur_model::cost::Spend;
use augur_model::{LeaderboardRow, StudyRecord, Trial, TrialState};
use augur_store::logfile::rfc3339;
use augur_store::now_ms;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Renders rows under headers with columns aligned (the last one left ragged).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `x=0.25,act=relu` with short floats.
pub fn params_short(p: &augur_model::Params) -> String {
    p.iter()
        .map(|(k, v)| match v {
            augur_model::Value::Float(f) => format!("{k}={}", short(*f)),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `loss=0.25,acc=0.9` with short floats.
pub fn metrics_display(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", short(*v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A float with up to 6 significant digits.
pub fn short(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-4 && v.abs() < 1e6 {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_string()
    } else {
        format!("{v:.5e}")
    }
}

/// A checkpoint as people read it: `3 file(s), 12.4 KB, kept 2026-…`.
pub fn checkpoint_display(c: &augur_model::Checkpoint) -> String {
    let size = match c.bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    };
    format!("{} file(s), {size}, kept {}", c.files, rfc3339(c.at_ms))
}

/// A time as RFC 3339 JSON, or null.
pub fn rfc3339_opt(t: Option<i64>) -> Value {
    time(t)
}

fn time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// A trial as a JSON object.
pub fn trial_json(t: &Trial) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(t.id));
    o.insert("state".into(), json!(t.state));
    o.insert("attempt".into(), json!(t.attempt));
    o.insert("replicate".into(), json!(t.replicate));
    o.insert("point".into(), json!(t.point));
    o.insert("params".into(), json!(t.params));
    o.insert("metrics".into(), json!(t.metrics));
    o.insert("exit_code".into(), json!(t.exit_code));
    o.insert("error".into(), json!(t.error));
    o.insert("status".into(), json!(t.status));
    if let Some(d) = &t.dataset {
        o.insert("dataset".into(), json!(d));
    }
    if !t.needs.is_empty() {
        o.insert("needs".into(), json!(t.needs));
    }
    o.insert("runs".into(), json!(t.runs));
    o.insert("preemptions".into(), json!(t.preemptions));
    o.insert("machine".into(), json!(t.machine));
    o.insert("machine_turn".into(), json!(t.turn));
    // Tries of this attempt's launch that got no answer to record.
    o.insert("launch_tries".into(), json!(t.launch_tries));
    o.insert("created".into(), time(Some(t.created_ms)));
    o.insert("launched".into(), time(t.launched_ms));
    o.insert("started".into(), time(t.started_ms));
    o.insert("heartbeat".into(), time(t.heartbeat_ms));
    o.insert("finished".into(), time(t.finished_ms));
    // How long the last attempt ran its script (started to finished).
    let elapsed = t.started_ms.zip(t.finished_ms).map(|(s, f)| f - s);
    o.insert("elapsed_ms".into(), json!(elapsed));
    o.insert("log".into(), json!(t.log));
    if let Some(c) = &t.checkpoint {
        o.insert(
            "checkpoint".into(),
            json!({"at": rfc3339(c.at_ms), "files": c.files, "bytes": c.bytes}),
        );
    }
    // Every attempt's machine, to now for a running one.
    let now = now_ms();
    o.insert(
        "machine_seconds".into(),
        json!(t.machine_ms(now) as f64 / 1000.0),
    );
    o.insert("cost_usd".into(), json!(cost::round(t.cost_usd(now))));
    if let Some(b) = &t.billing {
        o.insert("billing".into(), cost::billing_json(b));
    }
    Value::Object(o)
}

/// A leaderboard row as the same kind of object as a trial (its first succeeded
/// replicate), with the point's mean metrics and which replicates succeeded.
pub fn leaderboard_json(row: &LeaderboardRow, rank: usize, trials: &[Trial]) -> Value {
    let first = trials.iter().find(|t| Some(&t.id) == row.trials.first());
    let mut v = first.map(trial_json).unwrap_or_else(|| json!({}));
    if let Value::Object(o) = &mut v {
        o.insert("rank".into(), json!(rank));
        o.insert("pareto_rank".into(), json!(row.rank));
        o.insert("feasible".into(), json!(row.feasible));
        o.insert("metrics".into(), json!(row.metrics));
        o.insert("value".into(), json!(row.value));
        o.insert("replicates".into(), json!(row.replicates));
        o.insert("trials".into(), json!(row.trials));
        o.insert("pruned".into(), json!(row.pruned));
        o.insert("cost_usd".into(), json!(cost::round(row_cost(row, trials))));
    }
    v
}

/// What a leaderboard row's trials (its replicates) cost.
pub fn row_cost(row: &LeaderboardRow, trials: &[Trial]) -> f64 {
    let now = now_ms();
    trials
        .iter()
        .filter(|t| row.trials.contains(&t.id))
        .map(|t| t.cost_usd(now))
        .sum()
}

/// Which point is best for at most `usd` (`rows`: the leaderboard's points that
/// cost no more), in a sentence: a feasible one first, then by the primary
/// objective; for a study of several objectives, the point's front too.
pub fn best_within(
    study: &augur_model::Study,
    rows: &[LeaderboardRow],
    trials: &[Trial],
    usd: f64,
) -> String {
    let o = &study.objective;
    let best =
        rows.iter()
            .filter(|r| r.feasible)
            .reduce(|a, b| if o.better(b.value, a.value) { b } else { a });
    let Some(r) = best else {
        return format!(
            "no feasible point cost {} or less: none is best within that budget",
            cost::usd(usd)
        );
    };
    let front = if study.is_multi() {
        format!(", on front {}", r.rank)
    } else {
        String::new()
    };
    let ids: Vec<String> = r.trials.iter().map(|t| t.to_string()).collect();
    format!(
        "best within {}: {} = {} ({}), trial {}{front}, cost {}",
        cost::usd(usd),
        o.metric,
        short(r.value),
        params_short(&r.params),
        ids.join(","),
        cost::usd(row_cost(r, trials))
    )
}

/// The leaderboard as a table. A study of several objectives, or with constraints,
/// shows each point's Pareto rank (its front) and every objective; an infeasible
/// point is marked.
pub fn leaderboard_table(
    study: &augur_model::Study,
    rows: &[LeaderboardRow],
    trials: &[Trial],
) -> String {
    let priced = cost::priced(trials);
    let pareto = study.is_multi() || !study.constraints.is_empty();
    let value = |r: &LeaderboardRow| objectives_cell(study, pareto, r);
    let body: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = vec![
                if pareto { r.rank } else { i + 1 }.to_string(),
                value(r),
                params_short(&r.params),
                if study.replicates > 1 {
                    format!(
                        "{}/{} {:?}",
                        r.replicates.len(),
                        study.replicates,
                        r.replicates
                    )
                } else {
                    r.trials
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                metrics_display(&r.metrics),
            ];
            if priced {
                row.insert(4, cost::usd(row_cost(r, trials)));
            }
            row
        })
        .collect();
    let reps = if study.replicates > 1 {
        "REPLICATES"
    } else {
        "TRIAL"
    };
    let objectives = study
        .objectives()
        .iter()
        .map(|o| o.metric.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let (rank, metric) = match pareto {
        true => ("FRONT", "OBJECTIVES"),
        false => ("RANK", objectives.as_str()),
    };
    let mut headers = vec![rank, metric, "PARAMS", reps, "METRICS"];
    if priced {
        headers.insert(4, "COST");
    }
    table(&headers, &body)
}

/// A leaderboard row's value as the table shows it: the primary objective's, or
/// each objective's (`pareto`), marked pruned or infeasible.
fn objectives_cell(study: &augur_model::Study, pareto: bool, r: &LeaderboardRow) -> String {
    let shown = match pareto {
        false => short(r.value),
        true => study
            .objectives()
            .iter()
            .map(|o| {
                let v = r.metrics.get(&o.metric).map_or("-".into(), |v| short(*v));
                format!("{}={v}", o.metric)
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let notes: Vec<&str> = [(r.pruned, "pruned"), (!r.feasible, "infeasible")]
        .into_iter()
        .filter_map(|(on, note)| on.then_some(note))
        .collect();
    match notes.is_empty() {
        true => shown,
        false => format!("{shown} ({})", notes.join(", ")),
    }
}

/// The trials as a table.
pub fn trials_table(trials: &[Trial]) -> String {
    let (priced, now) = (cost::priced(trials), now_ms());
    let body: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            let what = match &t.dataset {
                Some(d) => format!("dataset {d}"),
                None => params_short(&t.params),
            };
            let note = match t.state {
                TrialState::Succeeded => t.status.clone().unwrap_or_default(),
                _ => t
                    .error
                    .clone()
                    .or_else(|| t.status.clone())
                    .unwrap_or_default(),
            };
            let note: String = note.chars().take(60).collect();
            let mut row = vec![
                t.id.to_string(),
                t.state.to_string(),
                t.attempt.to_string(),
                t.replicate.to_string(),
                what,
                metrics_display(&t.metrics),
                note,
            ];
            if priced {
                row.insert(6, cost::usd(t.cost_usd(now)));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "ID", "STATE", "ATTEMPT", "REP", "PARAMS", "METRICS", "STATUS",
    ];
    if priced {
        headers.insert(6, "COST");
    }
    table(&headers, &body)
}

/// Counts of a study's trials (datasets excluded) by state.
pub fn counts(trials: &[Trial]) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for t in trials.iter().filter(|t| !t.is_dataset()) {
        *m.entry(t.state.as_str()).or_insert(0) += 1;
    }
    m
}

/// How many of a study's trials (not datasets) are over for its budget: nothing more
/// will happen to them. Cancelled trials are not: `augur run` runs them again. The
/// one count of "done" that `run`, `submit`, `studies` and the pages show.
pub fn finished(rec: &StudyRecord, trials: &[Trial]) -> u64 {
    finished_with(&rec.spec, trials)
}

/// [`finished`] of the study `study`.
pub fn finished_with<'a>(
    study: &augur_model::Study,
    trials: impl IntoIterator<Item = &'a Trial>,
) -> u64 {
    trials
        .into_iter()
        .filter(|t| !t.is_dataset() && t.state != TrialState::Cancelled)
        .filter(|t| crate::reconcile::settled(study, t))
        .count() as u64
}

/// A study as a JSON object.
/// Why the study stopped (when a bound on its launches stopped it) or what it
/// waits for (room to launch), in a sentence.
pub fn study_note(rec: &StudyRecord) -> Option<String> {
    match &rec.reason {
        Some(why) => Some(format!("stopped: {why}")),
        None if rec.state.is_over() => None,
        None => rec.bounds.waits(now_ms()),
    }
}

pub fn study_json(rec: &StudyRecord, trials: &[Trial]) -> Value {
    let lb = augur_model::leaderboard(&rec.spec, trials);
    json!({
        "name": rec.name,
        "state": rec.state,
        "note": study_note(rec),
        "objective": rec.spec.objective,
        "oracle": rec.spec.oracle,
        "budget": rec.spec.trials,
        "trials": counts(trials),
        "finished": finished(rec, trials),
        "cost": cost::spend_json(&Spend::of(trials, now_ms())),
        "best": lb.first().map(|r| json!({"value": r.value, "params": r.params, "trials": r.trials})),
        "created": rfc3339(rec.created_ms),
        "updated": rfc3339(rec.updated_ms),
    })
}

/// A trial with everything recorded (the series and the log tail too), and its
/// point's Pareto rank and feasibility where it is ranked ([`pareto_ranks`]): one
/// line of `augur export --format jsonl`.
pub fn trial_export_json(t: &Trial, ranked: Option<&Ranked>) -> Value {
    let mut v = trial_json(t);
    if let Value::Object(o) = &mut v {
        o.insert("pareto_rank".into(), json!(ranked.map(|r| r.rank)));
        o.insert("feasible".into(), json!(ranked.map(|r| r.feasible)));
        o.insert("series".into(), json!(t.series));
        o.insert("log_tail".into(), json!(t.log_tail));
        o.insert("not_before".into(), time(t.not_before_ms));
        o.insert("retryable".into(), json!(t.retryable));
        let attempts: Vec<Value> = t
            .history
            .iter()
            .map(|h| {
                json!({
                    "attempt": h.attempt,
                    "state": h.state,
                    "machine": h.machine,
                    "machine_turn": h.turn,
                    "launched": time(h.launched_ms),
                    "started": time(h.started_ms),
                    "ended": time(h.ended_ms),
                    "exit_code": h.exit_code,
                    "error": h.error,
                    "billing": h.billing.as_ref().map(cost::billing_json),
                })
            })
            .collect();
        o.insert("earlier_attempts".into(), Value::Array(attempts));
    }
    v
}

/// An attempt's machine, and which attempt of that machine it was when it was not
/// its first (a machine kept warm): `i-0abc (3rd attempt on it)`.
fn on_machine(machine: &Option<String>, turn: u32) -> String {
    let Some(m) = machine else { return "-".into() };
    let nth = match turn % 10 {
        _ if (11..=13).contains(&(turn % 100)) => "th",
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    };
    match turn {
        0 | 1 => m.clone(),
        n => format!("{m} ({n}{nth} attempt on it)"),
    }
}

/// The columns of [`attempt_rows`].
pub const ATTEMPT_COLUMNS: [&str; 7] = [
    "attempt", "state", "machine", "started", "ended", "cost", "outcome",
];

/// Every attempt of a trial, earlier ones first, as rows of [`ATTEMPT_COLUMNS`] (the
/// current attempt last).
pub fn attempt_rows(t: &Trial) -> Vec<[String; 7]> {
    let opt = |v: Option<i64>| v.map(rfc3339).unwrap_or_else(|| "-".into());
    let outcome = |code: Option<i32>, error: &Option<String>| match (code, error) {
        (_, Some(e)) => e.clone(),
        (Some(c), None) => format!("exit code {c}"),
        (None, None) => String::new(),
    };
    // "spot $0.0060" for a priced machine, "-" for a free one.
    let costs: Vec<String> = t
        .attempt_costs(now_ms())
        .into_iter()
        .map(|(b, usd)| match b {
            Some(b) => format!(
                "{} {}",
                if b.spot { "spot" } else { "on-demand" },
                cost::usd(usd)
            ),
            None => "-".into(),
        })
        .collect();
    let cost_of = |i: usize| costs.get(i).cloned().unwrap_or_else(|| "-".into());
    let mut rows: Vec<[String; 7]> = t
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            [
                h.attempt.to_string(),
                h.state.to_string(),
                on_machine(&h.machine, h.turn),
                opt(h.started_ms),
                opt(h.ended_ms),
                cost_of(i),
                outcome(h.exit_code, &h.error),
            ]
        })
        .collect();
    rows.push([
        t.attempt.to_string(),
        t.state.to_string(),
        on_machine(&t.machine, t.turn),
        opt(t.started_ms),
        // A heartbeat is this attempt's only once it runs (a retry waiting to launch
        // still holds the last attempt's).
        opt(t
            .finished_ms
            .or(t.heartbeat_ms.filter(|_| t.state == TrialState::Running))),
        cost_of(t.history.len()),
        outcome(t.exit_code, &t.error),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_floats() {
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(3.0), "3");
        assert_eq!(short(1.0 / 3.0), "0.333333");
        assert_eq!(short(1e-7), "1.00000e-7");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
