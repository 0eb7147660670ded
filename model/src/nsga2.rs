//! NSGA-II (Deb et al., 2002) as an oracle: `oracle = "nsga2"`.
//!
//! Points are proposed in generations of `population` points. The first generation
//! is random search's points. A point of a later generation is a child of two parents
//! drawn from the best `population` points of the earlier generations that have
//! finished (elitism over all of them, so a late point of the previous generation
//! still counts when it lands): fronts under Deb's constrained domination, the last
//! front cut by crowding distance; each parent the winner of a binary tournament
//! (lower rank, then larger crowding distance).
//!
//! Variation, on each parameter's unit coordinate ([`Axis`]: linear, or logarithmic
//! for `log` ranges; an integer's coordinate spans its values' half-open cells and
//! is rounded back):
//! - crossover, with probability 0.9 per child: for numbers, bounded simulated binary
//!   crossover (SBX, distribution index 20) of each parameter with probability 0.5;
//!   for categories, each parameter from either parent with equal chance;
//! - mutation, of each parameter with probability 1 / (number of parameters): for
//!   numbers, bounded polynomial mutation (distribution index 20); for categories, a
//!   value drawn uniformly.
//!
//! Everything is drawn from the point's own seeded stream: a proposal is a function
//! of (study, point, history), as every oracle's is.

use crate::leaderboard::{means, oriented, ranked_metrics, violation};
use crate::oracle::Oracle;
use crate::pareto::{crowding, fronts};
use crate::space::{Axis, ParamSpec};
use crate::trial::{Trial, TrialState};
use crate::value::Params;
use crate::Study;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const CROSSOVER: f64 = 0.9;
const SWAP: f64 = 0.5;
const ETA_CROSSOVER: f64 = 20.0;
const ETA_MUTATION: f64 = 20.0;

/// The NSGA-II oracle of a study.
pub struct Nsga2 {
    names: Vec<String>,
    specs: Vec<ParamSpec>,
    axes: Vec<Axis>,
    study: Study,
    /// Points per generation.
    population: u64,
}

/// One finished point as NSGA-II sees it.
struct Member {
    coords: Vec<f64>,
    rank: usize,
    crowding: f64,
}

impl Nsga2 {
    pub fn new(study: &Study) -> Nsga2 {
        Nsga2 {
            names: study.params.keys().cloned().collect(),
            specs: study.params.values().cloned().collect(),
            axes: study.params.values().map(Axis::of).collect(),
            study: study.clone(),
            population: Nsga2::population_for(study.trials / study.replicates.max(1) as u64),
        }
    }

    /// Points per generation for a budget of `points`: a fifth of it, at least 10
    /// and at most 50 (Optuna's default), so a budget of 100 sees several
    /// generations.
    pub fn population_for(points: u64) -> u64 {
        (points / 5).clamp(10, 50)
    }

    fn random(&self, rng: &mut ChaCha8Rng) -> Params {
        self.names
            .iter()
            .zip(&self.specs)
            .map(|(k, p)| (k.clone(), p.sample(rng)))
            .collect()
    }

    /// The best `population` finished points of the generations before `before`.
    fn parents(&self, before: u64, history: &[&Trial]) -> Vec<Member> {
        let mut by_point: BTreeMap<u64, (Params, Vec<BTreeMap<String, f64>>)> = BTreeMap::new();
        for t in history
            .iter()
            .filter(|t| !t.is_dataset() && t.point < before)
        {
            if t.state != TrialState::Succeeded {
                continue;
            }
            if let Some(m) = ranked_metrics(&self.study, t) {
                let e = by_point
                    .entry(t.point)
                    .or_insert_with(|| (t.params.clone(), Vec::new()));
                e.1.push(m);
            }
        }
        let mut coords = Vec::new();
        let (mut points, mut violations) = (Vec::new(), Vec::new());
        for (params, runs) in by_point.into_values() {
            let Some(c) = self.encode(&params) else {
                continue;
            };
            let means = means(&runs);
            coords.push(c);
            points.push(oriented(&self.study, &means));
            violations.push(violation(&self.study, &means));
        }
        let mut kept = Vec::new();
        for (rank, front) in fronts(&points, &violations).into_iter().enumerate() {
            let distance = crowding(&points, &front);
            let mut members: Vec<(usize, f64)> = front.into_iter().zip(distance).collect();
            let room = self.population as usize - kept.len();
            if members.len() > room {
                members.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                members.truncate(room);
            }
            for (i, d) in members {
                kept.push(Member {
                    coords: coords[i].clone(),
                    rank,
                    crowding: d,
                });
            }
            if kept.len() >= self.population as usize {
                break;
            }
        }
        kept
    }

    fn encode(&self, params: &Params) -> Option<Vec<f64>> {
        self.names
            .iter()
            .zip(&self.axes)
            .map(|(k, a)| a.encode(params.get(k)?))
            .collect()
    }

    /// A child of two tournament winners, varied.
    fn child(&self, parents: &[Member], rng: &mut ChaCha8Rng) -> Params {
        let a = tournament(parents, rng);
        let b = tournament(parents, rng);
        let mut x = parents[a].coords.clone();
        if rng.gen::<f64>() < CROSSOVER {
            for (i, axis) in self.axes.iter().enumerate() {
                let (p, q) = (parents[a].coords[i], parents[b].coords[i]);
                x[i] = match axis.categories() {
                    Some(_) => [p, q][rng.gen_range(0..2)],
                    None if rng.gen::<f64>() < SWAP => sbx(p, q, rng),
                    None => p,
                };
            }
        }
        let rate = 1.0 / self.axes.len().max(1) as f64;
        for (i, axis) in self.axes.iter().enumerate() {
            if rng.gen::<f64>() >= rate {
                continue;
            }
            x[i] = match axis.categories() {
                Some(n) => rng.gen_range(0..n) as f64,
                None => polynomial(x[i], rng),
            };
        }
        self.names
            .iter()
            .zip(&self.axes)
            .zip(x)
            .map(|((k, axis), u)| (k.clone(), axis.decode(u)))
            .collect()
    }
}

impl Oracle for Nsga2 {
    fn propose(&self, point: u64, history: &[&Trial]) -> Option<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.study.seed);
        rng.set_stream(point);
        let generation = point / self.population;
        if generation == 0 {
            return Some(self.random(&mut rng));
        }
        let parents = self.parents(generation * self.population, history);
        if parents.len() < 2 {
            return Some(self.random(&mut rng));
        }
        Some(self.child(&parents, &mut rng))
    }
}

/// The better of two members drawn at random: lower rank, then larger crowding
/// distance, then the first drawn.
fn tournament(members: &[Member], rng: &mut ChaCha8Rng) -> usize {
    let i = rng.gen_range(0..members.len());
    let j = rng.gen_range(0..members.len());
    let (a, b) = (&members[i], &members[j]);
    match (a.rank, b.rank) {
        (x, y) if x < y => i,
        (x, y) if y < x => j,
        _ if b.crowding > a.crowding => j,
        _ => i,
    }
}

/// Bounded simulated binary crossover of `p` and `q` in [0, 1]: one of the two
/// children, chosen at random.
fn sbx(p: f64, q: f64, rng: &mut ChaCha8Rng) -> f64 {
    if (p - q).abs() < 1e-14 {
        return p;
    }
    let (y1, y2) = (p.min(q), p.max(q));
    let r: f64 = rng.gen();
    let spread = |beta: f64| {
        let alpha = 2.0 - beta.powf(-(ETA_CROSSOVER + 1.0));
        match r <= 1.0 / alpha {
            true => (r * alpha).powf(1.0 / (ETA_CROSSOVER + 1.0)),
            false => (1.0 / (2.0 - r * alpha)).powf(1.0 / (ETA_CROSSOVER + 1.0)),
        }
    };
    let c1 = 0.5 * ((y1 + y2) - spread(1.0 + 2.0 * y1 / (y2 - y1)) * (y2 - y1));
    let c2 = 0.5 * ((y1 + y2) + spread(1.0 + 2.0 * (1.0 - y2) / (y2 - y1)) * (y2 - y1));
    match rng.gen::<bool>() {
        true => c1.clamp(0.0, 1.0),
        false => c2.clamp(0.0, 1.0),
    }
}

/// Bounded polynomial mutation of `y` in [0, 1].
fn polynomial(y: f64, rng: &mut ChaCha8Rng) -> f64 {
    let r: f64 = rng.gen();
    let power = 1.0 / (ETA_MUTATION + 1.0);
    let delta = match r < 0.5 {
        true => {
            let v = 2.0 * r + (1.0 - 2.0 * r) * (1.0 - y).powf(ETA_MUTATION + 1.0);
            v.powf(power) - 1.0
        }
        false => {
            let v = 2.0 * (1.0 - r) + 2.0 * (r - 0.5) * y.powf(ETA_MUTATION + 1.0);
            1.0 - v.powf(power)
        }
    };
    (y + delta).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pareto::hypervolume;
    use std::path::Path;

    fn study(trials: u64) -> Study {
        let text = format!(
            "name = 's'\ntrials = {trials}\nseed = 4\noracle = 'nsga2'\nobjectives = [{{ metric = 'f1' }}, {{ metric = 'f2' }}]\n[params]\nx = {{ range = [0.0, 1.0] }}\ny = {{ range = [0.0, 1.0] }}\nk = {{ values = ['a', 'b'] }}\n[run]\nscript = 'true'\n"
        );
        Study::parse(&text, "s.toml", Path::new(".")).expect("study")
    }

    /// ZDT1 of (x, y): f1 = x, f2 = g (1 - sqrt(x / g)), g = 1 + 9 y.
    fn zdt1(p: &Params) -> (f64, f64) {
        let x = p["x"].as_f64().unwrap_or(0.5);
        let g = 1.0 + 9.0 * p["y"].as_f64().unwrap_or(0.5);
        (x, g * (1.0 - (x / g).sqrt()))
    }

    fn run(oracle: &dyn Oracle, trials: u64) -> Vec<Trial> {
        let mut done: Vec<Trial> = Vec::new();
        for point in 0..trials {
            let refs: Vec<&Trial> = done.iter().collect();
            let params = oracle.propose(point, &refs).expect("a point");
            let (f1, f2) = zdt1(&params);
            let mut t = Trial::new("s", point + 1, point, 0, params, 0);
            t.state = TrialState::Succeeded;
            t.metrics.insert("f1".into(), f1);
            t.metrics.insert("f2".into(), f2);
            done.push(t);
        }
        done
    }

    fn volume(trials: &[Trial]) -> f64 {
        let points: Vec<Vec<f64>> = trials
            .iter()
            .map(|t| vec![t.metrics["f1"], t.metrics["f2"]])
            .collect();
        hypervolume(&points, &[1.1, 11.0])
    }

    #[test]
    fn proposals_are_reproducible_and_in_the_space() {
        let s = study(60);
        let a = run(&Nsga2::new(&s), 60);
        let b = run(&Nsga2::new(&s), 60);
        assert_eq!(
            a.iter().map(|t| &t.params).collect::<Vec<_>>(),
            b.iter().map(|t| &t.params).collect::<Vec<_>>()
        );
        for t in &a {
            for (k, spec) in &s.params {
                assert!(spec.contains(&t.params[k]), "{k} = {:?}", t.params[k]);
            }
        }
    }

    #[test]
    fn generations_improve_on_random_search_of_zdt1() {
        let s = study(200);
        let nsga = volume(&run(&Nsga2::new(&s), 200));
        let random = volume(&run(
            crate::oracle_for(&Study {
                oracle: crate::OracleKind::Random,
                ..s
            })
            .as_ref(),
            200,
        ));
        assert!(nsga > random, "nsga2 {nsga} vs random {random}");
    }
}
