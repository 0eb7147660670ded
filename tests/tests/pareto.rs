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
