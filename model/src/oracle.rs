//! Oracles propose the parameter values of each point.
//!
//! Proposals are a function of (study, point index, history), never of hidden state,
//! so a restarted orchestrator proposes exactly what the dead one would have.

use crate::space::ParamSpec;
use crate::spec::{OracleKind, Study};
use crate::trial::Trial;
use crate::value::{Params, Value};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Proposes points.
pub trait Oracle: Send + Sync {
    /// Parameter values of point `point` (0-based) given the trials so far, or `None`
    /// when the oracle has nothing more to propose (a grid that ran out).
    fn propose(&self, point: u64, history: &[&Trial]) -> Option<Params>;
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
