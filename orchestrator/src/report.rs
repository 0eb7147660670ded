//! How studies, trials and leaderboards are shown: aligned tables for people, JSON
//! objects for programs (integers stay integers).

use augur_model::{LeaderboardRow, StudyRecord, Trial, TrialState};
use augur_store::logfile::rfc3339;
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
    o.insert("machine".into(), json!(t.machine));
    o.insert("created".into(), time(Some(t.created_ms)));
    o.insert("launched".into(), time(t.launched_ms));
    o.insert("started".into(), time(t.started_ms));
    o.insert("heartbeat".into(), time(t.heartbeat_ms));
    o.insert("finished".into(), time(t.finished_ms));
    // How long the last attempt ran its script (started to finished).
    let elapsed = t.started_ms.zip(t.finished_ms).map(|(s, f)| f - s);
    o.insert("elapsed_ms".into(), json!(elapsed));
    o.insert("log".into(), json!(t.log));
    Value::Object(o)
}

/// A leaderboard row as the same kind of object as a trial (its first succeeded
/// replicate), with the point's mean metrics and which replicates succeeded.
pub fn leaderboard_json(row: &LeaderboardRow, rank: usize, trials: &[Trial]) -> Value {
    let first = trials.iter().find(|t| Some(&t.id) == row.trials.first());
    let mut v = first.map(trial_json).unwrap_or_else(|| json!({}));
    if let Value::Object(o) = &mut v {
        o.insert("rank".into(), json!(rank));
        o.insert("metrics".into(), json!(row.metrics));
        o.insert("value".into(), json!(row.value));
        o.insert("replicates".into(), json!(row.replicates));
        o.insert("trials".into(), json!(row.trials));
        o.insert("pruned".into(), json!(row.pruned));
    }
    v
}

/// The leaderboard as a table.
pub fn leaderboard_table(rows: &[LeaderboardRow], metric: &str, replicates: u32) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                if r.pruned {
                    format!("{} (pruned)", short(r.value))
                } else {
                    short(r.value)
                },
                params_short(&r.params),
                if replicates > 1 {
                    format!("{}/{} {:?}", r.replicates.len(), replicates, r.replicates)
                } else {
                    r.trials
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                metrics_display(&r.metrics),
            ]
        })
        .collect();
    let reps = if replicates > 1 {
        "REPLICATES"
    } else {
        "TRIAL"
    };
    table(&["RANK", metric, "PARAMS", reps, "METRICS"], &body)
}

/// The trials as a table.
pub fn trials_table(trials: &[Trial]) -> String {
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
            vec![
                t.id.to_string(),
                t.state.to_string(),
                t.attempt.to_string(),
                t.replicate.to_string(),
                what,
                metrics_display(&t.metrics),
                note,
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "ATTEMPT", "REP", "PARAMS", "METRICS", "STATUS",
        ],
        &body,
    )
}

/// Counts of a study's trials (datasets excluded) by state.
pub fn counts(trials: &[Trial]) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for t in trials.iter().filter(|t| !t.is_dataset()) {
        *m.entry(t.state.as_str()).or_insert(0) += 1;
    }
    m
}

/// A study as a JSON object.
pub fn study_json(rec: &StudyRecord, trials: &[Trial]) -> Value {
    let lb = augur_model::leaderboard(&rec.spec, trials);
    json!({
        "name": rec.name,
        "state": rec.state,
        "objective": rec.spec.objective,
        "oracle": rec.spec.oracle,
        "budget": rec.spec.trials,
        "trials": counts(trials),
        "best": lb.first().map(|r| json!({"value": r.value, "params": r.params, "trials": r.trials})),
        "created": rfc3339(rec.created_ms),
        "updated": rfc3339(rec.updated_ms),
    })
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
