//! The parameter space: what each parameter may be, how a grid enumerates it and how
//! random search samples it.

use crate::value::Value;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Largest grid a study may enumerate (points, before replicates).
pub const MAX_GRID_POINTS: u64 = 10_000_000;

/// One parameter's domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParamSpec {
    /// A float in `[lo, hi]`, log-uniform when `log`; a grid takes `steps` points.
    Float {
        lo: f64,
        hi: f64,
        log: bool,
        steps: Option<u32>,
    },
    /// An integer in `[lo, hi]`; a grid takes `steps` points, or every integer.
    Int {
        lo: i64,
        hi: i64,
        log: bool,
        steps: Option<u32>,
    },
    /// One of a list of values (numbers or strings).
    Choice { values: Vec<Value> },
}

impl ParamSpec {
    /// The values a grid enumerates, or why this parameter cannot be on a grid.
    pub fn grid_values(&self) -> Result<Vec<Value>, String> {
        match self {
            ParamSpec::Choice { values } => Ok(values.clone()),
            ParamSpec::Float { lo, hi, log, steps } => {
                let n = steps.ok_or("a float range needs `steps` on a grid")?;
                Ok(linspace(*lo, *hi, *log, n)
                    .into_iter()
                    .map(Value::Float)
                    .collect())
            }
            ParamSpec::Int { lo, hi, log, steps } => match steps {
                None => {
                    let count = (*hi as i128 - *lo as i128 + 1) as u64;
                    if count > MAX_GRID_POINTS {
                        return Err(format!("an integer range of {count} values is too large for a grid: give `steps`"));
                    }
                    Ok((*lo..=*hi).map(Value::Int).collect())
                }
                Some(n) => {
                    let mut out: Vec<Value> = Vec::new();
                    for x in linspace(*lo as f64, *hi as f64, *log, *n) {
                        let v = Value::Int(x.round() as i64);
                        if out.last() != Some(&v) {
                            out.push(v);
                        }
                    }
                    Ok(out)
                }
            },
        }
    }

    /// A uniform (or log-uniform) random value.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Value {
        match self {
            ParamSpec::Float { lo, hi, log, .. } => {
                let u: f64 = rng.gen();
                Value::Float(if *log {
                    (lo.ln() + u * (hi.ln() - lo.ln())).exp().clamp(*lo, *hi)
                } else {
                    // hi - lo overflows for bounds near ±f64::MAX: interpolate instead.
                    let x = lo + u * (hi - lo);
                    if x.is_finite() {
                        x
                    } else {
                        lo * (1.0 - u) + hi * u
                    }
                    .clamp(*lo, *hi)
                })
            }
            ParamSpec::Int { lo, hi, log, .. } => {
                if *log {
                    let (a, b) = ((*lo as f64 - 0.5).max(0.5).ln(), (*hi as f64 + 0.5).ln());
                    let x = (a + rng.gen::<f64>() * (b - a)).exp().round() as i64;
                    Value::Int(x.clamp(*lo, *hi))
                } else {
                    Value::Int(rng.gen_range(*lo..=*hi))
                }
            }
            ParamSpec::Choice { values } => values[rng.gen_range(0..values.len())].clone(),
        }
    }

    /// Whether `v` lies in this domain.
    pub fn contains(&self, v: &Value) -> bool {
        match (self, v) {
            (ParamSpec::Float { lo, hi, .. }, _) => {
                v.as_f64().is_some_and(|x| x >= *lo && x <= *hi)
            }
            (ParamSpec::Int { lo, hi, .. }, Value::Int(i)) => i >= lo && i <= hi,
            (ParamSpec::Int { .. }, _) => false,
            (ParamSpec::Choice { values }, _) => values.contains(v),
        }
    }
}

/// How one parameter maps to a coordinate.
#[derive(Clone, Debug)]
pub(crate) enum Axis {
    /// A unit coordinate: `u = (f(x) - a) / (b - a)` with `f` the identity or `ln`.
    Num {
        a: f64,
        b: f64,
        log: bool,
        int: Option<(i64, i64)>,
        lo: f64,
        hi: f64,
    },
    /// A category index.
    Cat { values: Vec<Value> },
}

impl Axis {
    pub(crate) fn of(spec: &ParamSpec) -> Axis {
        match spec {
            ParamSpec::Float { lo, hi, log, .. } => {
                let (a, b) = if *log { (lo.ln(), hi.ln()) } else { (*lo, *hi) };
                Axis::Num {
                    a,
                    b,
                    log: *log,
                    int: None,
                    lo: *lo,
                    hi: *hi,
                }
            }
            ParamSpec::Int { lo, hi, log, .. } => {
                let (l, h) = (*lo as f64 - 0.5, *hi as f64 + 0.5);
                let (a, b) = if *log {
                    (l.max(0.5).ln(), h.ln())
                } else {
                    (l, h)
                };
                Axis::Num {
                    a,
                    b,
                    log: *log,
                    int: Some((*lo, *hi)),
                    lo: *lo as f64,
                    hi: *hi as f64,
                }
            }
            ParamSpec::Choice { values } => Axis::Cat {
                values: values.clone(),
            },
        }
    }

    /// The coordinate of `v`, or `None` if `v` is not in the domain's type.
    pub(crate) fn encode(&self, v: &Value) -> Option<f64> {
        match self {
            Axis::Num { a, b, log, .. } => {
                let x = v.as_f64()?;
                if b <= a {
                    return Some(0.5);
                }
                let t = if *log {
                    x.max(f64::MIN_POSITIVE).ln()
                } else {
                    x
                };
                Some(((t - a) / (b - a)).clamp(0.0, 1.0))
            }
            Axis::Cat { values } => values.iter().position(|c| c == v).map(|i| i as f64),
        }
    }

    /// The value at coordinate `u` (rounded for integers, clamped to the bounds).
    pub(crate) fn decode(&self, u: f64) -> Value {
        match self {
            Axis::Num {
                a,
                b,
                log,
                int,
                lo,
                hi,
            } => {
                let t = a + u.clamp(0.0, 1.0) * (b - a);
                let x = if *log { t.exp() } else { t };
                match int {
                    Some((l, h)) => Value::Int((x.round() as i64).clamp(*l, *h)),
                    None => Value::Float(x.clamp(*lo, *hi)),
                }
            }
            Axis::Cat { values } => values[(u as usize).min(values.len() - 1)].clone(),
        }
    }

    pub(crate) fn categories(&self) -> Option<usize> {
        match self {
            Axis::Cat { values } => Some(values.len()),
            Axis::Num { .. } => None,
        }
    }
}

fn linspace(lo: f64, hi: f64, log: bool, n: u32) -> Vec<f64> {
    if n <= 1 {
        return vec![lo];
    }
    let (a, b) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
    (0..n)
        .map(|i| {
            let t = a + (b - a) * i as f64 / (n - 1) as f64;
            if i == 0 {
                lo
            } else if i == n - 1 {
                hi
            } else if log {
                // exp(ln(x)) is not always x: never step outside the bounds.
                t.exp().clamp(lo, hi)
            } else {
                t.clamp(lo, hi)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grids() {
        let f = ParamSpec::Float {
            lo: 0.0,
            hi: 1.0,
            log: false,
            steps: Some(3),
        };
        assert_eq!(
            f.grid_values().unwrap(),
            vec![Value::Float(0.0), Value::Float(0.5), Value::Float(1.0)]
        );
        let l = ParamSpec::Float {
            lo: 1e-3,
            hi: 1e-1,
            log: true,
            steps: Some(3),
        };
        let v: Vec<f64> = l
            .grid_values()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!((v[1] - 1e-2).abs() < 1e-12, "{v:?}");
        let i = ParamSpec::Int {
            lo: 1,
            hi: 3,
            log: false,
            steps: None,
        };
        assert_eq!(i.grid_values().unwrap().len(), 3);
        assert!(ParamSpec::Float {
            lo: 0.0,
            hi: 1.0,
            log: false,
            steps: None
        }
        .grid_values()
        .is_err());
    }

    #[test]
    fn samples_stay_in_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let specs = [
            ParamSpec::Float {
                lo: -5.0,
                hi: 5.0,
                log: false,
                steps: None,
            },
            ParamSpec::Float {
                lo: 1e-4,
                hi: 1e-1,
                log: true,
                steps: None,
            },
            ParamSpec::Int {
                lo: 1,
                hi: 1000,
                log: true,
                steps: None,
            },
            ParamSpec::Int {
                lo: -3,
                hi: 3,
                log: false,
                steps: None,
            },
        ];
        for s in &specs {
            for _ in 0..2000 {
                let v = s.sample(&mut rng);
                assert!(s.contains(&v), "{v:?} outside {s:?}");
            }
        }
    }
}
