//! Pareto search benchmark: augur's MOTPE and NSGA-II (through the library: the study
//! file's parser, `oracle_for`, trial records) against Optuna's multi-objective
//! TPESampler (multivariate) and NSGAIISampler, run by the same command on the same
//! problems: ZDT1 and ZDT2 (30 variables), DTLZ2 (3 objectives, 12 variables) and
//! BNH (2 objectives, 2 constraints). Each search runs `--trials` trials for each of
//! `--seeds` seeds, one trial at a time and 8 at a time (a batch is proposed before
//! any of its results is known). Prints the hypervolume of each search's feasible
//! points against a fixed reference point (median and quartiles over the seeds), and
//! per problem and parallelism the ratio of augur's better median to Optuna's better
//! one (≥ 1.0: augur does at least as well).
//!
//! Usage: pareto-bench [--trials N] [--seeds K] [--first-seed S] [--python PYTHON --optuna SCRIPT]

use augur_bench::{quartiles, Args};
use augur_model::pareto::hypervolume;
use augur_model::{oracle_for, Params, Study, Trial, TrialState};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A problem: its parameters (study-file syntax), objectives and constraints (as
/// the study file writes them), its function (objective values, then the constraint
/// metrics), and the reference point its hypervolume is measured against.
struct Problem {
    name: &'static str,
    vars: usize,
    upper: fn(usize) -> f64,
    objectives: usize,
    constraints: &'static [&'static str],
    f: fn(&[f64]) -> Vec<f64>,
    reference: &'static [f64],
}

fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

fn zdt2(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).powi(2))]
}

fn dtlz2(x: &[f64]) -> Vec<f64> {
    let g: f64 = x[2..].iter().map(|v| (v - 0.5).powi(2)).sum();
    let h = std::f64::consts::FRAC_PI_2;
    vec![
        (1.0 + g) * (x[0] * h).cos() * (x[1] * h).cos(),
        (1.0 + g) * (x[0] * h).cos() * (x[1] * h).sin(),
        (1.0 + g) * (x[0] * h).sin(),
    ]
}

/// Binh and Korn: f1 = 4x² + 4y², f2 = (x-5)² + (y-5)², subject to
/// (x-5)² + y² <= 25 and (x-8)² + (y+3)² >= 7.7.
fn bnh(x: &[f64]) -> Vec<f64> {
    let (a, b) = (x[0], x[1]);
    vec![
        4.0 * a * a + 4.0 * b * b,
        (a - 5.0).powi(2) + (b - 5.0).powi(2),
        (a - 5.0).powi(2) + b * b,
        (a - 8.0).powi(2) + (b + 3.0).powi(2),
    ]
}

const PROBLEMS: [Problem; 4] = [
    Problem {
        name: "zdt1",
        vars: 30,
        upper: |_| 1.0,
        objectives: 2,
        constraints: &[],
        f: zdt1,
        reference: &[1.1, 11.0],
    },
    Problem {
        name: "zdt2",
        vars: 30,
        upper: |_| 1.0,
        objectives: 2,
        constraints: &[],
        f: zdt2,
        reference: &[1.1, 11.0],
    },
    Problem {
        name: "dtlz2",
        vars: 12,
        upper: |_| 1.0,
        objectives: 3,
        constraints: &[],
        f: dtlz2,
        reference: &[2.5, 2.5, 2.5],
    },
    Problem {
        name: "bnh",
        vars: 2,
        upper: |i| if i == 0 { 5.0 } else { 3.0 },
        objectives: 2,
        constraints: &["c1 <= 25", "c2 >= 7.7"],
        f: bnh,
        reference: &[140.0, 50.0],
    },
];

fn study(p: &Problem, oracle: &str, seed: u64, trials: u64, parallel: u32) -> Study {
    let objectives: Vec<String> = (1..=p.objectives)
        .map(|i| format!("{{ metric = 'f{i}' }}"))
        .collect();
    let constraints: Vec<String> = p.constraints.iter().map(|c| format!("'{c}'")).collect();
    let params: String = (0..p.vars)
        .map(|i| format!("x{i:02} = {{ range = [0.0, {:?}] }}\n", (p.upper)(i)))
        .collect();
    let text = format!(
        "name = '{}'\noracle = '{oracle}'\ntrials = {trials}\nparallel = {parallel}\nseed = {seed}\nobjectives = [{}]\nconstraints = [{}]\n[params]\n{params}[run]\nscript = 'true'\n",
        p.name,
        objectives.join(", "),
        constraints.join(", ")
    );
    Study::parse(&text, "bench.toml", Path::new("."))
        .unwrap_or_else(|e| panic!("bench study for {}: {e}", p.name))
}

fn metric_names(p: &Problem) -> Vec<String> {
    let mut names: Vec<String> = (1..=p.objectives).map(|i| format!("f{i}")).collect();
    names.extend((1..=p.constraints.len()).map(|i| format!("c{i}")));
    names
}

fn coords(p: &Problem, params: &Params) -> Vec<f64> {
    (0..p.vars)
        .map(|i| {
            params
                .get(&format!("x{i:02}"))
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Whether values (objectives, then constraint metrics) meet the problem's constraints.
fn feasible(p: &Problem, values: &[f64]) -> bool {
    p.constraints.iter().enumerate().all(|(i, c)| {
        let v = values[p.objectives + i];
        let c: augur_model::constraint::Constraint = c.parse().expect("a constraint");
        c.violation(Some(v)) == 0.0
    })
}

/// The hypervolume of one search's feasible points.
fn volume(p: &Problem, results: &[Vec<f64>]) -> f64 {
    let points: Vec<Vec<f64>> = results
        .iter()
        .filter(|v| feasible(p, v))
        .map(|v| v[..p.objectives].to_vec())
        .collect();
    hypervolume(&points, p.reference)
}

/// One search of `trials` trials, `parallel` proposed at a time.
fn search(p: &Problem, oracle: &str, seed: u64, trials: u64, parallel: u32) -> f64 {
    let s = study(p, oracle, seed, trials, parallel);
    let o = oracle_for(&s);
    let names = metric_names(p);
    let mut history: Vec<Trial> = Vec::new();
    let mut results = Vec::new();
    let mut point = 0;
    while point < trials {
        let batch = (parallel as u64).min(trials - point);
        let first = history.len();
        for _ in 0..batch {
            let refs: Vec<&Trial> = history.iter().collect();
            let params = o.propose(point, &refs).expect("a point");
            let mut t = Trial::new(&s.name, point + 1, point, 0, params, 0);
            t.state = TrialState::Running;
            history.push(t);
            point += 1;
        }
        for t in &mut history[first..] {
            let values = (p.f)(&coords(p, &t.params));
            for (k, v) in names.iter().zip(&values) {
                t.metrics.insert(k.clone(), *v);
            }
            t.state = TrialState::Succeeded;
            results.push(values);
        }
    }
    volume(p, &results)
}

/// Optuna's results: volume[(problem, parallel, method)] per seed, from the script's
/// JSON lines (each with the objective values of every trial).
fn optuna(
    python: &str,
    script: &str,
    args: &[String],
    into: &mut BTreeMap<(String, u32, String), Vec<f64>>,
) {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python} {script}: {e}"));
    if !out.status.success() {
        panic!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(problem), Some(method), Some(parallel)) = (
            v["problem"].as_str(),
            v["method"].as_str(),
            v["parallel"].as_u64(),
        ) else {
            continue;
        };
        let Some(p) = PROBLEMS.iter().find(|p| p.name == problem) else {
            continue;
        };
        let results: Vec<Vec<f64>> = v["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r.as_array())
                    .map(|r| r.iter().filter_map(|x| x.as_f64()).collect())
                    .collect()
            })
            .unwrap_or_default();
        into.entry((problem.into(), parallel as u32, method.into()))
            .or_default()
            .push(volume(p, &results));
    }
}

fn main() {
    let args = Args::parse();
    let (trials, seeds, first) = (args.trials, args.seeds, args.first);
    // The known fronts are where the formulas say (a check of the problems themselves).
    let mut x = vec![0.0; 30];
    x[0] = 0.25;
    let on_front = zdt1(&x);
    assert!((on_front[1] - 0.5).abs() < 1e-12, "zdt1 {on_front:?}");
    let d = dtlz2(&[0.3, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    assert!(
        (d.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12,
        "dtlz2 {d:?}"
    );

    let mut volumes: BTreeMap<(String, u32, String), Vec<f64>> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    for p in &PROBLEMS {
        for parallel in [1, 8] {
            for method in ["random", "tpe", "nsga2"] {
                for seed in first..first + seeds {
                    let v = search(p, method, seed, trials, parallel);
                    volumes
                        .entry((p.name.into(), parallel, format!("augur-{method}")))
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    let augur_s = t0.elapsed().as_secs_f64();
    let mut optuna_s = None;
    if let Some((python, script)) = &args.optuna {
        let t0 = std::time::Instant::now();
        optuna(python, script, &args.passed_on(), &mut volumes);
        optuna_s = Some(t0.elapsed().as_secs_f64());
    }
    report(&volumes, trials, seeds, first);
    println!(
        "time: augur {augur_s:.1} s{}",
        optuna_s.map_or(String::new(), |s| format!(", optuna {s:.1} s"))
    );
}

fn report(
    volumes: &BTreeMap<(String, u32, String), Vec<f64>>,
    trials: u64,
    seeds: u64,
    first: u64,
) {
    println!("hypervolume of the feasible points after {trials} trials, {seeds} seeds from {first} (larger is better)");
    println!(
        "{:<8} {:>3}  {:<14} {:>12} {:>12} {:>12}",
        "problem", "par", "method", "q1", "median", "q3"
    );
    for ((problem, parallel, method), v) in volumes {
        let (q1, m, q3) = quartiles(v.clone());
        println!("{problem:<8} {parallel:>3}  {method:<14} {q1:>12.4} {m:>12.4} {q3:>12.4}");
    }
    let median = |problem: &str, parallel: u32, method: &str| {
        volumes
            .get(&(problem.to_string(), parallel, method.to_string()))
            .map(|v| quartiles(v.clone()).1)
    };
    for p in &PROBLEMS {
        for parallel in [1, 8] {
            let best = |methods: &[&str]| {
                methods
                    .iter()
                    .filter_map(|m| median(p.name, parallel, m))
                    .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            };
            let ours = best(&["augur-tpe", "augur-nsga2"]);
            let theirs = best(&["optuna-tpe", "optuna-nsga2"]);
            if let (Some(a), Some(o)) = (ours, theirs) {
                println!(
                    "ratio {:<6} parallel {parallel}: augur's best median / optuna's best median = {:.3}",
                    p.name,
                    if o > 0.0 { a / o } else { f64::INFINITY }
                );
            }
        }
    }
}
