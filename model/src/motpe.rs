//! TPE for a study of several objectives, or with constraints: Optuna's MOTPE
//! (Ozaki et al., 2020 and 2022) as a split of the finished points, with TPE's
//! estimator ([`crate::tpe`], in its [`TpeSettings::pareto`] settings).
//!
//! TPE learns from which points are good. With several objectives, the good ones are
//! taken front by front (non-dominated sorting, under Deb's constrained domination:
//! feasible points first, the infeasible by how much they miss); the front that does
//! not fit whole gives the members that add most to the good set's hypervolume, one
//! at a time (the greedy hypervolume subset selection MOTPE uses). Each finished
//! point's loss here is its place in that order, which is all TPE reads of a loss.
//! The good points' kernels weigh alike, as in Optuna 5 (MOTPE's paper weighs each
//! by its share of the good set's hypervolume, which starves the front's ends: they
//! add the least against a reference just past the good points, yet widen the front).

use crate::leaderboard::{means, oriented, ranked_metrics, violation};
use crate::pareto::{fronts, hypervolume};
use crate::tpe::{Observation, TpeSettings};
use crate::trial::{Trial, TrialState};
use crate::value::Params;
use crate::Study;
use std::collections::BTreeMap;

/// What the trials so far say about each point, for TPE: a finished point's loss is
/// its place in MOTPE's order (see the module); a point stopped early (every
/// replicate pruned) ranks after all of them; `None` while a replicate runs.
pub fn observations(study: &Study, history: &[&Trial], settings: &TpeSettings) -> Vec<Observation> {
    #[derive(Default)]
    struct Point {
        params: Params,
        runs: Vec<BTreeMap<String, f64>>,
        open: bool,
        pruned: bool,
    }
    let mut by_point: BTreeMap<u64, Point> = BTreeMap::new();
    for t in history.iter().filter(|t| !t.is_dataset()) {
        let e = by_point.entry(t.point).or_insert_with(|| Point {
            params: t.params.clone(),
            ..Point::default()
        });
        match t.state {
            TrialState::Succeeded => {
                e.runs.extend(ranked_metrics(study, t));
            }
            TrialState::Pruned => e.pruned = true,
            TrialState::Failed => {}
            _ => e.open = true,
        }
    }
    let mut valued = Vec::new();
    let mut out = Vec::new();
    for p in by_point.into_values() {
        if !p.runs.is_empty() {
            let means = means(&p.runs);
            valued.push((p.params, oriented(study, &means), violation(study, &means)));
        } else if p.open || p.pruned {
            let pruned = p.pruned && !p.open;
            out.push(Observation {
                params: p.params,
                loss: pruned.then_some(f64::MAX),
                pruned,
            });
        }
    }
    let done = valued.len() + out.iter().filter(|o| o.pruned).count();
    let points: Vec<Vec<f64>> = valued.iter().map(|v| v.1.clone()).collect();
    let violations: Vec<f64> = valued.iter().map(|v| v.2).collect();
    let good = settings.good_count(done);
    let place = order(&points, &violations, good);
    for ((params, _, _), at) in valued.into_iter().zip(place) {
        out.push(Observation {
            params,
            loss: Some(at as f64),
            pruned: false,
        });
    }
    out
}

/// Each point's place in MOTPE's order (0 first), exact for the first `good`:
/// fronts best first; of the front that does not fit whole in `good`, the members
/// chosen one at a time for the hypervolume they add, if it is a front of feasible
/// points (else in index order, all missing by as much).
pub fn order(points: &[Vec<f64>], violations: &[f64], good: usize) -> Vec<usize> {
    let mut place = vec![0; points.len()];
    let mut next = 0;
    for front in fronts(points, violations) {
        let need = good.saturating_sub(next);
        let feasible = violations.get(front[0]).copied().unwrap_or(0.0) == 0.0;
        let ordered = match need > 0 && need < front.len() && feasible {
            true => greedy(points, &front, need),
            false => front,
        };
        for i in ordered {
            place[i] = next;
            next += 1;
        }
    }
    place
}

/// `front` reordered: first the `need` members picked one at a time for the most
/// hypervolume they add to those picked before, then the others in index order.
fn greedy(points: &[Vec<f64>], front: &[usize], need: usize) -> Vec<usize> {
    let reference = reference(points, front);
    let mut picked: Vec<usize> = Vec::with_capacity(front.len());
    let mut chosen: Vec<Vec<f64>> = Vec::new();
    let mut base = 0.0;
    for _ in 0..need {
        let mut best: Option<(f64, usize)> = None;
        for &i in front.iter().filter(|i| !picked.contains(i)) {
            chosen.push(points[i].clone());
            let gain = hypervolume(&chosen, &reference) - base;
            chosen.pop();
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let Some((gain, i)) = best else { break };
        picked.push(i);
        chosen.push(points[i].clone());
        base += gain;
    }
    let rest: Vec<usize> = front
        .iter()
        .copied()
        .filter(|i| !picked.contains(i))
        .collect();
    picked.extend(rest);
    picked
}

/// A point worse than every member of `front` in each objective: its worst value
/// moved away by a tenth of itself (Optuna's `max(1.1 w, 0.9 w)`), or by a hair at 0.
fn reference(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let dims = points[front[0]].len();
    (0..dims)
        .map(|m| {
            let worst = front
                .iter()
                .map(|&i| points[i][m])
                .fold(f64::NEG_INFINITY, f64::max);
            match worst == 0.0 {
                true => 1e-12,
                false => worst + 0.1 * worst.abs(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_front_gives_what_adds_most_hypervolume() {
        // One front of five: the two extremes add the least (their corners are thin).
        let p: Vec<Vec<f64>> = [[0.0, 10.0], [2.0, 4.0], [4.0, 2.5], [6.0, 1.0], [10.0, 0.0]]
            .iter()
            .map(|x| x.to_vec())
            .collect();
        let place = order(&p, &[], 1);
        // Alone under (11, 11): 11, 63, 59.5, 50 and 11.
        let first = place.iter().position(|&x| x == 0).expect("a first");
        assert_eq!(first, 1, "{place:?}");
        // Dominated points come after the whole front, and every place is given once.
        let mut q = p.clone();
        q.push(vec![11.0, 11.0]);
        let place = order(&q, &[], 2);
        assert_eq!(place[5], 5);
        let mut sorted = place.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn feasible_points_are_good_before_any_infeasible_one() {
        let p: Vec<Vec<f64>> = vec![vec![0.0, 0.0], vec![5.0, 5.0], vec![6.0, 6.0]];
        let place = order(&p, &[3.0, 0.0, 0.0], 1);
        assert_eq!(place, vec![2, 0, 1]);
    }
}
