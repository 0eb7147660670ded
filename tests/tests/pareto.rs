//! Several objectives and constraints, end to end on the embedded default: a study of
//! Schaffer's problem (f1 = x², f2 = (x - 2)², the Pareto set x in [0, 2]) with a
//! constraint, run by MOTPE, ranked into fronts that this test recomputes from the
//! trials' own metrics.

use augur_tests::{exits, ok, text, Sandbox, FAST};
use serde_json::Value;

/// Each point's front (1 first) under Deb's constrained domination, by brute force:
/// what `augur leaderboard` must say.
fn fronts(points: &[(Vec<f64>, f64)]) -> Vec<usize> {
    let beats = |a: &(Vec<f64>, f64), b: &(Vec<f64>, f64)| match (a.1 > 0.0, b.1 > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.1 < b.1,
        (false, false) => {
            a.0.iter().zip(&b.0).all(|(x, y)| x <= y) && a.0.iter().zip(&b.0).any(|(x, y)| x < y)
        }
    };
    let mut rank = vec![0; points.len()];
    let mut left: Vec<usize> = (0..points.len()).collect();
    let mut r = 0;
    while !left.is_empty() {
        r += 1;
        let front: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| !left.iter().any(|&j| beats(&points[j], &points[i])))
            .collect();
        for &i in &front {
            rank[i] = r;
        }
        left.retain(|i| !front.contains(i));
    }
    rank
}

#[test]
fn a_study_of_two_objectives_and_a_constraint_ranks_its_points_into_fronts() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"
name = "schaffer"
objectives = [{ metric = "f1" }, { metric = "f2", goal = "minimize" }]
constraints = ["f1 <= 9"]
oracle = "tpe"
trials = 16
parallel = 4
seed = 3
[params]
x = { range = [-5.0, 5.0] }
[run]
script = 'python3 -c "import os; x = float(os.environ[\"AUGUR_PARAM_X\"]); print(f\"METRICS: f1={x*x}, f2={(x-2)**2}\")"'
"#,
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let out = sb.augur(&args);
    ok(&out);
    // The text leaderboard shows fronts and both objectives.
    let table = text(&sb.augur(&["leaderboard", "schaffer"]).stdout);
    assert!(
        table.contains("FRONT") && table.contains("f1=") && table.contains("f2="),
        "{table}"
    );
    let lb: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["leaderboard", "schaffer", "--json"]).stdout)
            .expect("json");
    assert_eq!(lb.len(), 16, "every point ranked");
    let points: Vec<(Vec<f64>, f64)> = lb
        .iter()
        .map(|r| {
            let f1 = r["metrics"]["f1"].as_f64().expect("f1");
            let f2 = r["metrics"]["f2"].as_f64().expect("f2");
            (vec![f1, f2], (f1 - 9.0).max(0.0))
        })
        .collect();
    let expected = fronts(&points);
    let mut infeasible = 0;
    for ((r, want), (_, v)) in lb.iter().zip(&expected).zip(&points) {
        assert_eq!(r["pareto_rank"].as_u64(), Some(*want as u64), "{r}");
        assert_eq!(r["feasible"].as_bool(), Some(*v == 0.0), "{r}");
        infeasible += (*v > 0.0) as usize;
    }
    // Best first: fronts in order, every feasible point before any infeasible one.
    assert!(lb
        .windows(2)
        .all(|w| w[0]["pareto_rank"].as_u64() <= w[1]["pareto_rank"].as_u64()));
    let feasible_after = lb
        .iter()
        .skip_while(|r| r["feasible"] == true)
        .any(|r| r["feasible"] == true);
    assert!(!feasible_after, "{lb:?}");
    eprintln!("{} points, {infeasible} infeasible", lb.len());
    // CSV carries the same.
    let csv = text(&sb.augur(&["leaderboard", "schaffer", "--csv"]).stdout);
    let header = csv.lines().next().unwrap_or_default();
    assert!(header.contains("pareto_rank,feasible"), "{header}");
    // So does the JSONL export, trial by trial.
    let export = text(&sb.augur(&["export", "schaffer"]).stdout);
    let exported: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(exported.len(), 16);
    for r in &lb {
        let id = r["trials"][0].as_u64();
        let line = exported
            .iter()
            .find(|t| t["id"].as_u64() == id)
            .expect("exported");
        assert_eq!(line["pareto_rank"], r["pareto_rank"], "{line}");
        assert_eq!(line["feasible"], r["feasible"], "{line}");
    }
}

/// examples/dollars: accuracy against dollars on local machines its study prices.
/// Every trial costs its machine time at the study's price; the front trades one for
/// the other (dearer, more accurate); `--budget` names the best point within it.
#[test]
fn the_dollars_example_finds_the_accuracy_cost_front_and_the_best_within_a_budget() {
    let sb = Sandbox::new();
    let study = augur_tests::repo().join("examples/dollars/study.toml");
    let study = study.to_string_lossy();
    let mut args = vec!["run", &*study, "--trials", "16"];
    args.extend_from_slice(&FAST);
    ok(&sb.augur(&args));
    let lb: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["leaderboard", "dollars", "--json"]).stdout)
            .expect("json");
    assert_eq!(lb.len(), 16, "every point ranked");
    let cost = |r: &Value| r["metrics"]["cost_usd"].as_f64().expect("cost_usd");
    let accuracy = |r: &Value| r["metrics"]["accuracy"].as_f64().expect("accuracy");
    // Cost is machine time at $32.77 an hour, by the second (no EC2 minimum).
    let export = text(&sb.augur(&["export", "dollars"]).stdout);
    for line in export.lines() {
        let t: Value = serde_json::from_str(line).expect("a JSON line");
        let s = t["machine_seconds"].as_f64().expect("machine_seconds");
        let c = t["cost_usd"].as_f64().expect("cost_usd");
        assert!(s > 0.0 && s < 60.0, "{t}");
        assert!((c - s * 32.77 / 3600.0).abs() < 1e-4, "{t}");
        assert_eq!(t["billing"]["instance_type"], "local", "{t}");
    }
    // The front: cheaper points are less accurate, each is beaten on neither.
    let mut front: Vec<&Value> = lb.iter().filter(|r| r["pareto_rank"] == 1).collect();
    front.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
    assert!(front.len() >= 2, "{front:?}");
    assert!(
        front.windows(2).all(|w| accuracy(w[0]) < accuracy(w[1])),
        "{front:?}"
    );
    // Within a budget: the most accurate point that costs no more.
    let mut costs: Vec<f64> = lb.iter().map(cost).collect();
    costs.sort_by(f64::total_cmp);
    let budget = costs[costs.len() / 2];
    let within = lb
        .iter()
        .filter(|r| cost(r) <= budget)
        .max_by(|a, b| accuracy(a).total_cmp(&accuracy(b)))
        .expect("a point within");
    let arg = budget.to_string();
    let said = text(
        &sb.augur(&["leaderboard", "dollars", "--budget", &arg])
            .stdout,
    );
    let first = said.lines().next().unwrap_or_default();
    assert!(first.starts_with("best within $"), "{said}");
    assert!(
        first.contains(&format!("trial {},", within["trials"][0])),
        "{said} / {within}"
    );
    let shown: Vec<Value> = serde_json::from_slice(
        &sb.augur(&["leaderboard", "dollars", "--budget", &arg, "--json"])
            .stdout,
    )
    .expect("json");
    assert!(!shown.is_empty() && shown.len() < lb.len());
    assert!(shown.iter().all(|r| cost(r) <= budget));
    exits(
        &sb.augur(&["leaderboard", "dollars", "--budget", "lots"]),
        2,
    );
    eprintln!(
        "{} points, {} on the front, best within ${budget:.4}: {first}",
        lb.len(),
        front.len()
    );
}

#[test]
fn bad_objectives_exit_2_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name = 'bad'\nobjectives = [{ metric = 'a' }, { metric = 'a' }]\n[run]\nscript = 'true'\n",
    );
    let out = sb.augur(&["run", "s.toml"]);
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("objectives name `a` twice"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&sb.augur(&["studies"]).stdout)
        .lines()
        .all(|l| !l.contains("bad")));
}
