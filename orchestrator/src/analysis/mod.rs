//! What the study page analyses, as one JSON document (`/api/studies/NAME/analysis`):
//! each trial's parameters, value and objective curve; the parameters' kinds and
//! scales (so log-scale ones get log axes and categorical ones strips); ASHA's rungs;
//! the parameters' importance ([`importance`]); and, for several objectives or
//! constraints, each trial's objectives, Pareto rank and feasibility and the front's
//! hypervolume trial by trial ([`front`]). The page's script draws it; this module
//! decides everything a chart shows.

mod front;
pub mod importance;

use crate::report::{finished, rfc3339_opt};
use augur_model::{ParamSpec, PruneRule, StudyRecord, Trial, Value as ParamValue};
use serde_json::{json, Value};

/// The analysis of a study: see the module docs. `memo` keeps the importances of
/// data seen before.
pub fn analysis(rec: &StudyRecord, trials: &[Trial], memo: &importance::Memo) -> Value {
    let spec = &rec.spec;
    let step = spec.prune.as_ref().map_or("step", |p| p.step.as_str());
    let runs: Vec<&Trial> = trials.iter().filter(|t| !t.is_dataset()).collect();
    let curves: Vec<Vec<[f64; 2]>> = runs
        .iter()
        .map(|t| curve(t, &spec.objective.metric, step))
        .collect();
    let last_step = curves
        .iter()
        .filter_map(|c| c.last().map(|r| r[0]))
        .fold(f64::NEG_INFINITY, f64::max);
    let (priced, now) = (crate::report::cost::priced(trials), augur_store::now_ms());
    let ranks = crate::report::pareto_ranks(spec, trials);
    let rows: Vec<Value> = runs
        .iter()
        .zip(&curves)
        .map(|(t, curve)| {
            let (rank, feasible) = front::rank_fields(ranks.get(&t.id));
            json!({
                "id": t.id,
                "state": t.state,
                "attempt": t.attempt,
                "params": t.params,
                "value": t.result_metrics(&spec.objective).and_then(|m| m.get(&spec.objective.metric).copied()),
                "metrics": front::named_metrics(spec, t),
                "rank": rank,
                "feasible": feasible,
                "curve": curve,
                "error": t.error,
                "status": t.status,
                "started": rfc3339_opt(t.started_ms),
                "seconds": t.started_ms.zip(t.finished_ms).map(|(s, f)| (f - s) as f64 / 1000.0),
                "cost": priced.then(|| crate::report::cost::round(t.cost_usd(now))),
            })
        })
        .collect();
    json!({
        "name": rec.name,
        "state": rec.state,
        "objective": { "metric": spec.objective.metric, "goal": spec.objective.goal },
        "objectives": spec.objectives().iter().map(|o| json!({ "metric": o.metric, "goal": o.goal })).collect::<Vec<_>>(),
        "constraints": spec.constraints.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "hypervolume": front::hypervolume(spec, &runs),
        "oracle": spec.oracle.as_str(),
        "budget": spec.trials,
        "finished": finished(rec, trials),
        "priced": priced,
        "spend": augur_model::cost::Spend::of(trials, now).summary(),
        "step": step,
        "params": spec.params.iter().map(|(n, p)| param(n, p)).collect::<Vec<_>>(),
        "rungs": rungs(rec, last_step),
        "trials": rows,
        "importance": importance_of(rec, &runs, memo),
    })
}

/// A trial's objective readings as `[step, value]` pairs (readings without the step
/// metric count 1, 2, 3, …), non-finite values left out.
fn curve(t: &Trial, metric: &str, step: &str) -> Vec<[f64; 2]> {
    t.series
        .iter()
        .filter(|p| p.values.contains_key(metric))
        .enumerate()
        .filter_map(|(i, p)| {
            let v = p.values[metric];
            let s = p.values.get(step).copied().filter(|s| s.is_finite());
            v.is_finite().then(|| [s.unwrap_or((i + 1) as f64), v])
        })
        .collect()
}

/// A parameter's kind and scale: `float`/`int` ranges (with `log`), numeric choices
/// (`number`, drawn on a linear axis) and `categorical` choices (strips).
fn param(name: &str, p: &ParamSpec) -> Value {
    match p {
        ParamSpec::Float { lo, hi, log, .. } => {
            json!({"name": name, "kind": "float", "log": log, "lo": lo, "hi": hi})
        }
        ParamSpec::Int { lo, hi, log, .. } => {
            json!({"name": name, "kind": "int", "log": log, "lo": lo, "hi": hi})
        }
        ParamSpec::Choice { values } => {
            let numeric = values.iter().all(|v| v.as_f64().is_some());
            let kind = if numeric { "number" } else { "categorical" };
            json!({"name": name, "kind": kind, "log": false, "values": values})
        }
    }
}

/// ASHA's rungs (min_step × reduction^k) up to the furthest step any trial reached.
fn rungs(rec: &StudyRecord, last: f64) -> Vec<f64> {
    let Some(PruneRule::Asha {
        min_step,
        reduction,
    }) = rec.spec.prune.as_ref().map(|p| &p.rule)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rung = *min_step;
    while rung <= last && out.len() < 64 {
        out.push(rung);
        rung *= *reduction as f64;
    }
    out
}

/// Each parameter's importance for the objective, from the trials with a value, on
/// the scale it is searched (log-scale ones as logarithms, choices by their index).
fn importance_of(rec: &StudyRecord, runs: &[&Trial], memo: &importance::Memo) -> Value {
    let spec = &rec.spec;
    let names: Vec<&String> = spec.params.keys().collect();
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for t in runs {
        let Some(v) = t
            .result_metrics(&spec.objective)
            .and_then(|m| m.get(&spec.objective.metric).copied())
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        let row: Option<Vec<f64>> = names
            .iter()
            .map(|n| encode(&spec.params[*n], t.params.get(*n)?))
            .collect();
        if let Some(row) = row {
            rows.push(row);
            y.push(v);
        }
    }
    let counted = rows.len();
    match memo.importance(&rec.name, &rows, &y, spec.seed) {
        Some(imp) => json!({
            "method": importance::METHOD,
            "trials": counted,
            "params": names.iter().zip(imp).map(|(n, i)| json!({"name": n, "importance": i})).collect::<Vec<_>>(),
        }),
        None => json!({
            "method": importance::METHOD,
            "trials": counted,
            "params": [],
            "why_not": format!("needs at least {} trials with a value, and a value that varies", importance::MIN_TRIALS),
        }),
    }
}

/// A parameter's value as the forest sees it.
fn encode(spec: &ParamSpec, v: &ParamValue) -> Option<f64> {
    match spec {
        ParamSpec::Float { log, .. } | ParamSpec::Int { log, .. } => {
            let x = v.as_f64()?;
            Some(if *log {
                x.max(f64::MIN_POSITIVE).ln()
            } else {
                x
            })
        }
        ParamSpec::Choice { values } => values.iter().position(|c| c == v).map(|i| i as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{MetricPoint, Study, StudyState, TrialState};

    fn record(prune: &str) -> StudyRecord {
        let spec = Study::parse(
            &format!("name='a'\nobjective={{metric='loss'}}\ntrials=30\n[params]\nlr={{range=[1e-4,1e-1],scale='log'}}\nact={{values=['relu','tanh']}}\nk={{values=[1,2]}}\n[run]\nscript='true'\n{prune}"),
            "a.toml",
            std::path::Path::new("."),
        )
        .expect("study");
        StudyRecord {
            name: "a".into(),
            spec,
            state: StudyState::Done,
            created_ms: 0,
            updated_ms: 0,
            drive: None,
            bounds: Default::default(),
            reason: None,
        }
    }

    fn trial(id: u64, lr: f64, act: &str, losses: &[f64]) -> Trial {
        let params = [
            ("lr".to_string(), ParamValue::Float(lr)),
            ("act".to_string(), ParamValue::Str(act.into())),
            ("k".to_string(), ParamValue::Int(1)),
        ]
        .into();
        let mut t = Trial::new("a", id, id, 0, params, 0);
        t.state = TrialState::Succeeded;
        t.series = losses
            .iter()
            .enumerate()
            .map(|(i, l)| MetricPoint {
                t_ms: i as i64,
                values: [
                    ("step".to_string(), (i + 1) as f64),
                    ("loss".to_string(), *l),
                ]
                .into(),
            })
            .collect();
        if let Some(last) = losses.last() {
            t.metrics = [("loss".to_string(), *last)].into();
        }
        t
    }

    #[test]
    fn parameters_keep_their_scale_and_kind_and_asha_its_rungs() {
        let rec = record("[prune]\nrule='asha'\nmin_step=1\nreduction=3\n");
        let trials = vec![trial(
            1,
            0.01,
            "relu",
            &[0.9, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1],
        )];
        let a = analysis(&rec, &trials, &importance::Memo::default());
        let kinds: Vec<(String, String, bool)> = a["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["kind"].as_str().unwrap_or_default().to_string(),
                    p["log"] == true,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("act".into(), "categorical".into(), false),
                ("k".into(), "number".into(), false),
                ("lr".into(), "float".into(), true)
            ]
        );
        assert_eq!(a["rungs"], json!([1.0, 3.0, 9.0]));
        assert_eq!(a["trials"][0]["curve"][2], json!([3.0, 0.4]));
        assert_eq!(a["trials"][0]["value"], json!(0.1));
        assert_eq!(a["finished"], 1);
        assert!(
            a["importance"]["why_not"].is_string(),
            "one trial is too few"
        );
    }

    /// The loss depends on lr only: lr comes first, on its log scale.
    #[test]
    fn importance_names_the_parameter_the_objective_depends_on() {
        let rec = record("");
        let trials: Vec<Trial> = (0..40)
            .map(|i| {
                let lr = 10f64.powf(-4.0 + 3.0 * (i as f64 * 0.618).fract());
                let act = if i % 2 == 0 { "relu" } else { "tanh" };
                trial(i + 1, lr, act, &[(lr.log10() + 2.5).powi(2)])
            })
            .collect();
        let a = analysis(&rec, &trials, &importance::Memo::default());
        let imp = a["importance"]["params"].as_array().expect("importance");
        let of = |n: &str| {
            imp.iter()
                .find(|p| p["name"] == n)
                .and_then(|p| p["importance"].as_f64())
                .unwrap_or(-1.0)
        };
        assert!(of("lr") > 0.9, "{imp:?}");
        assert!(of("act") < 0.05 && of("k") < 0.05, "{imp:?}");
    }

    /// Two objectives and a constraint: each trial's objectives, its rank and
    /// feasibility, and a hypervolume history that only feasible trials raise.
    #[test]
    fn several_objectives_bring_ranks_and_the_hypervolume_history() {
        let mut rec = record("");
        rec.spec = Study::parse(
            "name='a'\nobjectives=[{metric='loss'},{metric='ms'}]\nconstraints=['mem <= 4']\ntrials=9\n[params]\nlr={range=[1e-4,1e-1],scale='log'}\n[run]\nscript='true'\n",
            "a.toml",
            std::path::Path::new("."),
        )
        .expect("study");
        let mk = |id, loss: f64, ms: f64, mem: f64| {
            let mut t = trial(id, 0.01, "relu", &[loss]);
            t.metrics
                .extend([("ms".to_string(), ms), ("mem".to_string(), mem)]);
            t
        };
        let trials = vec![
            mk(1, 2.0, 2.0, 1.0),
            mk(2, 1.0, 1.0, 9.0),
            mk(3, 1.0, 3.0, 1.0),
            mk(4, 3.0, 1.0, 1.0),
        ];
        let a = analysis(&rec, &trials, &importance::Memo::default());
        assert_eq!(a["objectives"][1]["metric"], "ms");
        assert_eq!(a["constraints"], json!(["mem <= 4"]));
        let field = |k: &str| {
            a["trials"]
                .as_array()
                .expect("trials")
                .iter()
                .map(|t| t[k].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(field("rank"), [json!(1), json!(2), json!(1), json!(1)]);
        assert_eq!(
            field("feasible"),
            [json!(true), json!(false), json!(true), json!(true)]
        );
        assert_eq!(
            a["trials"][1]["metrics"],
            json!({"loss": 1.0, "ms": 1.0, "mem": 9.0})
        );
        // Reference: the feasible worst, pushed out by a tenth of the range (3.2, 3.2).
        assert_eq!(a["hypervolume"]["reference"], json!([3.2, 3.2]));
        let h: Vec<f64> = a["hypervolume"]["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|p| p[1].as_f64().unwrap_or(-1.0))
            .collect();
        let want = [
            1.2 * 1.2,
            1.2 * 1.2,
            1.2 * 1.2 + 1.0 * 0.2,
            1.2 * 1.2 + 0.2 + 0.2 * 1.0,
        ];
        for (got, want) in h.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{h:?}");
        }
        let single = analysis(&record(""), &trials, &importance::Memo::default());
        assert!(single["hypervolume"].is_null());
        assert_eq!(
            single["trials"][0]["rank"], 2,
            "one objective: rank is place"
        );
    }
}
