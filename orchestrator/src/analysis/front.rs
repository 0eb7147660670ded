//! The Pareto part of a study's analysis: each trial's values of the metrics the
//! study ranks or constrains by, its point's rank and feasibility, and the
//! hypervolume of the front trial by trial.

use crate::report::Ranked;
use augur_model::{leaderboard, pareto, Study, Trial};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A trial's values of the study's objectives and constrained metrics: what the
/// study ranks it by when it is ranked (built-in ones included), else what it has
/// reported so far.
pub(super) fn named_metrics(spec: &Study, t: &Trial) -> BTreeMap<String, f64> {
    leaderboard::ranked_metrics(spec, t)
        .unwrap_or_else(|| t.metrics.clone())
        .into_iter()
        .filter(|(k, v)| spec.names_metric(k) && v.is_finite())
        .collect()
}

/// The rank fields of a trial's row.
pub(super) fn rank_fields(ranked: Option<&Ranked>) -> (Value, Value) {
    (
        json!(ranked.map(|r| r.rank)),
        json!(ranked.map(|r| r.feasible)),
    )
}

/// The hypervolume of the front of the feasible trials, after each trial in id
/// order, against a reference point taken from them ([`pareto::reference`], in the
/// objectives' own directions): `{ reference, history: [[trial, hypervolume], ...] }`,
/// or null for a study of one objective or before any trial counts.
pub(super) fn hypervolume(spec: &Study, runs: &[&Trial]) -> Value {
    if !spec.is_multi() {
        return Value::Null;
    }
    let mut order: Vec<&&Trial> = runs.iter().collect();
    order.sort_by_key(|t| t.id);
    let points: Vec<Option<Vec<f64>>> = order
        .iter()
        .map(|t| {
            let m = leaderboard::ranked_metrics(spec, t)?;
            (leaderboard::violation(spec, &m) == 0.0).then(|| leaderboard::oriented(spec, &m))
        })
        .collect();
    let counted: Vec<Vec<f64>> = points.iter().flatten().cloned().collect();
    let Some(reference) = pareto::reference(&counted) else {
        return Value::Null;
    };
    let history = pareto::history(&points, &reference);
    // The reference in each objective's own direction, as its metric reads.
    let shown: Vec<f64> = spec
        .objectives()
        .iter()
        .zip(&reference)
        .map(|(o, r)| match o.goal {
            augur_model::Goal::Minimize => *r,
            augur_model::Goal::Maximize => -r,
        })
        .collect();
    json!({
        "reference": shown,
        "history": order.iter().zip(history).map(|(t, h)| json!([t.id, h])).collect::<Vec<_>>(),
    })
}
