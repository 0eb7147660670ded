//! Ranking points: each point's metrics are the mean over its succeeded replicates.
//! Points are ranked by their objectives under Deb's constrained domination: rank 1
//! is the Pareto front of the feasible points (of a study of one objective, the best
//! value), then rank 2, and so on; infeasible points after every feasible one, by how
//! much they miss. Within a rank, the primary objective's best first.

use crate::constraint::{self, BUILT_IN};
use crate::trial::{Trial, TrialState};
use crate::value::Params;
use crate::{Goal, Study};
use std::collections::BTreeMap;

/// One ranked point.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderboardRow {
    pub point: u64,
    pub params: Params,
    /// Mean of each metric over the succeeded replicates that reported it (and of
    /// the built-in `cost_usd` and `machine_hours` where the study names them).
    pub metrics: BTreeMap<String, f64>,
    /// The primary objective's mean.
    pub value: f64,
    /// Replicate indices that succeeded, and their trial ids.
    pub replicates: Vec<u32>,
    pub trials: Vec<u64>,
    /// Whether a replicate was pruned (its best reported value is what counts).
    pub pruned: bool,
    /// Its Pareto rank (1: no point beats it).
    pub rank: usize,
    /// Whether it meets every constraint (always, for a study without).
    pub feasible: bool,
}

/// A trial's metrics as the study ranks them: a succeeded trial's last values, or a
/// pruned trial's with the primary objective at its best, with the built-in metrics
/// the study names (what its machines cost and their hours); `None` unless every
/// objective has a value. ([`Trial::result_metrics`] for one objective, which a
/// built-in metric cannot be read by.)
pub fn ranked_metrics(study: &Study, t: &Trial) -> Option<BTreeMap<String, f64>> {
    let mut m = match t.state {
        TrialState::Succeeded => t.metrics.clone(),
        TrialState::Pruned => {
            let mut m = t.metrics.clone();
            let best = t.best_value(&study.objective)?;
            m.insert(study.objective.metric.clone(), best);
            m
        }
        _ => return None,
    };
    let now = t.finished_ms.or(t.heartbeat_ms).unwrap_or(0);
    for name in BUILT_IN.iter().filter(|b| study.names_metric(b)) {
        if let Some(v) = constraint::value_of(t, name, now) {
            m.insert(name.to_string(), v);
        }
    }
    study
        .objectives()
        .iter()
        .all(|o| m.get(&o.metric).is_some_and(|v| !v.is_nan()))
        .then_some(m)
}

/// Each metric's mean over the replicates (metric maps) that reported it.
pub fn means<'a>(
    runs: impl IntoIterator<Item = &'a BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for m in runs {
        for (k, v) in m {
            let e = sums.entry(k).or_insert((0.0, 0));
            (e.0, e.1) = (e.0 + v, e.1 + 1);
        }
    }
    sums.into_iter()
        .map(|(k, (s, n))| (k.to_string(), s / n as f64))
        .collect()
}

/// A point's objectives from its metrics, each oriented so smaller is better.
pub fn oriented(study: &Study, metrics: &BTreeMap<String, f64>) -> Vec<f64> {
    study
        .objectives()
        .iter()
        .map(|o| {
            let v = metrics.get(&o.metric).copied().unwrap_or(f64::INFINITY);
            match o.goal {
                Goal::Minimize => v,
                Goal::Maximize => -v,
            }
        })
        .collect()
}

/// A point's total violation of the study's constraints, from its metrics.
pub fn violation(study: &Study, metrics: &BTreeMap<String, f64>) -> f64 {
    study
        .constraints
        .iter()
        .map(|c| c.violation(metrics.get(&c.metric).copied()))
        .sum()
}

/// Points with at least one replicate that succeeded or was pruned and reported the
/// objectives, best first. A pruned replicate counts with its best reported value.
pub fn leaderboard(study: &Study, trials: &[Trial]) -> Vec<LeaderboardRow> {
    type Counted<'a> = (&'a Trial, BTreeMap<String, f64>);
    let mut by_point: BTreeMap<u64, Vec<Counted>> = BTreeMap::new();
    for t in trials.iter().filter(|t| !t.is_dataset()) {
        if let Some(m) = ranked_metrics(study, t) {
            by_point.entry(t.point).or_default().push((t, m));
        }
    }
    let mut rows: Vec<LeaderboardRow> = by_point
        .into_iter()
        .map(|(point, mut ts)| {
            ts.sort_by_key(|(t, _)| t.replicate);
            let metrics = means(ts.iter().map(|(_, m)| m));
            LeaderboardRow {
                point,
                params: ts[0].0.params.clone(),
                value: metrics[&study.objective.metric],
                feasible: true,
                metrics,
                replicates: ts.iter().map(|(t, _)| t.replicate).collect(),
                trials: ts.iter().map(|(t, _)| t.id).collect(),
                pruned: ts.iter().any(|(t, _)| t.state == TrialState::Pruned),
                rank: 0,
            }
        })
        .collect();
    let points: Vec<Vec<f64>> = rows.iter().map(|r| oriented(study, &r.metrics)).collect();
    let violations: Vec<f64> = rows.iter().map(|r| violation(study, &r.metrics)).collect();
    let ranks = crate::pareto::ranks(&points, &violations);
    for ((row, rank), v) in rows.iter_mut().zip(ranks).zip(&violations) {
        (row.rank, row.feasible) = (rank, *v == 0.0);
    }
    let sign = match study.objective.goal {
        Goal::Minimize => 1.0,
        Goal::Maximize => -1.0,
    };
    rows.sort_by(|a, b| {
        a.rank
            .cmp(&b.rank)
            .then((sign * a.value).total_cmp(&(sign * b.value)))
            .then(a.point.cmp(&b.point))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn ranks_points_by_mean_over_succeeded_replicates() {
        let s = Study::parse(
            "name='s'\nobjective={metric='loss',goal='minimize'}\ntrials=6\nreplicates=2\n[run]\nscript='true'\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        let mk = |id, point, rep, loss: Option<f64>, state| {
            let mut t = Trial::new("s", id, point, rep, Params::new(), 0);
            t.state = state;
            if let Some(l) = loss {
                t.metrics.insert("loss".into(), l);
            }
            t
        };
        let trials = vec![
            mk(1, 0, 0, Some(1.0), TrialState::Succeeded),
            mk(2, 0, 1, Some(3.0), TrialState::Succeeded),
            mk(3, 1, 0, Some(0.5), TrialState::Succeeded),
            mk(4, 1, 1, Some(0.1), TrialState::Failed),
            mk(5, 2, 0, None, TrialState::Succeeded),
        ];
        let lb = leaderboard(&s, &trials);
        assert_eq!(lb.len(), 2);
        assert_eq!(lb[0].point, 1);
        assert_eq!(lb[0].replicates, vec![0]);
        assert_eq!(lb[1].value, 2.0);
        assert_eq!(lb[1].trials, vec![1, 2]);
        assert!(!lb[0].pruned);
    }

    #[test]
    fn a_pruned_trial_counts_with_its_best_reading() {
        let s = Study::parse(
            "name='s'\nobjective={metric='acc',goal='maximize'}\ntrials=6\n[run]\nscript='true'\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        let mut done = Trial::new("s", 1, 0, 0, Params::new(), 0);
        done.state = TrialState::Succeeded;
        done.metrics.insert("acc".into(), 0.7);
        let mut pruned = Trial::new("s", 2, 1, 0, Params::new(), 0);
        pruned.state = TrialState::Pruned;
        for (i, a) in [0.6, 0.8, 0.75].iter().enumerate() {
            pruned.series.push(crate::MetricPoint {
                t_ms: i as i64,
                values: [("acc".to_string(), *a)].into(),
            });
        }
        pruned.metrics.insert("acc".into(), 0.75);
        let lb = leaderboard(&s, &[done, pruned]);
        assert_eq!(lb[0].point, 1);
        assert_eq!(lb[0].value, 0.8);
        assert!(lb[0].pruned);
        assert_eq!(lb[1].value, 0.7);
    }

    #[test]
    fn a_built_in_metric_ranks_without_the_script_reporting_it() {
        let s = Study::parse(
            "name='s'\nobjectives=[{metric='cost_usd'},{metric='loss'}]\nconstraints=['machine_hours <= 1']\ntrials=4\n[run]\nscript='true'\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            s.objective.metric, "loss",
            "the primary is the reported one"
        );
        let mk = |id, loss: f64, hours: i64| {
            let mut t = Trial::new("s", id, id, 0, Params::new(), 0);
            t.state = TrialState::Succeeded;
            t.launched_ms = Some(0);
            t.finished_ms = Some(hours * 3_600_000);
            t.metrics.insert("loss".into(), loss);
            t
        };
        let lb = leaderboard(&s, &[mk(1, 2.0, 0), mk(2, 1.0, 0), mk(3, 0.5, 2)]);
        assert_eq!(lb.len(), 3);
        assert_eq!((lb[0].point, lb[0].rank, lb[0].feasible), (2, 1, true));
        assert_eq!(lb[0].metrics["cost_usd"], 0.0);
        assert_eq!((lb[1].point, lb[1].rank), (1, 2));
        // Two machine-hours miss the constraint: after every feasible point.
        assert_eq!((lb[2].point, lb[2].rank, lb[2].feasible), (3, 3, false));
        assert_eq!(lb[2].metrics["machine_hours"], 2.0);
    }
}
