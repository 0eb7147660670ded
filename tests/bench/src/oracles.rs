//! Search benchmark: augur's oracles (through the library: the study file's parser,
//! `oracle_for`, trial records) against Optuna's TPE with default settings, run by the
//! same command on the same problems. Prints a table of simple regret (median and
//! quartiles over the seeds), the proposal time at 1,000 completed trials, and on the
//! last line the ratio of augur TPE's median regret to Optuna TPE's (geometric mean
//! over problems; ≤ 1.0 means augur does at least as well).
//!
//! Usage: oracle-bench [--trials N] [--seeds K] [--first-seed S] [--python PYTHON --optuna SCRIPT]

use augur_bench::{quartiles, Args};
use augur_model::{oracle_for, Params, Study, Trial, TrialState};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

struct Problem {
    name: &'static str,
    params: &'static str,
    f: fn(&Params) -> f64,
    f_star: f64,
}

fn get(p: &Params, k: &str) -> f64 {
    p.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
}

fn branin(p: &Params) -> f64 {
    let (x1, x2) = (get(p, "x1"), get(p, "x2"));
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

const H_ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const H_A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const H_P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];

fn hartmann6_at(x: &[f64; 6]) -> f64 {
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6).map(|j| H_A[i][j] * (x[j] - H_P[i][j]).powi(2)).sum();
            H_ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

fn hartmann6(p: &Params) -> f64 {
    let mut x = [0.0; 6];
    for (j, v) in x.iter_mut().enumerate() {
        *v = get(p, &format!("x{}", j + 1));
    }
    hartmann6_at(&x)
}

/// Rosenbrock in log-scaled coordinates: each parameter is searched log-uniformly in
/// [0.01, 100] and enters the function as its base-10 logarithm (optimum at 10).
fn rosenbrock4_log(p: &Params) -> f64 {
    let x: Vec<f64> = (1..=4).map(|j| get(p, &format!("p{j}")).log10()).collect();
    (0..3)
        .map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2))
        .sum()
}

const PROBLEMS: [Problem; 3] = [
    Problem {
        name: "branin",
        params: "x1={range=[-5.0,10.0]}\nx2={range=[0.0,15.0]}\n",
        f: branin,
        f_star: 0.397887,
    },
    Problem {
        name: "hartmann6",
        params: "x1={range=[0.0,1.0]}\nx2={range=[0.0,1.0]}\nx3={range=[0.0,1.0]}\nx4={range=[0.0,1.0]}\nx5={range=[0.0,1.0]}\nx6={range=[0.0,1.0]}\n",
        f: hartmann6,
        f_star: -3.32237,
    },
    Problem {
        name: "rosenbrock4-log",
        params: "p1={range=[0.01,100.0],scale='log'}\np2={range=[0.01,100.0],scale='log'}\np3={range=[0.01,100.0],scale='log'}\np4={range=[0.01,100.0],scale='log'}\n",
        f: rosenbrock4_log,
        f_star: 0.0,
    },
];

fn study(problem: &Problem, oracle: &str, seed: u64, trials: u64) -> Study {
    let text = format!(
        "name='{}'\noracle='{oracle}'\ntrials={trials}\nseed={seed}\nobjective={{metric='f'}}\n[params]\n{}[run]\nscript='true'\n",
        problem.name, problem.params
    );
    match Study::parse(&text, "bench.toml", Path::new(".")) {
        Ok(s) => s,
        Err(e) => panic!("bench study for {}: {e}", problem.name),
    }
}

fn finished(study: &Study, id: u64, params: Params, value: f64) -> Trial {
    let mut t = Trial::new(&study.name, id + 1, id, 0, params, 0);
    t.state = TrialState::Succeeded;
    t.metrics.insert("f".into(), value);
    t
}

/// Runs one study of `trials` sequential trials; returns the best value.
fn search(problem: &Problem, oracle: &str, seed: u64, trials: u64) -> f64 {
    let s = study(problem, oracle, seed, trials);
    let o = oracle_for(&s);
    let mut history: Vec<Trial> = Vec::new();
    let mut best = f64::INFINITY;
    for i in 0..trials {
        let refs: Vec<&Trial> = history.iter().collect();
        let Some(params) = o.propose(i, &refs) else {
            break;
        };
        let v = (problem.f)(&params);
        best = best.min(v);
        history.push(finished(&s, i, params, v));
    }
    best
}

/// Median milliseconds of one TPE proposal after `n` completed trials (random points).
fn proposal_ms(problem: &Problem, n: u64) -> f64 {
    let random = study(problem, "random", 1, n);
    let r = oracle_for(&random);
    let history: Vec<Trial> = (0..n)
        .filter_map(|i| {
            let p = r.propose(i, &[])?;
            let v = (problem.f)(&p);
            Some(finished(&random, i, p, v))
        })
        .collect();
    let refs: Vec<&Trial> = history.iter().collect();
    let tpe = oracle_for(&study(problem, "tpe", 1, n + 20));
    let mut times: Vec<f64> = (0..20)
        .map(|k| {
            let t0 = Instant::now();
            let p = tpe.propose(n + k, &refs);
            assert!(p.is_some());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args = Args::parse();
    let (trials, seeds, first) = (args.trials, args.seeds, args.first);

    for p in &PROBLEMS {
        let at_optimum = match p.name {
            "branin" => branin(&params(&[("x1", std::f64::consts::PI), ("x2", 2.275)])),
            "hartmann6" => hartmann6_at(&[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]),
            _ => rosenbrock4_log(&params(&[
                ("p1", 10.0),
                ("p2", 10.0),
                ("p3", 10.0),
                ("p4", 10.0),
            ])),
        };
        assert!(
            (at_optimum - p.f_star).abs() < 1e-4,
            "{}: f(x*) = {at_optimum}",
            p.name
        );
    }

    // regrets[(problem, method)] = one simple regret per seed.
    let mut regrets: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let t0 = Instant::now();
    for p in &PROBLEMS {
        for method in ["random", "tpe"] {
            for seed in first..first + seeds {
                let best = search(p, method, seed, trials);
                regrets
                    .entry((p.name.into(), format!("augur-{method}")))
                    .or_default()
                    .push(best - p.f_star);
            }
        }
    }
    let augur_s = t0.elapsed().as_secs_f64();
    let augur_ms = proposal_ms(&PROBLEMS[1], 1000);

    let mut optuna_ms = None;
    let mut optuna_s = None;
    if let Some((python, script)) = &args.optuna {
        let t0 = Instant::now();
        let out = Command::new(python)
            .arg(script)
            .args(args.passed_on())
            .output()
            .unwrap_or_else(|e| panic!("running {python} {script}: {e}"));
        optuna_s = Some(t0.elapsed().as_secs_f64());
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
            if let Some(ms) = v["proposal_ms"].as_f64() {
                optuna_ms = Some(ms);
                continue;
            }
            let (Some(problem), Some(best)) = (v["problem"].as_str(), v["best"].as_f64()) else {
                continue;
            };
            let Some(p) = PROBLEMS.iter().find(|p| p.name == problem) else {
                continue;
            };
            regrets
                .entry((problem.into(), "optuna-tpe".into()))
                .or_default()
                .push(best - p.f_star);
        }
    }

    println!("simple regret after {trials} trials, {seeds} seeds from {first} (smaller is better)");
    println!(
        "{:<16} {:<13} {:>12} {:>12} {:>12}",
        "problem", "method", "q1", "median", "q3"
    );
    for ((problem, method), rs) in &regrets {
        let (q1, med, q3) = quartiles(rs.clone());
        println!("{problem:<16} {method:<13} {q1:>12.5} {med:>12.5} {q3:>12.5}");
    }
    println!(
        "wall time: augur (random + tpe, all problems and seeds) {augur_s:.1} s{}",
        optuna_s.map_or(String::new(), |s| format!(
            ", optuna tpe (including interpreter start-up) {s:.1} s"
        ))
    );
    println!(
        "proposal time at 1000 completed trials (hartmann6, median of 20): augur tpe {augur_ms:.2} ms{} (target < 50 ms)",
        optuna_ms.map_or(String::new(), |ms| format!(", optuna tpe {ms:.2} ms"))
    );
    let ratios: Vec<f64> = PROBLEMS
        .iter()
        .filter_map(|p| {
            let med = |m: &str| {
                regrets
                    .get(&(p.name.to_string(), m.to_string()))
                    .map(|r| quartiles(r.clone()).1)
            };
            Some(med("augur-tpe")? / med("optuna-tpe")?)
        })
        .collect();
    if ratios.len() == PROBLEMS.len() {
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!(
            "ratio augur-tpe / optuna-tpe median regret, geometric mean over {} problems: {geo:.3} (per problem: {}; target <= 1.0)",
            ratios.len(),
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        println!("ratio augur-tpe / optuna-tpe: not measured (run with --python and --optuna)");
    }
}

fn params(kv: &[(&str, f64)]) -> Params {
    kv.iter()
        .map(|(k, v)| (k.to_string(), augur_model::Value::Float(*v)))
        .collect()
}
