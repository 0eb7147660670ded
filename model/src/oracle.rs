//! Oracles propose the parameter values of each point.
//!
//! Proposals are a function of (study, point index, history), never of hidden state,
//! so a restarted orchestrator proposes exactly what the dead one would have.

use crate::space::ParamSpec;
use crate::spec::{OracleKind, Study};
use crate::tpe::{Observation, Tpe, TpeSettings};
use crate::trial::{Trial, TrialState};
use crate::value::{Params, Value};
use crate::{Goal, Objective};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Proposes points.
pub trait Oracle: Send + Sync {
    /// Parameter values of point `point` (0-based) given the trials so far, or `None`
    /// when the oracle has nothing more to propose (a grid that ran out).
    fn propose(&self, point: u64, history: &[&Trial]) -> Option<Params>;
    /// Whether it learns from the trials so far (else `history` is left empty: a
    /// study of 100,000 trials would gather it for every proposal).
    fn learns(&self) -> bool {
        true
    }
}

/// The oracle a study asks for.
pub fn oracle_for(study: &Study) -> Box<dyn Oracle> {
    match study.oracle {
        OracleKind::Grid => Box::new(Grid::new(study)),
        OracleKind::Random => Box::new(Random {
            params: study
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            seed: study.seed,
        }),
        OracleKind::Nsga2 => Box::new(crate::nsga2::Nsga2::new(study)),
        OracleKind::Tpe => Box::new(TpeOracle {
            model: Tpe::new(
                &study
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
                study.seed,
                match study.is_multi() || !study.constraints.is_empty() {
                    true => TpeSettings::pareto(),
                    false => TpeSettings::default(),
                },
            ),
            study: study.clone(),
        }),
    }
}

/// What the trials so far say about each point, for model-based oracles: the mean
/// objective over the point's succeeded replicates (oriented so smaller is better);
/// failing that, the best value a pruned replicate reported (marked pruned); or `None`
/// while a replicate may still report one. Points that ended with no value (every
/// replicate failed) say nothing.
pub fn observations(objective: &Objective, history: &[&Trial]) -> Vec<Observation> {
    #[derive(Default)]
    struct Point {
        params: Params,
        sum: f64,
        n: u32,
        open: bool,
        pruned: Option<f64>,
    }
    let mut by_point: BTreeMap<u64, Point> = BTreeMap::new();
    for t in history.iter().filter(|t| !t.is_dataset()) {
        let e = by_point.entry(t.point).or_insert_with(|| Point {
            params: t.params.clone(),
            ..Point::default()
        });
        match (t.state, t.objective_value(objective)) {
            (TrialState::Succeeded, Some(v)) if v.is_finite() => {
                e.sum += v;
                e.n += 1;
            }
            (TrialState::Pruned, _) => {
                if let Some(v) = t.best_value(objective) {
                    e.pruned = Some(
                        e.pruned
                            .map_or(v, |p| if objective.better(v, p) { v } else { p }),
                    );
                }
            }
            (TrialState::Succeeded | TrialState::Failed, _) => {}
            _ => e.open = true,
        }
    }
    let sign = match objective.goal {
        Goal::Minimize => 1.0,
        Goal::Maximize => -1.0,
    };
    by_point
        .into_values()
        .filter_map(|p| {
            let (loss, pruned) = match (p.n, p.pruned, p.open) {
                (n, _, _) if n > 0 => (Some(sign * p.sum / n as f64), false),
                (_, Some(v), _) => (Some(sign * v), true),
                (_, None, true) => (None, false),
                _ => return None,
            };
            Some(Observation {
                params: p.params,
                loss,
                pruned,
            })
        })
        .collect()
}

/// The tree-structured Parzen estimator (see [`crate::tpe`]); MOTPE for a study of
/// several objectives or with constraints ([`crate::motpe`]).
pub struct TpeOracle {
    model: Tpe,
    study: Study,
}

impl Oracle for TpeOracle {
    fn propose(&self, point: u64, history: &[&Trial]) -> Option<Params> {
        let seen = match self.study.is_multi() || !self.study.constraints.is_empty() {
            true => crate::motpe::observations(&self.study, history, self.model.settings()),
            false => observations(&self.study.objective, history),
        };
        Some(self.model.suggest(point, &seen))
    }
}

/// Every combination of the parameters' grid values, last parameter fastest.
pub struct Grid {
    axes: Vec<(String, Vec<Value>)>,
    total: u64,
}

impl Grid {
    pub fn new(study: &Study) -> Grid {
        let axes: Vec<(String, Vec<Value>)> = study
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.grid_values().unwrap_or_default()))
            .collect();
        let total = axes
            .iter()
            .fold(1u64, |n, (_, v)| n.saturating_mul(v.len() as u64));
        Grid { axes, total }
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Oracle for Grid {
    fn learns(&self) -> bool {
        false
    }
    fn propose(&self, point: u64, _history: &[&Trial]) -> Option<Params> {
        if point >= self.total {
            return None;
        }
        let mut rest = point;
        let mut out = Params::new();
        for (name, values) in self.axes.iter().rev() {
            let n = values.len() as u64;
            out.insert(name.clone(), values[(rest % n) as usize].clone());
            rest /= n;
        }
        Some(out)
    }
}

/// Independent uniform (or log-uniform) samples, seeded per point.
pub struct Random {
    params: Vec<(String, ParamSpec)>,
    seed: u64,
}

impl Oracle for Random {
    fn learns(&self) -> bool {
        false
    }
    fn propose(&self, point: u64, _history: &[&Trial]) -> Option<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(point);
        Some(
            self.params
                .iter()
                .map(|(k, p)| (k.clone(), p.sample(&mut rng)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn study(extra: &str) -> Study {
        Study::parse(
            &format!("name='s'\nobjective={{metric='m'}}\n{extra}\n[params]\na={{values=['x','y']}}\nb={{range=[1,3]}}\nc={{range=[0.0,1.0],steps=2}}\n[run]\nscript='true'\n"),
            "t.toml",
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn grid_enumerates_every_point_once_then_runs_out() {
        let s = study("oracle='grid'");
        let g = oracle_for(&s);
        let points: Vec<Params> = (0..12).map(|i| g.propose(i, &[]).unwrap()).collect();
        let keys: std::collections::BTreeSet<String> =
            points.iter().map(crate::value::params_key).collect();
        assert_eq!(keys.len(), 12);
        assert!(g.propose(12, &[]).is_none());
        assert_eq!(s.trials, 12);
    }

    #[test]
    fn observations_average_replicates_mark_pruned_and_keep_running_points() {
        let s = study("trials=10\noracle='tpe'");
        let mk = |id: u64, point: u64, state: TrialState, m: Option<f64>| {
            let mut t = Trial::new("s", id, point, 0, Params::new(), 0);
            t.state = state;
            if let Some(v) = m {
                t.metrics.insert("m".into(), v);
            }
            t
        };
        let trials = [
            mk(1, 0, TrialState::Succeeded, Some(1.0)),
            mk(2, 0, TrialState::Succeeded, Some(3.0)),
            mk(3, 0, TrialState::Running, None),
            mk(4, 1, TrialState::Running, None),
            mk(5, 2, TrialState::Failed, None),
            mk(6, 3, TrialState::Pruned, Some(7.0)),
            mk(7, 4, TrialState::Lost, None),
        ];
        let refs: Vec<&Trial> = trials.iter().collect();
        let obs = observations(&s.objective, &refs);
        let got: Vec<(Option<f64>, bool)> = obs.iter().map(|o| (o.loss, o.pruned)).collect();
        // Point 0: the mean of its finished replicates; 1: running; 2: failed, says
        // nothing; 3: pruned at its best; 4: lost, may still be retried.
        assert_eq!(
            got,
            vec![
                (Some(2.0), false),
                (None, false),
                (Some(7.0), true),
                (None, false)
            ]
        );
        let mut max = s.clone();
        max.objective.goal = Goal::Maximize;
        assert_eq!(observations(&max.objective, &refs)[0].loss, Some(-2.0));
    }

    #[test]
    fn tpe_needs_a_budget() {
        let err = Study::parse(
            "name='s'\nobjective={metric='m'}\noracle='tpe'\n[params]\na={range=[0.0,1.0]}\n[run]\nscript='true'\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("trials (the budget) is required for the tpe oracle"),
            "{err}"
        );
    }

    #[test]
    fn random_is_reproducible_and_in_bounds() {
        let s = study("trials=50\nseed=7");
        let a = oracle_for(&s);
        let b = oracle_for(&s);
        for i in 0..50 {
            let p = a.propose(i, &[]).unwrap();
            assert_eq!(p, b.propose(i, &[]).unwrap());
            for (k, v) in &p {
                assert!(s.params[k].contains(v), "{k}={v:?}");
            }
        }
        assert_ne!(a.propose(0, &[]), a.propose(1, &[]));
        let other = oracle_for(&study("trials=50\nseed=8"));
        assert_ne!(a.propose(0, &[]), other.propose(0, &[]));
    }
}
