//! The tree-structured Parzen estimator (Bergstra et al. 2011), multivariate (Falkner
//! et al. 2018), over mixed spaces.
//!
//! Every parameter is mapped to a unit coordinate (floats and integers, linearly or in
//! log scale; an integer covers `[lo - ½, hi + ½]` so each value owns an equal share)
//! or to a category index. The points seen so far are split into the best `γ(n)` and
//! the rest; each group becomes a mixture of one product kernel per point plus a broad
//! prior kernel. Candidates are drawn from the good mixture `l` and the one with the
//! largest `l(x) / g(x)` is proposed. Points that are still running count as bad ones
//! (a constant liar), so parallel proposals spread out instead of piling up.
//!
//! A proposal is a function of (seed, point index, observations): a restarted
//! orchestrator that sees the same history proposes the same point.

use crate::space::{Axis, ParamSpec};
use crate::value::Params;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// DriveFlags of the estimator. The defaults are what `oracle = "tpe"` uses.
#[derive(Clone, Debug, PartialEq)]
pub struct TpeSettings {
    /// Points proposed at random before the model is used.
    pub startup: usize,
    /// Candidates drawn from the good mixture per proposal.
    pub candidates: usize,
    /// Fraction of the points that count as good (before the cap).
    pub gamma: f64,
    /// Most points that count as good.
    pub max_good: usize,
    /// Weight of the prior kernel in each mixture (a point's kernel weighs 1).
    pub prior_weight: f64,
    /// Each kernel's bandwidth on a numeric axis: the larger gap to its neighbours
    /// (`false`), or the same for all of a mixture's kernels, Scott's rule for `d`
    /// dimensions (`s n^(-1/(d+4))`, `s` the points' standard deviation along the
    /// axis, at most 0.2: the fixed factor of Optuna's former multivariate
    /// estimator; at least `1/min(100, n+2)`), so points gathered along an axis get
    /// narrow kernels on it.
    pub scott: bool,
}

impl TpeSettings {
    /// The settings of MOTPE ([`crate::motpe`]): a tenth of the points are good, as
    /// Optuna's default γ gives; Scott's bandwidths; 48 candidates (twice Optuna's):
    /// with kernels that narrow, more draws are needed to find where `l / g` peaks.
    pub fn pareto() -> TpeSettings {
        TpeSettings {
            gamma: 0.10,
            candidates: 48,
            scott: true,
            ..TpeSettings::default()
        }
    }

    /// How many of `n` finished points count as good: γ(n), at least one, at most
    /// `max_good`.
    pub fn good_count(&self, n: usize) -> usize {
        ((self.gamma * n as f64).ceil() as usize).clamp(1, self.max_good)
    }
}

impl Default for TpeSettings {
    fn default() -> TpeSettings {
        TpeSettings {
            startup: 10,
            candidates: 128,
            gamma: 0.15,
            max_good: 25,
            prior_weight: 1.0,
            scott: false,
        }
    }
}

/// One point the estimator learns from.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub params: Params,
    /// The objective, oriented so that smaller is better; `None` while it runs.
    pub loss: Option<f64>,
    /// Stopped early: its loss is the best it reported, and it ranks after every point
    /// that ran to the end.
    pub pruned: bool,
}

/// The TPE oracle's model.
#[derive(Clone, Debug)]
pub struct Tpe {
    names: Vec<String>,
    specs: Vec<ParamSpec>,
    axes: Vec<Axis>,
    seed: u64,
    settings: TpeSettings,
}

impl Tpe {
    pub fn new(params: &[(String, ParamSpec)], seed: u64, settings: TpeSettings) -> Tpe {
        Tpe {
            names: params.iter().map(|(k, _)| k.clone()).collect(),
            specs: params.iter().map(|(_, p)| p.clone()).collect(),
            axes: params.iter().map(|(_, p)| Axis::of(p)).collect(),
            seed,
            settings,
        }
    }

    pub fn settings(&self) -> &TpeSettings {
        &self.settings
    }

    /// The random generator of point `point`: the same stream random search uses, so
    /// the start-up phase proposes exactly the random oracle's points.
    fn rng(&self, point: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(point);
        rng
    }

    /// Parameter values for point `point` given what has been observed.
    pub fn suggest(&self, point: u64, observations: &[Observation]) -> Params {
        let mut rng = self.rng(point);
        let done: Vec<(Vec<f64>, (bool, f64))> = observations
            .iter()
            .filter_map(|o| Some((self.encode(&o.params)?, (o.pruned, o.loss?))))
            .filter(|(_, (_, l))| !l.is_nan())
            .collect();
        if done.len() < self.settings.startup.max(1) {
            return self
                .names
                .iter()
                .zip(&self.specs)
                .map(|(k, p)| (k.clone(), p.sample(&mut rng)))
                .collect();
        }
        let running = observations
            .iter()
            .filter(|o| o.loss.is_none())
            .filter_map(|o| self.encode(&o.params));

        // Split: the best γ(n) are good; the rest and the running points are bad.
        // A stable sort keeps ties in observation order, so the split is reproducible.
        let mut order: Vec<usize> = (0..done.len()).collect();
        order.sort_by(|&i, &j| {
            let ((pi, li), (pj, lj)) = (done[i].1, done[j].1);
            pi.cmp(&pj).then(li.total_cmp(&lj))
        });
        let n_good = self.settings.good_count(done.len());
        let mut is_good = vec![false; done.len()];
        for &i in &order[..n_good] {
            is_good[i] = true;
        }
        let good: Vec<&[f64]> = done
            .iter()
            .zip(&is_good)
            .filter(|(_, g)| **g)
            .map(|((x, _), _)| x.as_slice())
            .collect();
        let bad_x: Vec<Vec<f64>> = done
            .iter()
            .zip(&is_good)
            .filter(|(_, g)| !**g)
            .map(|((x, _), _)| x.clone())
            .chain(running)
            .collect();
        let bad: Vec<&[f64]> = bad_x.iter().map(|x| x.as_slice()).collect();

        let l = Parzen::new(&self.axes, &good, &self.settings, vec![1.0; good.len()]);
        let g = Parzen::new(&self.axes, &bad, &self.settings, ramp(bad.len()));
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..self.settings.candidates.max(1) {
            let x = self.snap(l.sample(&mut rng));
            let score = l.log_pdf(&x) - g.log_pdf(&x);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, x));
            }
        }
        let x = best.map(|(_, x)| x).unwrap_or_default();
        self.names
            .iter()
            .zip(&self.axes)
            .zip(&x)
            .map(|((k, axis), u)| (k.clone(), axis.decode(*u)))
            .collect()
    }

    /// The coordinates of `params`, or `None` if they do not fit this space (a point
    /// recorded before the parameters changed).
    fn encode(&self, params: &Params) -> Option<Vec<f64>> {
        self.names
            .iter()
            .zip(&self.axes)
            .map(|(k, axis)| axis.encode(params.get(k)?))
            .collect()
    }

    /// Moves a sampled point onto the values it stands for (integers to their centre),
    /// so candidates are scored where they will actually be run.
    fn snap(&self, x: Vec<f64>) -> Vec<f64> {
        x.into_iter()
            .zip(&self.axes)
            .map(|(u, axis)| match axis {
                Axis::Num { int: Some(_), .. } => axis.encode(&axis.decode(u)).unwrap_or(u),
                _ => u,
            })
            .collect()
    }
}

/// A mixture of product kernels: one per point, plus a prior kernel.
struct Parzen<'a> {
    axes: &'a [Axis],
    /// Per kernel: log weight (normalized).
    log_w: Vec<f64>,
    /// Per kernel, per axis: the centre (coordinate or category index).
    mu: Vec<Vec<f64>>,
    /// Per kernel, per numeric axis: bandwidth and log of the truncation mass.
    sigma: Vec<Vec<f64>>,
    log_z: Vec<Vec<f64>>,
    /// Per kernel, per categorical axis: log probability of each category.
    cat: Vec<Vec<Vec<f64>>>,
}

/// The weights of `n` bad points, oldest first: older ones weigh less once there are
/// many (what Optuna does for the bad group: the landscape the search left behind
/// matters less).
fn ramp(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let k = n - 25;
    (0..n)
        .map(|i| match i < k {
            true => 1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (k.max(2) - 1) as f64,
            false => 1.0,
        })
        .collect()
}

impl<'a> Parzen<'a> {
    /// `weights`: each point's kernel's (the prior's is `s.prior_weight`).
    fn new(
        axes: &'a [Axis],
        points: &[&[f64]],
        s: &TpeSettings,
        mut weights: Vec<f64>,
    ) -> Parzen<'a> {
        let n = points.len();
        let least = 1.0 / (n as f64 + 2.0).min(100.0);
        let bandwidths: Vec<Vec<f64>> = (0..axes.len())
            .map(|d| match (axes[d].categories(), s.scott) {
                (None, false) => neighbour_bandwidths(points.iter().map(|p| p[d]), n),
                (None, true) => {
                    let scott = scott_bandwidth(points.iter().map(|p| p[d]), n, axes.len());
                    vec![scott.max(least); n]
                }
                (Some(_), _) => Vec::new(),
            })
            .collect();
        weights.push(s.prior_weight);
        let total: f64 = weights.iter().sum();
        let log_w = weights.iter().map(|w| (w / total).ln()).collect();

        let kernels = n + 1;
        let mut mu = Vec::with_capacity(kernels);
        let mut sigma = Vec::with_capacity(kernels);
        let mut log_z = Vec::with_capacity(kernels);
        let mut cat = Vec::with_capacity(kernels);
        for k in 0..kernels {
            let prior = k == n;
            let mut m = Vec::with_capacity(axes.len());
            let mut sg = Vec::with_capacity(axes.len());
            let mut z = Vec::with_capacity(axes.len());
            let mut c = Vec::with_capacity(axes.len());
            for (d, axis) in axes.iter().enumerate() {
                match axis.categories() {
                    None => {
                        let (centre, bw) = if prior {
                            (0.5, 1.0)
                        } else {
                            (points[k][d], bandwidths[d][k])
                        };
                        m.push(centre);
                        sg.push(bw);
                        z.push(truncation_log_mass(centre, bw));
                        c.push(Vec::new());
                    }
                    Some(choices) => {
                        // Optuna's categorical kernel: the observed category plus an
                        // even share of the prior's weight over every category.
                        let spread = s.prior_weight / kernels as f64;
                        let mut p = vec![spread; choices];
                        if !prior {
                            p[points[k][d] as usize] += 1.0;
                        }
                        let sum: f64 = p.iter().sum();
                        m.push(if prior { 0.0 } else { points[k][d] });
                        sg.push(0.0);
                        z.push(0.0);
                        c.push(p.iter().map(|x| (x / sum).ln()).collect());
                    }
                }
            }
            mu.push(m);
            sigma.push(sg);
            log_z.push(z);
            cat.push(c);
        }
        Parzen {
            axes,
            log_w,
            mu,
            sigma,
            log_z,
            cat,
        }
    }

    fn sample<R: Rng>(&self, rng: &mut R) -> Vec<f64> {
        let r: f64 = rng.gen();
        let mut acc = 0.0;
        let mut k = self.log_w.len() - 1;
        for (i, lw) in self.log_w.iter().enumerate() {
            acc += lw.exp();
            if r < acc {
                k = i;
                break;
            }
        }
        self.axes
            .iter()
            .enumerate()
            .map(|(d, axis)| match axis.categories() {
                None => truncated_normal(rng, self.mu[k][d], self.sigma[k][d]),
                Some(_) => {
                    let r: f64 = rng.gen();
                    let mut acc = 0.0;
                    let probs = &self.cat[k][d];
                    for (i, lp) in probs.iter().enumerate() {
                        acc += lp.exp();
                        if r < acc {
                            return i as f64;
                        }
                    }
                    (probs.len() - 1) as f64
                }
            })
            .collect()
    }

    fn log_pdf(&self, x: &[f64]) -> f64 {
        let terms = (0..self.log_w.len()).map(|k| {
            let mut lp = self.log_w[k];
            for (d, axis) in self.axes.iter().enumerate() {
                lp += match axis.categories() {
                    None => {
                        let s = self.sigma[k][d];
                        let z = (x[d] - self.mu[k][d]) / s;
                        -0.5 * z * z - s.ln() - LN_SQRT_2PI - self.log_z[k][d]
                    }
                    Some(_) => self.cat[k][d][x[d] as usize],
                };
            }
            lp
        });
        log_sum_exp(terms)
    }
}

/// The bandwidth of Scott's rule on one axis for `n` points in `dims` dimensions:
/// `s n^(-1/(dims+4))`, `s` the points' standard deviation along the axis, at most 0.2
/// (a uniform spread's is 0.29).
fn scott_bandwidth(xs: impl Iterator<Item = f64> + Clone, n: usize, dims: usize) -> f64 {
    let count = n.max(1) as f64;
    let mean = xs.clone().sum::<f64>() / count;
    let spread = (xs.map(|x| (x - mean).powi(2)).sum::<f64>() / count).sqrt();
    spread.min(0.2) * count.powf(-1.0 / (dims as f64 + 4.0))
}

/// Each point's bandwidth on one axis: the larger distance to its neighbours (the
/// interval's ends count as neighbours, except for the outermost points, which use
/// their inner neighbour twice), kept within `[1/min(100, n+2), 1]` of the interval.
fn neighbour_bandwidths(xs: impl Iterator<Item = f64>, n: usize) -> Vec<f64> {
    let xs: Vec<f64> = xs.collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| xs[i].total_cmp(&xs[j]));
    let mut sorted = Vec::with_capacity(n + 2);
    sorted.push(0.0);
    sorted.extend(order.iter().map(|&i| xs[i]));
    sorted.push(1.0);
    let mut out = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        let (left, right) = (
            sorted[rank + 1] - sorted[rank],
            sorted[rank + 2] - sorted[rank + 1],
        );
        let s = if n >= 2 && rank == 0 {
            right
        } else if n >= 2 && rank == n - 1 {
            left
        } else {
            left.max(right)
        };
        out[i] = s.clamp(1.0 / (n as f64 + 2.0).min(100.0), 1.0);
    }
    out
}

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

fn log_sum_exp(terms: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// `ln P(0 ≤ N(mu, sigma) ≤ 1)`.
fn truncation_log_mass(mu: f64, sigma: f64) -> f64 {
    let p = normal_cdf((1.0 - mu) / sigma) - normal_cdf((0.0 - mu) / sigma);
    p.max(1e-300).ln()
}

/// The standard normal CDF (erfc with relative error below 1.2e-7).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' Chebyshev fit.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// A draw of `N(mu, sigma)` restricted to `[0, 1]` (by rejection; the kernels' centres
/// lie in the interval, so at least a third of the draws land).
fn truncated_normal<R: Rng>(rng: &mut R, mu: f64, sigma: f64) -> f64 {
    for _ in 0..64 {
        let x = mu + sigma * standard_normal(rng);
        if (0.0..=1.0).contains(&x) {
            return x;
        }
    }
    mu.clamp(0.0, 1.0)
}

fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    // Box–Muller; 1 - u keeps the logarithm finite.
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn space() -> Vec<(String, ParamSpec)> {
        vec![
            (
                "lr".into(),
                ParamSpec::Float {
                    lo: 1e-5,
                    hi: 1e-1,
                    log: true,
                    steps: None,
                },
            ),
            (
                "x".into(),
                ParamSpec::Float {
                    lo: -5.0,
                    hi: 5.0,
                    log: false,
                    steps: None,
                },
            ),
            (
                "layers".into(),
                ParamSpec::Int {
                    lo: 1,
                    hi: 8,
                    log: false,
                    steps: None,
                },
            ),
            (
                "width".into(),
                ParamSpec::Int {
                    lo: 16,
                    hi: 1024,
                    log: true,
                    steps: None,
                },
            ),
            (
                "act".into(),
                ParamSpec::Choice {
                    values: vec![
                        Value::Str("relu".into()),
                        Value::Str("tanh".into()),
                        Value::Str("gelu".into()),
                    ],
                },
            ),
        ]
    }

    /// A loss that prefers lr near 1e-3, x near 1, 3 layers, width near 256, gelu.
    fn loss(p: &Params) -> f64 {
        let lr = p["lr"].as_f64().unwrap();
        let x = p["x"].as_f64().unwrap();
        let layers = p["layers"].as_f64().unwrap();
        let width = p["width"].as_f64().unwrap();
        let act = match &p["act"] {
            Value::Str(s) if s == "gelu" => 0.0,
            Value::Str(s) if s == "relu" => 1.5,
            _ => 3.0,
        };
        (lr.log10() + 3.0).powi(2)
            + (x - 1.0).powi(2)
            + 0.3 * (layers - 3.0).powi(2)
            + (width.log2() - 8.0).powi(2)
            + act
    }

    fn run(tpe: &Tpe, n: u64) -> Vec<Observation> {
        let mut obs = Vec::new();
        for i in 0..n {
            let p = tpe.suggest(i, &obs);
            let l = loss(&p);
            obs.push(Observation {
                params: p,
                loss: Some(l),
                pruned: false,
            });
        }
        obs
    }

    #[test]
    fn reproducible_with_a_seed_and_different_across_seeds() {
        let a = run(&Tpe::new(&space(), 3, TpeSettings::default()), 40);
        let b = run(&Tpe::new(&space(), 3, TpeSettings::default()), 40);
        let c = run(&Tpe::new(&space(), 4, TpeSettings::default()), 40);
        assert_eq!(a, b);
        assert_ne!(a[20].params, c[20].params);
    }

    #[test]
    fn proposals_stay_in_bounds_and_types() {
        let sp = space();
        let obs = run(&Tpe::new(&sp, 1, TpeSettings::default()), 80);
        for o in &obs {
            for (k, spec) in &sp {
                let v = &o.params[k];
                assert!(spec.contains(v), "{k}={v:?} outside {spec:?}");
                match spec {
                    ParamSpec::Int { .. } => assert!(matches!(v, Value::Int(_)), "{k}={v:?}"),
                    ParamSpec::Float { .. } => assert!(matches!(v, Value::Float(_))),
                    ParamSpec::Choice { .. } => assert!(matches!(v, Value::Str(_))),
                }
            }
        }
    }

    #[test]
    fn learns_the_best_category_and_beats_random_search() {
        let best = |obs: &[Observation]| {
            obs.iter()
                .filter_map(|o| o.loss)
                .fold(f64::INFINITY, f64::min)
        };
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let (mut tpe_best, mut random_best, mut gelu_late) = (Vec::new(), Vec::new(), 0);
        for seed in 0..10 {
            let tpe = run(&Tpe::new(&space(), seed, TpeSettings::default()), 80);
            let random = TpeSettings {
                startup: usize::MAX,
                ..TpeSettings::default()
            };
            tpe_best.push(best(&tpe));
            random_best.push(best(&run(&Tpe::new(&space(), seed, random), 80)));
            gelu_late += tpe[40..]
                .iter()
                .filter(|o| o.params["act"] == Value::Str("gelu".into()))
                .count();
        }
        let (t, r) = (median(tpe_best), median(random_best));
        assert!(t < r / 2.0, "median best: TPE {t}, random search {r}");
        // Random search picks gelu a third of the time; the model should prefer it.
        assert!(
            gelu_late > 400 * 45 / 100,
            "gelu in {gelu_late} of 400 late proposals"
        );
    }

    #[test]
    fn start_up_phase_is_random_search() {
        let tpe = Tpe::new(&space(), 9, TpeSettings::default());
        let obs = run(&tpe, 10);
        let sp = space();
        for (i, o) in obs.iter().enumerate() {
            let mut rng = tpe.rng(i as u64);
            let expect: Params = sp
                .iter()
                .map(|(k, p)| (k.clone(), p.sample(&mut rng)))
                .collect();
            assert_eq!(o.params, expect);
        }
    }

    #[test]
    fn parallel_proposals_differ_through_the_liar() {
        let tpe = Tpe::new(&space(), 5, TpeSettings::default());
        let mut obs = run(&tpe, 30);
        // Four proposals in a row while the earlier ones still run, each drawn with the
        // same random stream: only the running points can push them apart.
        let same_stream = Tpe::new(&space(), 5, TpeSettings::default());
        let mut proposals = Vec::new();
        for _ in 0..4 {
            let p = same_stream.suggest(30, &obs);
            obs.push(Observation {
                params: p.clone(),
                loss: None,
                pruned: false,
            });
            proposals.push(p);
        }
        for i in 0..proposals.len() {
            for j in i + 1..proposals.len() {
                assert_ne!(proposals[i], proposals[j], "proposals {i} and {j}");
            }
        }
    }

    #[test]
    fn ignores_points_outside_the_space() {
        let tpe = Tpe::new(&space(), 2, TpeSettings::default());
        let mut obs = run(&tpe, 20);
        let mut odd = obs[0].params.clone();
        odd.insert("act".into(), Value::Str("swish".into()));
        obs.push(Observation {
            params: odd,
            loss: Some(-100.0),
            pruned: false,
        });
        let p = tpe.suggest(21, &obs);
        assert_ne!(p["act"], Value::Str("swish".into()));
    }

    #[test]
    fn pruned_points_rank_after_finished_ones() {
        let tpe = Tpe::new(&space(), 6, TpeSettings::default());
        let mut obs = run(&tpe, 20);
        let before = tpe.suggest(20, &obs);
        // A pruned point whose partial loss looks excellent must not become the model's
        // favourite: it ranks after every finished point, so it lands in the bad group.
        let mut lure = obs[0].params.clone();
        lure.insert("x".into(), Value::Float(-4.9));
        obs.push(Observation {
            params: lure.clone(),
            loss: Some(-1e9),
            pruned: true,
        });
        let after = tpe.suggest(20, &obs);
        let dist = |p: &Params| (p["x"].as_f64().unwrap() + 4.9).abs();
        assert!(
            dist(&after) >= dist(&before).min(1.0),
            "{after:?} moved towards the lure"
        );
    }

    #[test]
    fn scott_bandwidths_follow_the_spread_up_to_a_fifth() {
        // Ten points in two dimensions: n^(-1/6) = 0.681.
        let shrink = 10f64.powf(-1.0 / 6.0);
        let gathered = (0..10).map(|i| 0.9 + 0.01 * i as f64);
        let spread = (0..10).map(|i| i as f64 / 9.0);
        let variance = (0..10)
            .map(|i| (0.01 * (i as f64 - 4.5)).powi(2))
            .sum::<f64>()
            / 10.0;
        let narrow = scott_bandwidth(gathered, 10, 2);
        assert!(
            (narrow - variance.sqrt() * shrink).abs() < 1e-12,
            "{narrow}"
        );
        let wide = scott_bandwidth(spread, 10, 2);
        assert!((wide - 0.2 * shrink).abs() < 1e-12, "{wide}");
    }

    #[test]
    fn normal_cdf_is_accurate() {
        for (x, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_543),
            (-1.96, 0.024_997_895_148_220_435),
            (3.0, 0.998_650_101_968_369_9),
        ] {
            assert!((normal_cdf(x) - want).abs() < 1e-7, "Φ({x})");
        }
    }
}
