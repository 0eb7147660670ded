//! End-to-end tests: the real `augur` and `augur-agent` binaries on the embedded
//! default (local processes, SQLite in `.augur/`, log files).

use augur_tests::{exits, ok, signal, states, text, wait_exit, Sandbox, FAST};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn run(sb: &Sandbox, study: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", study];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    sb.augur(&args)
}

#[test]
fn a_study_completes_with_exactly_its_budget_and_correct_metrics() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"
name = "quad"
objective = { metric = "loss", goal = "minimize" }
oracle = "grid"
parallel = 3
[params]
x = { values = [0, 1, 2, 3, 4] }
act = { values = ["relu", "tanh"] }
[run]
script = 'echo "METRICS: loss=$(( (AUGUR_PARAM_X - 1) * (AUGUR_PARAM_X - 1) ))"; echo "act=$AUGUR_PARAM_ACT json=$AUGUR_PARAMS_JSON"'
"#,
    );
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    let trials = sb.trials("quad");
    assert_eq!(trials.len(), 10, "grid of 5 x 2 points");
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["exit_code"], 0);
        assert_eq!(t["attempt"], 1);
        assert_eq!(t["replicate"], 0);
        let x = t["params"]["x"]
            .as_i64()
            .expect("integer params stay integers");
        assert_eq!(
            t["metrics"]["loss"].as_f64(),
            Some(((x - 1) * (x - 1)) as f64),
            "{t}"
        );
        let status = t["status"].as_str().unwrap_or_default();
        assert!(
            status.starts_with(&format!(
                "act={} json={{",
                t["params"]["act"].as_str().unwrap_or("?")
            )),
            "{status}"
        );
    }
    let distinct: std::collections::BTreeSet<String> =
        trials.iter().map(|t| t["params"].to_string()).collect();
    assert_eq!(distinct.len(), 10, "every grid point once");
    // The leaderboard: best first, same objects.
    let lb = sb.augur(&["leaderboard", "quad", "--json", "-n", "3"]);
    ok(&lb);
    let lb: Vec<Value> = serde_json::from_slice(&lb.stdout).expect("json");
    assert_eq!(lb.len(), 3);
    assert_eq!(lb[0]["params"]["x"], 1);
    // -n is --limit; every option and argument of a command is described.
    let long: Vec<Value> = serde_json::from_slice(
        &sb.augur(&["leaderboard", "quad", "--json", "--limit", "2"])
            .stdout,
    )
    .expect("json");
    assert_eq!(long.len(), 2);
    for cmd in [
        "run",
        "submit",
        "tick",
        "validate",
        "studies",
        "trials",
        "show",
        "script",
        "leaderboard",
        "export",
        "completions",
        "logs",
        "serve",
        "stop",
        "init",
        "delete",
        "gc",
    ] {
        let help = text(&sb.augur(&[cmd, "-h"]).stdout);
        // An option or argument line is described on it, or on the next line.
        let lines: Vec<&str> = help.lines().collect();
        let undescribed: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let t = l.trim_start();
                l.starts_with("  ") && (t.starts_with('-') || t.starts_with('<'))
            })
            .filter(|(i, l)| {
                let same_line = l
                    .trim()
                    .split("  ")
                    .filter(|p| !p.trim().is_empty())
                    .count()
                    > 1;
                let next = lines.get(i + 1).map_or("", |n| n.trim_start());
                let next_line =
                    !next.is_empty() && !next.starts_with('-') && !next.starts_with('<');
                !same_line && !next_line
            })
            .map(|(_, l)| *l)
            .collect();
        assert!(
            undescribed.is_empty(),
            "{cmd} -h: undescribed {undescribed:?}\n{help}"
        );
    }
    assert_eq!(lb[0]["metrics"]["loss"], 0.0);
    for key in [
        "id",
        "state",
        "attempt",
        "params",
        "metrics",
        "exit_code",
        "replicate",
    ] {
        assert!(lb[0].get(key).is_some(), "leaderboard object lacks {key}");
    }
    // The human leaderboard is printed at the end of the run, on stdout.
    assert!(text(&out.stdout).contains("RANK"), "{}", text(&out.stdout));
    // Running a finished study again prints its leaderboard and runs nothing.
    let again = run(&sb, "s.toml", &[]);
    ok(&again);
    assert!(text(&again.stdout).contains("RANK"));
    assert_eq!(sb.trials("quad").len(), 10);
}

#[test]
fn metrics_merge_across_lines_and_bad_lines_are_warnings() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"
name = "m"
objective = { metric = "a" }
trials = 1
[run]
script = '''
echo "METRICS: a=1"
echo "METRICS: this is not metrics"
echo "METRICS: b=3, a = 2"
printf '10%%\r20%%\r'
echo done
'''
"#,
    );
    ok(&run(&sb, "s.toml", &[]));
    let t = sb.show("m", 1);
    assert_eq!(t["metrics"], json!({"a": 2.0, "b": 3.0}));
    assert_eq!(t["series"].as_array().map(Vec::len), Some(2), "{t}");
    assert_eq!(t["status"], "done");
    let log = sb.augur(&["logs", "m/1"]);
    ok(&log);
    let log = text(&log.stdout);
    assert!(log.contains("warning: ignored metrics line"), "{log}");
    assert!(
        log.contains("err + echo 'METRICS: a=1'"),
        "the set -x trace is kept: {log}"
    );
    assert!(
        log.lines()
            .next()
            .is_some_and(|l| l.contains("attempt 1 of trial 1")),
        "{log}"
    );
    assert!(
        !log.contains("out 10%") && !log.contains("out 20%"),
        "progress updates are not logged: {log}"
    );
}

#[test]
fn failures_keep_exit_code_and_log_tail_and_are_not_retried() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='f'\nobjective={metric='m'}\ntrials=2\nparallel=2\n[run]\nscript='echo working; echo \"it broke\" >&2; echo \"+ set -x trace\" >&2; exit 3'\n",
    );
    // No trial succeeded: exit 5, and each failure line carries its last stderr line.
    let out = run(&sb, "s.toml", &[]);
    exits(&out, 5);
    let err = text(&out.stderr);
    assert!(
        err.contains("failed (attempt 1): exit code 3; stderr: it broke"),
        "{err}"
    );
    assert!(err.contains("no trial succeeded (exit 5)"), "{err}");
    for t in sb.trials("f") {
        assert_eq!(t["state"], "failed");
        assert_eq!(t["exit_code"], 3);
        assert_eq!(t["attempt"], 1, "a failing script is not retried");
        assert_eq!(t["error"], "exit code 3; stderr: it broke");
    }
    let t = sb.show("f", 1);
    let tail: Vec<String> = serde_json::from_value(t["log_tail"].clone()).expect("tail");
    assert!(
        tail.contains(&"working".to_string()) && tail.contains(&"it broke".to_string()),
        "{tail:?}"
    );
    let human = sb.augur(&["show", "f/1"]);
    assert!(text(&human.stdout).contains("it broke"));
}

/// A trial's checkpoint directory outlives its attempts: the retry of an attempt
/// whose agent died resumes from the last step saved, not from step 0. `augur script`
/// prints what the trial ran and `--run` runs it again by hand; delete removes the
/// checkpoints.
#[test]
fn checkpoints_survive_a_lost_attempt_and_augur_script_reruns_a_trial() {
    let sb = Sandbox::new();
    let steps = sb.path().join("steps.txt");
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "ck"
objective = {{ metric = "m" }}
trials = 1
[run]
max_attempts = 2
env = {{ STEPS = "{}" }}
script = '''
ck="$AUGUR_CHECKPOINT_DIR/step"; s=$(cat "$ck" 2>/dev/null || echo 0)
while [ "$s" -lt 6 ]; do
  s=$((s + 1)); echo "$s" > "$ck"; echo "$AUGUR_ATTEMPT:$s" >> "$STEPS"
  if [ "$AUGUR_ATTEMPT" = 1 ] && [ "$s" = 3 ]; then kill -9 $PPID; exec sleep 300; fi
done
echo "METRICS: m=$s"
'''
"#,
            steps.display()
        ),
    );
    ok(&run(&sb, "s.toml", &[]));
    let t = sb.show("ck", 1);
    assert_eq!(
        (t["state"].as_str(), t["attempt"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{t}"
    );
    assert_eq!(
        t["checkpoint"]["files"], 1,
        "the record says what is kept: {t}"
    );
    let ran = std::fs::read_to_string(&steps).expect("steps");
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["1:1", "1:2", "1:3", "2:4", "2:5", "2:6"],
        "attempt 2 went on from the checkpoint of step 3"
    );
    // The script as it ran, and run again by hand: it finds the checkpoint at step 6.
    let printed = sb.augur(&["script", "ck/1"]);
    ok(&printed);
    let printed = text(&printed.stdout);
    for want in [
        "export AUGUR_ATTEMPT='2'",
        "export AUGUR_CHECKPOINT_DIR=",
        "exec bash -c 'set -ex; ",
    ] {
        assert!(printed.contains(want), "{want}: {printed}");
    }
    let dir = sb.path().join("again").display().to_string();
    let again = sb.augur(&["script", "ck/1", "--run", "--dir", &dir]);
    ok(&again);
    assert!(
        text(&again.stdout).contains("METRICS: m=6"),
        "{}",
        text(&again.stdout)
    );
    let lines = std::fs::read_to_string(&steps)
        .expect("steps")
        .lines()
        .count();
    assert_eq!(lines, 6, "nothing re-ran");
    ok(&sb.augur(&["delete", "ck", "--yes"]));
    assert!(!sb.path().join(".augur/checkpoints/ck").exists());
}

/// `run.max_machine_hours` on local machines (free, but their time counts): one
/// trial takes a bit over 2 s, the limit is 5 s, so the second starts (2 × ~2.1 s)
/// and a third would pass it. The study ends as budget spent, exit 0; `--dry-run
/// --like` foresees the same from the history, launching nothing.
#[test]
fn a_machine_hours_budget_stops_launching_and_the_study_ends_as_budget_spent() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='hours'\nobjective={metric='v'}\ntrials=6\nparallel=1\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='sleep 2; echo METRICS: v=$AUGUR_PARAM_X'\nmax_machine_hours=0.0013889\n",
    );
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("study `hours` budget spent: 2 succeeded"),
        "{err}"
    );
    assert!(
        err.contains("augur: budget spent: ") && err.contains("of run.max_machine_hours = 0.0014"),
        "{err}"
    );
    assert!(
        err.contains("machine-hours (local machines are free)"),
        "{err}"
    );
    assert_eq!(states(&sb.trials("hours")), vec!["succeeded"; 2]);
    let studies = text(&sb.augur(&["studies"]).stdout);
    assert!(studies.contains("budget spent"), "{studies}");
    // The same file again: nothing more starts.
    let again = run(&sb, "s.toml", &[]);
    ok(&again);
    assert_eq!(sb.trials("hours").len(), 2);
    let dry = sb.augur(&["run", "s.toml", "--dry-run", "--like", "hours"]);
    ok(&dry);
    let said = text(&dry.stdout);
    assert!(
        said.contains("the mean of 2 finished trial(s) of study `hours`")
            && said.contains("let about 2 of the 6 trial(s) start")
            && said.contains("nothing was launched or recorded"),
        "{said}"
    );
    let bad = sb.augur(&["run", "s.toml", "--dry-run", "--like", "nope"]);
    exits(&bad, 2);
    assert!(text(&bad.stderr).contains("--like: no study named `nope`"));
    assert_eq!(sb.trials("hours").len(), 2);
}

#[test]
fn a_script_that_never_reports_the_objective_fails_and_says_what_it_saw() {
    let sb = Sandbox::new();
    // A typo: the script reports val_loss, the study optimizes loss.
    let study = |required: &str| {
        format!("name='typo'\nobjective={{metric='loss'{required}}}\ntrials=2\n[run]\nscript='echo METRICS: step=1, val_loss=0.5'\n")
    };
    sb.write("s.toml", &study(""));
    let out = run(&sb, "s.toml", &[]);
    exits(&out, 5);
    let why = "exited 0 but never reported `loss` (saw: step, val_loss)";
    assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    for t in sb.trials("typo") {
        assert_eq!(t["state"], "failed", "{t}");
        assert_eq!(t["exit_code"], 0);
        assert_eq!(t["attempt"], 1, "a missing metric is not retried: {t}");
        assert!(
            t["error"].as_str().unwrap_or_default().starts_with(why),
            "{t}"
        );
    }
    let log = text(&sb.augur(&["logs", "typo/1"]).stdout);
    assert!(log.contains(why), "the log says it too: {log}");
    // objective.required = false keeps the old behaviour: success without a value.
    ok(&sb.augur(&["delete", "typo", "--yes"]));
    sb.write("s.toml", &study(", required=false"));
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    assert_eq!(states(&sb.trials("typo")), vec!["succeeded"; 2]);
}

/// Warm machines (`run.reuse`, "study" by default here): an agent that finished an
/// attempt takes the study's next trial, in a fresh working directory; one whose
/// script was ended by a signal is not reused; `reuse = "attempt"` gives each
/// attempt an agent of its own.
#[test]
fn warm_agents_take_the_next_trials_of_their_study() {
    let sb = Sandbox::new();
    let study = |name: &str, reuse: &str| {
        format!(
            "name = \"{name}\"\nobjective = {{ metric = \"v\" }}\noracle = \"grid\"\nparallel = 2\n[params]\nx = {{ values = [1, 2, 3, 4, 5, 6] }}\n[run]\nmax_attempts = 1\n{reuse}script = 'test -z \"$(ls -A)\" || exit 9; touch leftover; [ \"$AUGUR_PARAM_X\" != 3 ] || kill -SEGV $$; echo \"METRICS: v=$AUGUR_PARAM_X\"'\n"
        )
    };
    sb.write("warm.toml", &study("warm", ""));
    sb.write("cold.toml", &study("cold", "reuse = \"attempt\"\n"));
    let bad = sb.write("bad.toml", &study("bad", "reuse = \"always\"\n"));
    let out = sb.augur(&["run", &bad.display().to_string()]);
    augur_tests::exits(&out, 2);
    assert!(
        text(&out.stderr).contains("run.reuse: `always`"),
        "{}",
        text(&out.stderr)
    );
    for name in ["warm", "cold"] {
        let out = sb.augur(&["run", &format!("{name}.toml"), "--allow-failures"]);
        ok(&out);
    }
    // (x, machine, state, started)
    type Ran = (u64, String, String, String);
    let machines = |name: &str| -> Vec<Ran> {
        sb.trials(name)
            .iter()
            .map(|t| {
                let x = t["params"]["x"].as_u64().unwrap_or(0);
                let m = t["machine"].as_str().unwrap_or("").to_string();
                let state = t["state"].as_str().unwrap_or("").to_string();
                let started = t["started"].as_str().unwrap_or("").to_string();
                (x, m, state, started)
            })
            .collect()
    };
    let warm = machines("warm");
    // Each trial's directory was fresh (a leftover makes the script exit 9), and the
    // one killed by a signal failed.
    for (x, _, state, _) in &warm {
        let want = if *x == 3 { "failed" } else { "succeeded" };
        assert_eq!(state, want, "{warm:?}");
    }
    let distinct = |v: &[Ran]| {
        v.iter()
            .map(|r| r.1.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(distinct(&warm).len() < 6, "agents were reused: {warm:?}");
    let crashed = warm.iter().find(|r| r.0 == 3).expect("x=3");
    assert!(!crashed.3.is_empty(), "started is recorded: {warm:?}");
    let after = warm
        .iter()
        .filter(|r| r.1 == crashed.1 && r.3 > crashed.3)
        .count();
    assert_eq!(
        after, 0,
        "the agent of a crashed script takes no other: {warm:?}"
    );
    let cold = machines("cold");
    assert_eq!(distinct(&cold).len(), 6, "an agent per attempt: {cold:?}");
    // Each attempt records its turn on its machine: 1, 2, ... on each warm agent,
    // 1 on every cold one.
    let turns = |name: &str| {
        let mut by = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for t in sb.trials(name) {
            let m = t["machine"].as_str().unwrap_or("").to_string();
            by.entry(m)
                .or_default()
                .push(t["machine_turn"].as_u64().unwrap_or(0));
        }
        by.values_mut().for_each(|v| v.sort());
        by
    };
    for (m, turns) in turns("warm") {
        assert_eq!(turns, (1..=turns.len() as u64).collect::<Vec<_>>(), "{m}");
    }
    assert!(turns("cold").values().all(|t| t == &[1]));
}

/// A study keeps at most `parallel` warm agents: when a launch finds every agent of
/// the study busy, one of them has written its attempt's end (that freed the slot)
/// and is about to say idle, so the launch waits for it rather than starting a
/// third (which it did about once in 500 trials, and then kept all three), and an
/// idle agent is never taken for an orphan of its finished attempt.
#[test]
fn a_study_keeps_at_most_parallel_warm_agents() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name = \"many\"\nobjective = { metric = \"v\" }\ntrials = 300\nparallel = 2\n[run]\nscript = 'echo \"METRICS: v=1\"'\n",
    );
    ok(&sb.augur(&["run", "s.toml"]));
    let trials = sb.trials("many");
    assert_eq!(trials.len(), 300);
    let agents: std::collections::BTreeMap<String, usize> =
        trials.iter().fold(Default::default(), |mut by, t| {
            *by.entry(t["machine"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
            by
        });
    assert_eq!(agents.len(), 2, "{agents:?}");
}

/// An attempt handed to a warm agent that has just died is a write into a closed
/// pipe: the orchestrator must get EPIPE, not die of SIGPIPE (it did, once in a few
/// runs of the chaos row `b-warm-idle`, exit "signal: 13"). The script reads its
/// orchestrator's ignored signals (its agent's parent) from `/proc`.
#[test]
fn an_orchestrator_with_warm_agents_ignores_sigpipe() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"name = "pipe"
objective = { metric = "ignored" }
trials = 1
[run]
script = '''
o=$(cut -d' ' -f4 /proc/$PPID/stat)
mask=$(awk '/^SigIgn/ { print $2 }' /proc/$o/status)
echo "METRICS: ignored=$(( (0x$mask >> 12) & 1 ))"
'''
"#,
    );
    ok(&sb.augur(&["run", "s.toml"]));
    let trials = sb.trials("pipe");
    assert_eq!(trials[0]["metrics"]["ignored"], 1.0, "{trials:?}");
}

#[test]
fn a_killed_agent_makes_its_trial_lost_and_it_is_retried_to_completion() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "k"
objective = {{ metric = "m" }}
trials = 3
parallel = 3
[run]
max_attempts = 3
env = {{ ORPHANS = "{}" }}
script = '''
if [ "$AUGUR_ATTEMPT" = 1 ] && [ "$AUGUR_TRIAL" != 2 ]; then echo $$ >> "$ORPHANS"; kill -9 $PPID; sleep 300; fi
echo "METRICS: m=$AUGUR_ATTEMPT"
'''
"#,
            sb.path().join("orphans.txt").display()
        ),
    );
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    let trials = sb.trials("k");
    assert_eq!(states(&trials), vec!["succeeded"; 3]);
    assert_eq!(trials[0]["attempt"], 2);
    assert_eq!(
        trials[0]["metrics"]["m"], 2.0,
        "the retry sees AUGUR_ATTEMPT=2"
    );
    assert_eq!(trials[1]["attempt"], 1);
    assert_eq!(trials[2]["attempt"], 2);
    assert!(
        text(&out.stderr).contains("lost: its agent process is gone"),
        "{}",
        text(&out.stderr)
    );
    // The scripts of the killed agents do not run on unattended: their groups end.
    let orphans = std::fs::read_to_string(sb.path().join("orphans.txt")).expect("orphans");
    assert_eq!(orphans.lines().count(), 2, "{orphans}");
    for pid in orphans.lines() {
        augur_tests::wait_for(
            Duration::from_secs(10),
            &format!("orphaned script {pid} to end"),
            || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Gone, or a zombie waiting to be reaped by init.
                (stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")).then_some(())
            },
        );
    }
    // Both attempts' logs are kept and shown in order.
    let log = text(&sb.augur(&["logs", "k/1"]).stdout);
    let first = log.find("attempt 1 of trial 1").expect("attempt 1 log");
    let second = log.find("attempt 2 of trial 1").expect("attempt 2 log");
    assert!(first < second);
    // The trial keeps its earlier attempt: the lost one, on its own machine.
    let t1 = sb.json(&["show", "k/1", "--json"]);
    let earlier = t1["earlier_attempts"].as_array().expect("earlier attempts");
    assert_eq!(earlier.len(), 1, "{t1}");
    assert_eq!(earlier[0]["attempt"], 1);
    assert_eq!(earlier[0]["state"], "lost");
    assert!(earlier[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("agent process is gone")));
    assert!(earlier[0]["machine"].is_string() && earlier[0]["machine"] != t1["machine"]);
    let shown = text(&sb.augur(&["show", "k/1"]).stdout);
    assert!(
        shown.contains("attempts:") && shown.contains("lost"),
        "{shown}"
    );
    assert!(sb.json(&["show", "k/2", "--json"])["earlier_attempts"]
        .as_array()
        .is_some_and(Vec::is_empty));
}

#[test]
fn timeouts_and_keepalive_expiry_are_retried_up_to_max_attempts() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"
name = "t"
objective = { metric = "m" }
trials = 2
parallel = 2
[run]
max_attempts = 2
timeout = "1s"
grace = "200ms"
script = '''
if [ "$AUGUR_TRIAL" = 1 ]; then trap '' TERM; sleep 30; fi
echo "AUGUR: keepalive=300ms"
echo tick
sleep 30
'''
"#,
    );
    let start = std::time::Instant::now();
    exits(&run(&sb, "s.toml", &[]), 5);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "SIGKILL after the grace ends even a script ignoring SIGTERM"
    );
    let trials = sb.trials("t");
    for t in &trials {
        assert_eq!(t["state"], "failed", "{t}");
        assert_eq!(t["attempt"], 2, "retried once, then out of attempts: {t}");
        assert_eq!(t["runs"], 2);
    }
    assert!(
        trials[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after"),
        "{}",
        trials[0]
    );
    assert!(
        trials[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("keepalive expired"),
        "{}",
        trials[1]
    );
}

#[test]
fn kill_9_of_the_orchestrator_at_any_moment_then_resume_loses_and_duplicates_nothing() {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "r"
objective = {{ metric = "v" }}
oracle = "random"
trials = 16
parallel = 4
seed = 11
[params]
v = {{ range = [0.0, 1.0] }}
[run]
script = 'echo "$AUGUR_TRIAL" >> {runs}; sleep 0.3; echo "METRICS: v=$AUGUR_PARAM_V"'
"#,
            runs = runs.display()
        ),
    );
    // Kill at several moments: right away, during launches, mid-study.
    for delay_ms in [30u64, 150, 400, 700, 1000] {
        let mut args = vec!["run", "s.toml"];
        args.extend_from_slice(&FAST);
        let mut child = sb.spawn(&args);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    let trials = sb.trials("r");
    assert_eq!(trials.len(), 16, "the budget is respected exactly");
    assert_eq!(states(&trials), vec!["succeeded"; 16]);
    let script_runs = std::fs::read_to_string(&runs).expect("runs file");
    let mut per_trial: BTreeMap<String, usize> = BTreeMap::new();
    for l in script_runs.lines() {
        *per_trial.entry(l.to_string()).or_default() += 1;
    }
    assert_eq!(per_trial.len(), 16);
    assert!(
        per_trial.values().all(|n| *n == 1),
        "a trial ran twice: {per_trial:?}"
    );
    for t in &trials {
        assert_eq!(t["runs"], 1, "{t}");
    }
    // The same seed gives the same points whatever the interruptions.
    let sb2 = Sandbox::new();
    sb2.write(
        "s.toml",
        &std::fs::read_to_string(sb.path().join("s.toml"))
            .expect("read")
            .replace(&runs.display().to_string(), "/dev/null"),
    );
    ok(&run(&sb2, "s.toml", &[]));
    let p1: Vec<Value> = trials.iter().map(|t| t["params"].clone()).collect();
    let p2: Vec<Value> = sb2
        .trials("r")
        .iter()
        .map(|t| t["params"].clone())
        .collect();
    assert_eq!(p1, p2);
}

#[test]
fn ctrl_c_once_drains_twice_cancels_and_both_resume() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        // Long enough that both trials are seen running together even when the
        // machine is busy (the suite runs its tests in parallel on 2 cores).
        "name='c'\nobjective={metric='m'}\ntrials=6\nparallel=2\n[run]\nscript='sleep 3; echo METRICS: m=1'\n",
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    // Once: no new launches; the two running trials finish; exit 130.
    let mut child = sb.spawn(&args);
    sb.wait_running("c", 2, LIMIT);
    signal(child.id(), libc::SIGINT);
    let status = wait_exit(&mut child, LIMIT);
    assert_eq!(status.code(), Some(130));
    let after = sb.trials("c");
    assert_eq!(
        after.iter().filter(|t| t["state"] == "succeeded").count(),
        2,
        "{:?}",
        states(&after)
    );
    assert!(after.iter().all(|t| t["state"] != "running"));
    // Twice: the running trials are cancelled; exit 130.
    let mut child = sb.spawn(&args);
    sb.wait_running("c", 2, LIMIT);
    signal(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    signal(child.id(), libc::SIGINT);
    let status = wait_exit(&mut child, LIMIT);
    assert_eq!(status.code(), Some(130));
    let after = sb.trials("c");
    assert!(
        after.iter().any(|t| t["state"] == "cancelled"),
        "{:?}",
        states(&after)
    );
    // Resume: everything completes, cancelled trials included.
    ok(&run(&sb, "s.toml", &[]));
    assert_eq!(states(&sb.trials("c")), vec!["succeeded"; 6]);
}

#[test]
fn augur_stop_cancels_a_running_study_and_run_resumes_it() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='st'\nobjective={metric='m'}\ntrials=4\nparallel=2\n[run]\nscript='sleep 20; echo METRICS: m=1'\ngrace='200ms'\n",
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    sb.wait_running("st", 2, LIMIT);
    let stop = sb.augur(&["stop", "st"]);
    ok(&stop);
    assert_eq!(wait_exit(&mut child, LIMIT).code(), Some(130));
    let trials = sb.trials("st");
    assert!(
        trials.iter().all(|t| t["state"] == "cancelled"),
        "{:?}",
        states(&trials)
    );
    let studies: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["studies", "--json"]).stdout).expect("json");
    assert_eq!(studies[0]["state"], "stopped");
    assert_eq!(
        studies[0]["finished"], 0,
        "cancelled trials run again: not finished"
    );
    // The attempt's log says what happened to it: cancelled, not failed.
    let log = augur_tests::wait_for(LIMIT, "the agent's last line", || {
        let log = text(&sb.augur(&["logs", "st/1"]).stdout);
        log.contains("this attempt ends without a final write")
            .then_some(log)
    });
    assert!(
        log.contains("the trial is cancelled: this attempt ends"),
        "{log}"
    );
    assert!(!log.contains("failed"), "{log}");
    // Resume with a quicker script.
    sb.write(
        "s.toml",
        "name='st'\nobjective={metric='m'}\ntrials=4\nparallel=2\n[run]\nscript='echo METRICS: m=1'\n",
    );
    ok(&run(&sb, "s.toml", &[]));
    assert_eq!(states(&sb.trials("st")), vec!["succeeded"; 4]);
}

#[test]
fn retry_failed_reruns_the_failed_pairs_and_nothing_else() {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    let fixed = sb.path().join("fixed");
    sb.write(
        "s.toml",
        &format!(
            "name='rf'\nobjective={{metric='m'}}\noracle='grid'\nreplicates=2\n[params]\nx={{values=[1,2,3]}}\n[run]\nscript='echo $AUGUR_TRIAL >> {}; if [ $AUGUR_PARAM_X = 2 ] && [ $AUGUR_REPLICATE = 1 ] && [ ! -f {} ]; then exit 1; fi; echo METRICS: m=$AUGUR_PARAM_X'\n",
            runs.display(),
            fixed.display()
        ),
    );
    // One pair failed: exit 4, or 0 when failures are allowed.
    exits(&run(&sb, "s.toml", &[]), 4);
    let before = sb.trials("rf");
    assert_eq!(before.len(), 6);
    let failed: Vec<u64> = before
        .iter()
        .filter(|t| t["state"] == "failed")
        .filter_map(|t| t["id"].as_u64())
        .collect();
    assert_eq!(failed.len(), 1);
    // The leaderboard shows which replicates of the point succeeded.
    let lb: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["leaderboard", "rf", "--json"]).stdout).expect("json");
    let two = lb
        .iter()
        .find(|r| r["params"]["x"] == 2)
        .expect("x=2 ranked");
    assert_eq!(two["replicates"], json!([0]));
    // A plain re-run does nothing, and says nothing of what was already final;
    // --retry-failed re-runs just that pair.
    let again = run(&sb, "s.toml", &["--allow-failures"]);
    ok(&again);
    let said = text(&again.stderr);
    assert!(
        said.contains("resuming study `rf`: 6 of 6 trial(s) already final"),
        "{said}"
    );
    assert!(
        !said.contains("succeeded (") && !said.contains("failed (attempt"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&runs)
            .expect("runs")
            .lines()
            .count(),
        6
    );
    std::fs::write(&fixed, "").expect("touch");
    ok(&run(&sb, "s.toml", &["--retry-failed"]));
    let lines: Vec<String> = std::fs::read_to_string(&runs)
        .expect("runs")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6], failed[0].to_string());
    assert_eq!(states(&sb.trials("rf")), vec!["succeeded"; 6]);
}

#[test]
fn a_changed_study_is_refused_with_advice_and_nothing_is_lost() {
    let sb = Sandbox::new();
    sb.write("s.toml", "name='ch'\nobjective={metric='m'}\ntrials=2\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='echo METRICS: m=1'\n");
    ok(&run(&sb, "s.toml", &[]));
    sb.write("s.toml", "name='ch'\nobjective={metric='m'}\ntrials=2\n[params]\nx={range=[0.0,2.0]}\n[run]\nscript='echo METRICS: m=1'\n");
    // `validate` says so too, before `run` is tried.
    for cmd in ["validate", "run"] {
        let out = sb.augur(&[cmd, "s.toml"]);
        exits(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains("different parameters") && err.contains("augur delete ch"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(
        states(&sb.trials("ch")),
        vec!["succeeded"; 2],
        "the recorded study is intact"
    );
    // A larger budget is compatible: the study continues.
    sb.write("s.toml", "name='ch'\nobjective={metric='m'}\ntrials=3\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='echo METRICS: m=1'\n");
    let out = sb.augur(&["validate", "s.toml"]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("continues the recorded study (done)"),
        "{}",
        text(&out.stdout)
    );
    ok(&run(&sb, "s.toml", &[]));
    assert_eq!(sb.trials("ch").len(), 3);
    // Without a terminal to ask on, delete wants --yes, and keeps everything.
    let out = sb.augur(&["delete", "ch"]);
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(sb.trials("ch").len(), 3);
    ok(&sb.augur(&["delete", "ch", "--yes"]));
    assert_eq!(sb.augur(&["trials", "ch"]).status.code(), Some(2));
}

#[test]
fn datasets_run_once_before_their_trials_and_failures_name_them() {
    let sb = Sandbox::new();
    let made = sb.path().join("made.txt");
    let ok_flag = sb.path().join("ok");
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "ds"
objective = {{ metric = "n" }}
oracle = "grid"
parallel = 3
[params]
size = {{ values = [2, 3] }}
k = {{ values = [1, 2, 3] }}
[[datasets]]
name = "data-{{size}}"
script = 'echo $AUGUR_DATASET >> {made}; if [ "$AUGUR_PARAM_SIZE" = 3 ] && [ ! -f {ok} ]; then exit 1; fi; seq "$AUGUR_PARAM_SIZE" > rows'
[run]
max_attempts = 1
script = 'd=AUGUR_DATASET_DIR_DATA_$AUGUR_PARAM_SIZE; echo "METRICS: n=$(wc -l < ${{!d}}/rows)"'
"#,
            made = made.display(),
            ok = ok_flag.display()
        ),
    );
    exits(&run(&sb, "s.toml", &[]), 4);
    let trials = sb.trials("ds");
    let sets: Vec<&Value> = trials
        .iter()
        .filter(|t| t.get("dataset").is_some())
        .collect();
    assert_eq!(sets.len(), 2);
    let real: Vec<&Value> = trials
        .iter()
        .filter(|t| t.get("dataset").is_none())
        .collect();
    assert_eq!(real.len(), 6);
    for t in &real {
        if t["params"]["size"] == 2 {
            assert_eq!(t["state"], "succeeded");
            assert_eq!(t["metrics"]["n"], 2.0);
        } else {
            assert_eq!(t["state"], "failed");
            assert!(
                t["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("dataset failed: data-3"),
                "{t}"
            );
        }
    }
    let mut made_once: Vec<String> = std::fs::read_to_string(&made)
        .expect("made")
        .lines()
        .map(String::from)
        .collect();
    made_once.sort();
    assert_eq!(
        made_once,
        vec!["data-2", "data-3"],
        "each dataset runs once"
    );
    // A re-run retries the failed dataset and its trials.
    std::fs::write(&ok_flag, "").expect("touch");
    ok(&run(&sb, "s.toml", &[]));
    let trials = sb.trials("ds");
    assert!(
        trials.iter().all(|t| t["state"] == "succeeded"),
        "{:?}",
        states(&trials)
    );
    assert_eq!(
        std::fs::read_to_string(&made)
            .expect("made")
            .lines()
            .count(),
        3
    );
}

#[test]
fn parameter_values_reach_the_script_only_as_data() {
    let sb = Sandbox::new();
    // A value that would delete this file if it were ever run as shell.
    let victim = sb.write("victim.txt", "still here");
    sb.write(
        "s.toml",
        &format!(
            r#"
name = "inj"
objective = {{ metric = "m" }}
oracle = "grid"
[params]
v = {{ values = ["$(touch pwned)", "a'b\"c;touch pwned2", "`touch pwned3`", "x\n$(touch pwned4)\n", "$(rm -f {victim})", "; touch pwned5 #"] }}
[run]
script = 'echo METRICS: m=1; printf "%s" "$AUGUR_PARAM_V" | od -An -tx1 | tr -d " \n"; echo'
"#,
            victim = victim.display()
        ),
    );
    ok(&run(&sb, "s.toml", &[]));
    let trials = sb.trials("inj");
    assert_eq!(trials.len(), 6);
    for t in trials {
        assert_eq!(t["state"], "succeeded");
        let hex: String = t["params"]["v"]
            .as_str()
            .unwrap_or_default()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(t["status"], json!(hex), "the value arrives verbatim: {t}");
    }
    assert!(victim.exists(), "a value ran as shell");
    for f in ["pwned", "pwned2", "pwned3", "pwned4", "pwned5"] {
        assert!(!sb.path().join(f).exists() && !sb.path().join(".augur/work/inj").join(f).exists());
    }
    let found = std::process::Command::new("find")
        .arg(sb.path())
        .args(["-name", "pwned*"])
        .output()
        .expect("find");
    assert!(found.stdout.is_empty(), "{}", text(&found.stdout));
}

#[test]
fn logs_follow_since_and_filter() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        // Running for 2.5 s: long enough to be seen running by `augur trials` polls
        // on a loaded machine (1 s was missed once in CI).
        "name='lg'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='for i in 1 2 3 4 5; do echo line $i; sleep 0.5; done; echo METRICS: m=1'\n",
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    sb.wait_running("lg", 1, LIMIT);
    let follow = sb.augur(&["logs", "lg/1", "--follow"]);
    ok(&follow);
    let out = text(&follow.stdout);
    for i in 1..=5 {
        assert!(out.contains(&format!("out line {i}")), "{out}");
    }
    assert!(
        out.contains("succeeded"),
        "--follow ends after the final line: {out}"
    );
    assert!(wait_exit(&mut child, LIMIT).success());
    let filtered = text(&sb.augur(&["logs", "lg/1", "--filter", "line 3"]).stdout);
    assert_eq!(
        filtered.lines().filter(|l| l.contains(" out ")).count(),
        1,
        "{filtered}"
    );
    let none = text(
        &sb.augur(&["logs", "lg/1", "--since", "2099-01-01T00:00"])
            .stdout,
    );
    assert!(none.is_empty(), "{none}");
    let recent = text(&sb.augur(&["logs", "lg/1", "--since", "10m"]).stdout);
    assert!(recent.contains("line 5"));
    let bad = sb.augur(&["logs", "lg/1", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(sb.augur(&["logs", "lg/x"]).status.code(), Some(2));
    assert_eq!(sb.augur(&["logs", "lg/9"]).status.code(), Some(2));
    assert_eq!(sb.augur(&["logs", "nope/1"]).status.code(), Some(2));
    assert_eq!(sb.augur(&["logs", "nope"]).status.code(), Some(2));
    let unbalanced = sb.augur(&["logs", "lg", "--filter", "\"line"]);
    assert_eq!(unbalanced.status.code(), Some(2));
    assert!(text(&unbalanced.stderr).contains("unbalanced quote"));
}

/// `augur logs STUDY`: every trial's lines interleaved by time, each with its stream;
/// followed until the study is done; CloudWatch-style filters; three formats.
#[test]
fn study_logs_interleave_trials_follow_filter_and_format() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='many'\nobjective={metric='m'}\noracle='grid'\nparallel=3\n[params]\nx={values=[1,2,3]}\n[run]\nscript='for i in 1 2 3; do echo \"tick $i of x$AUGUR_PARAM_X\"; sleep 0.2; done; echo METRICS: m=$AUGUR_PARAM_X'\n",
    );
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    sb.wait_running("many", 1, LIMIT);
    let follow = sb.augur(&["logs", "many", "--follow"]);
    ok(&follow);
    assert!(wait_exit(&mut child, LIMIT).success());
    let out = text(&follow.stdout);
    // Every trial's every line, each prefixed with its stream, in time order.
    for x in 1..=3 {
        for i in 1..=3 {
            let want = format!(" {x}/1 out tick {i} of x{x}");
            assert_eq!(out.matches(&want).count(), 1, "{want}: {out}");
        }
    }
    let firsts: Vec<usize> = (1..=3)
        .map(|x| out.find(&format!("tick 1 of x{x}")).unwrap_or(usize::MAX))
        .collect();
    let lasts: Vec<usize> = (1..=3)
        .map(|x| out.find(&format!("tick 3 of x{x}")).unwrap_or(0))
        .collect();
    assert!(
        firsts.iter().all(|f| lasts.iter().all(|l| f < l)),
        "parallel trials interleave: {out}"
    );
    // The same lines, read again without --follow, all in time order (a follow prints
    // each batch in order as it arrives).
    let again = text(&sb.augur(&["logs", "many"]).stdout);
    let mut a: Vec<&str> = again.lines().collect();
    let mut b: Vec<&str> = out.lines().collect();
    let times: Vec<&str> = a.iter().filter_map(|l| l.split(' ').next()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "interleaved by time: {again}");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Filters: terms, quoted phrases, exclusions, alternatives.
    let lines = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["logs"];
        a.extend_from_slice(args);
        text(&sb.augur(&a).stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    let f = lines(&["many", "--filter", "tick x2 -\"tick 1\""]);
    assert_eq!(
        f.len(),
        4,
        "tick 2 and 3 of x2, as output and as set -x echo: {f:?}"
    );
    assert!(f.iter().all(|l| l.contains("x2") && !l.contains("tick 1")));
    let f = lines(&["many", "--filter", "\"tick 3 of\" -err ?x1 ?x3"]);
    assert_eq!(f.len(), 2, "{f:?}");
    // Formats.
    let short = lines(&[
        "many",
        "--format",
        "short",
        "--filter",
        "\"tick 2 of x3\" -err",
    ]);
    assert_eq!(short.len(), 1, "{short:?}");
    assert!(short[0].ends_with(" [3] tick 2 of x3"), "{short:?}");
    assert_eq!(short[0].len(), "12:00:00.000 [3] tick 2 of x3".len());
    let json = lines(&["many", "--format", "json", "--filter", "METRICS: -err"]);
    assert_eq!(json.len(), 3, "{json:?}");
    for l in &json {
        let v: Value = serde_json::from_str(l).expect("one object per line");
        assert_eq!(v["source"], "out");
        assert!(v["text"].as_str().unwrap_or("").starts_with("METRICS: m="));
        assert!(v["trial"].as_u64().is_some() && v["t_ms"].as_i64().is_some());
    }
    // One trial keeps the log files' own format.
    let one = text(
        &sb.augur(&["logs", "many/2", "--filter", "\"tick 1 of\" -err"])
            .stdout,
    );
    let file = std::fs::read_to_string(sb.path().join(".augur/logs/many/2.1.log")).expect("log");
    assert!(file.contains(one.trim()), "{one}");
}

#[test]
fn replicates_run_each_point_n_times_and_rank_by_the_mean() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='rep'\nobjective={metric='m',goal='maximize'}\noracle='grid'\nreplicates=3\nparallel=3\n[params]\nx={values=[10,20]}\n[run]\nscript='echo METRICS: m=$((AUGUR_PARAM_X + AUGUR_REPLICATE))'\n",
    );
    ok(&run(&sb, "s.toml", &[]));
    let trials = sb.trials("rep");
    assert_eq!(trials.len(), 6);
    let reps: Vec<u64> = trials
        .iter()
        .filter_map(|t| t["replicate"].as_u64())
        .collect();
    assert_eq!(reps, vec![0, 1, 2, 0, 1, 2]);
    let lb: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["leaderboard", "rep", "--json"]).stdout).expect("json");
    assert_eq!(lb[0]["params"]["x"], 20);
    assert_eq!(lb[0]["metrics"]["m"], 21.0, "mean of 20, 21, 22");
    assert_eq!(lb[0]["replicates"], json!([0, 1, 2]));
}

/// Every kind of bad input exits 2 with one message naming the problem, before
/// anything is launched or written.
#[test]
fn malformed_study_files_exit_2_naming_the_problem_and_write_nothing() {
    let base = "name='b'\nobjective={metric='m'}\ntrials=2\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", format!("{base}colour='red'\n[run]\nscript='true'\n"), "colour"),
        ("misspelt key", "name='b'\nobjective={metric='m'}\ntirals=2\n[run]\nscript='true'\n".into(), "unknown field `tirals` (did you mean `trials`?)"),
        ("misspelt run key", format!("{base}[run]\nscirpt='true'\n"), "(did you mean `script`?)"),
        ("objective as a name", "name='b'\nobjective='val_loss'\ntrials=2\n[run]\nscript='true'\n".into(), "`objective`: invalid type: string \"val_loss\", expected a table"),
        ("run as a value", format!("{base}run='train.py'\n"), "expected a table"),
        ("toml syntax", format!("{base}[run\nscript='true'\n"), ":4:"),
        ("wrong type", format!("{base}parallel='four'\n[run]\nscript='true'\n"), "parallel"),
        ("inverted range", format!("{base}[params]\nx={{range=[2.0,1.0]}}\n[run]\nscript='true'\n"), "inverted"),
        ("empty range", format!("{base}[params]\nx={{range=[1,1]}}\n[run]\nscript='true'\n"), "empty"),
        ("log scale <= 0", format!("{base}[params]\nx={{range=[0.0,1.0],scale='log'}}\n[run]\nscript='true'\n"), "log scale"),
        ("unknown oracle", format!("{base}oracle='magic'\n[run]\nscript='true'\n"), "unknown oracle"),
        ("parallel 0", format!("{base}parallel=0\n[run]\nscript='true'\n"), "parallel must be at least 1"),
        ("negative parallel", format!("{base}parallel=-2\n[run]\nscript='true'\n"), "parallel must be at least 1"),
        ("budget 0", "name='b'\nobjective={metric='m'}\ntrials=0\n[run]\nscript='true'\n".into(), "trials must be at least 1"),
        ("duplicate params", format!("{base}[params]\nlr={{range=[0,1]}}\nLR={{range=[0,1]}}\n[run]\nscript='true'\n"), "duplicate parameter"),
        ("script missing", format!("{base}[run]\ntimeout='1m'\n"), "script"),
        ("script empty", format!("{base}[run]\nscript='  '\n"), "run.script is empty"),
        ("missing file", format!("{base}[run]\nscript='true'\nfiles=['train.py']\n"), "train.py"),
        ("bad timeout", format!("{base}[run]\nscript='true'\ntimeout='forever'\n"), "run.timeout"),
        ("bad study name", "name='a/b'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\n".into(), "not a valid study name"),
        ("bad goal", "name='b'\nobjective={metric='m',goal='best'}\ntrials=1\n[run]\nscript='true'\n".into(), "objective.goal"),
        ("random without budget", "name='b'\nobjective={metric='m'}\n[run]\nscript='true'\n".into(), "budget"),
        ("grid range without steps", "name='b'\nobjective={metric='m'}\noracle='grid'\n[params]\nx={range=[0.0,1.0]}\n[run]\nscript='true'\n".into(), "steps"),
        ("grid too large", "name='b'\nobjective={metric='m'}\noracle='grid'\n[params]\nx={range=[0,100000]}\ny={range=[0,100000]}\n[run]\nscript='true'\n".into(), "s.toml:3: grid oracle: the parameters make 10000200001 points"),
        ("name missing", "objective={metric='m'}\ntrials=3\n[run]\nscript='true'\n".into(), "s.toml:1: missing field `name`"),
        ("mixed values", format!("{base}[params]\nx={{values=[1,'a']}}\n[run]\nscript='true'\n"), "mixes"),
        ("unknown aws key", format!("{base}[run]\nscript='true'\n[aws]\nami='x'\n"), "ami"),
        ("max_attempts 0", format!("{base}[run]\nscript='true'\nmax_attempts=0\n"), "max_attempts"),
        ("files ..", format!("{base}[run]\nscript='true'\nfiles=['..']\n"), "names no file"),
        ("files /", format!("{base}[run]\nscript='true'\nfiles=['/']\n"), "names no file"),
        ("negative cost limit", format!("{base}[run]\nscript='true'\nmax_cost_usd=-5\n"), "s.toml:6: run.max_cost_usd must be more than 0, got -5"),
        ("hours as text", format!("{base}[run]\nscript='true'\nmax_machine_hours='ten'\n"), "s.toml:6: run.max_machine_hours must be a number, got string"),
    ];
    assert!(cases.len() >= 15);
    for (what, body, needle) in cases {
        let sb = Sandbox::new();
        sb.write("s.toml", &body);
        for cmd in ["validate", "run"] {
            let out = sb.augur(&[cmd, "s.toml"]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} ({cmd}): {err}");
            assert!(
                err.contains(needle),
                "{what} ({cmd}): `{err}` should mention `{needle}`"
            );
            assert_eq!(err.trim().lines().count(), 1, "{what}: one message: {err}");
            assert!(err.contains("s.toml"), "{what}: names the file: {err}");
            let line = err
                .split("s.toml:")
                .nth(1)
                .and_then(|r| r.split(':').next());
            assert!(
                line.is_some_and(|l| l.parse::<usize>().is_ok()),
                "{what}: names the line: {err}"
            );
            assert!(
                !err.contains("struct ") && !err.contains("Raw"),
                "{what}: no type of augur's in the message: {err}"
            );
        }
        assert!(
            !sb.path().join(".augur").exists(),
            "{what}: nothing may be written"
        );
    }
    // A missing file, and bad flags, too.
    let sb = Sandbox::new();
    let out = sb.augur(&["run", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.toml"));
    sb.write("s.toml", &format!("{base}[run]\nscript='true'\n"));
    assert_eq!(
        sb.augur(&["run", "s.toml", "--parallel", "0"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        sb.augur(&["run", "s.toml", "--trials", "-1"]).status.code(),
        Some(2)
    );
    assert_eq!(sb.augur(&["show", "b/x"]).status.code(), Some(2));
    // Timing flags are range-checked like the study file's settings.
    for (flags, needle) in [
        (vec!["--heartbeat", "0"], "--heartbeat"),
        (vec!["--heartbeat", "2h"], "--heartbeat"),
        (
            vec!["--heartbeat", "1s", "--heartbeat-timeout", "1s"],
            "--heartbeat-timeout",
        ),
        // Its old name, kept for one release.
        (vec!["--heartbeat", "1s", "--lease", "1s"], "two heartbeats"),
        (vec!["--boot-timeout", "0s"], "--boot-timeout"),
        (vec!["--backoff-base", "0s"], "--backoff-base"),
        (
            vec!["--backoff-base", "2s", "--backoff-cap", "1s"],
            "--backoff-cap",
        ),
    ] {
        let mut args = vec!["run", "s.toml"];
        args.extend_from_slice(&flags);
        let out = sb.augur(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(needle),
            "{flags:?}: `{err}` should mention `{needle}`"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{flags:?}: one message: {err}"
        );
    }
    // The agent refuses a heartbeat that would never tick, before any script runs.
    let out = std::process::Command::new(augur_tests::bin_dir().join("augur-agent"))
        .args([
            "--study",
            "b",
            "--trial",
            "1",
            "--attempt",
            "1",
            "--heartbeat",
            "0s",
        ])
        .current_dir(sb.path())
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("heartbeat"));
    // Names from the command line are checked before they become keys or paths.
    for args in [
        vec!["show", "../b/1"],
        vec!["logs", "../../etc/1"],
        vec!["logs", ".."],
        vec!["logs", "..%2f/1"],
        vec!["trials", ".."],
        vec!["leaderboard", "a/b"],
        vec!["export", ".hidden"],
        vec!["stop", "../b"],
        vec!["delete", "..", "--force"],
    ] {
        let out = sb.augur(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a study name"), "{args:?}: {err}");
    }
    assert!(!sb.path().join(".augur").exists());
    // validate says ok to a good file, naming its oracle as the file does.
    let out = sb.augur(&["validate", "s.toml"]);
    assert!(out.status.success());
    let said = text(&out.stdout);
    assert!(
        said.contains("ok") && said.contains(" random oracle,"),
        "{said}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let sb = Sandbox::new();
    let out = sb.augur(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for code in ["0 ", "2 ", "3 ", "130"] {
        assert!(help.contains(&format!("  {code}")), "{help}");
    }
}

/// Early stopping on the local backend: trials whose curve is worse than the median of
/// the completed ones are pruned while they run, their agent and script stop, the
/// study completes, and their best reading still counts on the leaderboard.
#[test]
fn the_median_rule_prunes_running_trials_and_they_still_rank() {
    let sb = Sandbox::new();
    // Loss x + 1/step over 30 steps of 0.1 s: x = 1 and 2 finish first (parallel 2),
    // then every worse x is behind their median from its second step on.
    sb.write(
        "s.toml",
        r#"
name = "prune"
objective = { metric = "loss" }
oracle = "grid"
parallel = 2
[params]
x = { values = [1, 2, 3, 4, 5, 6] }
[run]
script = 'for s in $(seq 1 30); do echo "METRICS: step=$s, loss=$(awk "BEGIN { print $AUGUR_PARAM_X + 1 / $s }")"; sleep 0.1; done; echo finished'
[prune]
rule = "median"
min_trials = 2
warmup = 2
"#,
    );
    let out = run(&sb, "s.toml", &[]);
    ok(&out);
    let trials = sb.trials("prune");
    let state = |x: i64| {
        trials
            .iter()
            .find(|t| t["params"]["x"] == x)
            .map(|t| t["state"].as_str().unwrap_or("?").to_string())
    };
    assert_eq!(state(1).as_deref(), Some("succeeded"));
    assert_eq!(state(2).as_deref(), Some("succeeded"));
    for x in 3..=6 {
        assert_eq!(state(x).as_deref(), Some("pruned"), "x={x}: {trials:?}");
    }
    for t in trials.iter().filter(|t| t["state"] == "pruned") {
        let err = t["error"].as_str().unwrap_or_default();
        assert!(err.starts_with("median rule: best loss"), "{err}");
        // Stopped early: well before its 30 steps (3 s), and the script's end never ran.
        let ran = t["elapsed_ms"].as_i64().expect("started and finished");
        assert!(ran < 2_000, "pruned trial ran {ran} ms: {t}");
        let id = t["id"].as_u64().unwrap_or(0).to_string();
        let log = text(&sb.augur(&["logs", &format!("prune/{id}")]).stdout);
        assert!(!log.contains("finished"), "the script kept running: {log}");
        assert!(!log.contains("step=30"), "{log}");
    }
    // No agent outlives the study.
    let agents = std::process::Command::new("pgrep")
        .args(["-f", &format!("augur-agent --home {}", sb.path().display())])
        .output()
        .expect("pgrep");
    assert!(
        agents.stdout.is_empty(),
        "agents left: {}",
        text(&agents.stdout)
    );
    // The leaderboard keeps the pruned points, ranked by their best reading.
    let lb: Vec<Value> =
        serde_json::from_slice(&sb.augur(&["leaderboard", "prune", "--json"]).stdout)
            .expect("json");
    assert_eq!(lb.len(), 6, "{lb:?}");
    assert_eq!(lb[0]["params"]["x"], 1);
    assert_eq!(lb[0]["pruned"], false);
    assert_eq!(lb[2]["params"]["x"], 3);
    assert_eq!(lb[2]["pruned"], true);
    let best3 = lb[2]["value"].as_f64().unwrap_or(0.0);
    // Pruned at step 2 (the warm-up) or later: 3 + 1/step.
    assert!(best3 > 3.0 && best3 <= 3.5, "x=3's best reading: {best3}");
    let table = text(&sb.augur(&["leaderboard", "prune"]).stdout);
    assert!(table.contains("(pruned)"), "{table}");
    let listing = text(&sb.augur(&["studies"]).stdout);
    assert!(listing.contains("6/6"), "{listing}");
}

/// Tables for other tools: `trials --csv`, `leaderboard --csv`, `export` (jsonl and
/// csv, to stdout or a file), read back by Python's csv module; shell completions.
#[test]
fn csv_export_and_completions() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        r#"
name = "tab"
objective = { metric = "loss" }
oracle = "grid"
[params]
x = { values = [1, 2, 3] }
tag = { values = ["a,b", 'say "hi"'] }
[run]
script = 'echo "METRICS: step=1, loss=$((AUGUR_PARAM_X * 2))"; echo "METRICS: step=2, loss=$AUGUR_PARAM_X"; echo "done, \"quoted\""'
"#,
    );
    ok(&run(&sb, "s.toml", &[]));
    let json = sb.trials("tab");
    assert_eq!(json.len(), 6);
    // Python's csv module reads what we write, and it agrees with the JSON.
    let read_csv = |args: &[&str]| -> Vec<BTreeMap<String, String>> {
        let out = sb.augur(args);
        ok(&out);
        let path = sb.write("t.csv", &text(&out.stdout));
        let py = std::process::Command::new("python3")
            .args([
                "-c",
                "import csv, json, sys; print(json.dumps(list(csv.DictReader(open(sys.argv[1], newline='')))))",
            ])
            .arg(&path)
            .output()
            .expect("python3");
        assert!(py.status.success(), "{}", text(&py.stderr));
        serde_json::from_slice(&py.stdout).expect("rows")
    };
    let rows = read_csv(&["trials", "tab", "--csv"]);
    assert_eq!(rows.len(), 6);
    for (r, j) in rows.iter().zip(&json) {
        assert_eq!(r["id"], j["id"].to_string());
        assert_eq!(r["state"], "succeeded");
        assert_eq!(r["param.tag"], j["params"]["tag"].as_str().unwrap_or("?"));
        assert_eq!(r["param.x"], j["params"]["x"].to_string());
        assert_eq!(r["metric.loss"], j["params"]["x"].to_string());
        assert_eq!(r["status"], "done, \"quoted\"");
        assert!(r["elapsed_ms"].parse::<u64>().is_ok(), "{r:?}");
    }
    let lb = read_csv(&["leaderboard", "tab", "--csv", "-n", "2"]);
    assert_eq!(lb.len(), 2);
    assert_eq!(
        (lb[0]["rank"].as_str(), lb[0]["value"].as_str()),
        ("1", "1")
    );
    assert_eq!(lb[0]["param.x"], "1");
    assert_eq!(lb[0]["pruned"], "false");
    assert_eq!(read_csv(&["export", "tab", "--format", "csv"]), rows);
    // jsonl: one object per trial, with the metric series.
    let jsonl = sb.augur(&["export", "tab"]);
    ok(&jsonl);
    let lines: Vec<Value> = text(&jsonl.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one object per line"))
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert_eq!(l["series"].as_array().map(Vec::len), Some(2), "{l}");
    }
    let file = sb.path().join("out.jsonl");
    let to_file = sb.augur(&["export", "tab", "--output", &file.display().to_string()]);
    ok(&to_file);
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        text(&jsonl.stdout)
    );
    assert!(text(&to_file.stderr).contains("wrote 6 trial(s)"));
    // Bad requests exit 2.
    assert_eq!(
        sb.augur(&["trials", "tab", "--csv", "--json"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        sb.augur(&["export", "tab", "--format", "xml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(sb.augur(&["export", "nope"]).status.code(), Some(2));
    let nowhere = sb.augur(&["export", "tab", "--output", "/nonexistent/dir/x.jsonl"]);
    assert_eq!(nowhere.status.code(), Some(2));
    // Completions for three shells: each asks augur itself at a TAB.
    for (shell, marker) in [
        ("bash", "complete -o nospace"),
        ("zsh", "#compdef augur"),
        ("fish", "complete --keep-order"),
    ] {
        let out = sb.augur(&["completions", shell]);
        ok(&out);
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("COMPLETE="), "{shell}: {script}");
    }
    let bash = sb.write(
        "augur.bash",
        &text(&sb.augur(&["completions", "bash"]).stdout),
    );
    // Real bash, with the script sourced, completes subcommands, study names and
    // STUDY/TRIAL targets from the database.
    let tab = |words: &[&str]| -> Vec<String> {
        let line = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_TYPE=9; _clap_complete_augur augur {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            format_args!("'{}'", words[words.len() - 1]),
            format_args!("'{}'", words[words.len().saturating_sub(2)]),
        );
        let path = format!(
            "{}:{}",
            augur_tests::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .current_dir(sb.path())
            .env("PATH", path)
            .env_remove("AUGUR_HOME")
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(String::from).collect()
    };
    assert!(tab(&["augur", "lea"]).contains(&"leaderboard".to_string()));
    assert!(tab(&["augur", "trials", "t"]).contains(&"tab".to_string()));
    assert!(tab(&["augur", "logs", "ta"]).contains(&"tab/".to_string()));
    let trials = tab(&["augur", "show", "tab/"]);
    assert!(trials.contains(&"tab/1".to_string()), "{trials:?}");
}

/// `augur serve`: the JSON API behind every page, Prometheus text, server-rendered
/// pages with SVG charts; `augur run --serve`: the same with the run's counters and a
/// log that follows a running trial.
#[test]
fn status_server_api_pages_and_metrics() {
    use augur_tests::{http_get, server_addr};
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='srv'\nobjective={metric='loss'}\noracle='grid'\nparallel=2\n[params]\nx={values=[1,2,3,4]}\n[run]\nscript='for s in 1 2 3; do echo \"METRICS: step=$s, loss=$((AUGUR_PARAM_X * 10 / s))\"; done'\n",
    );
    ok(&run(&sb, "s.toml", &[]));
    let mut server = sb.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server_addr(&mut server);
    let get_json = |path: &str| -> Value {
        let (status, ctype, body) = http_get(&addr, path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        serde_json::from_str(&body).expect("json")
    };
    let studies = get_json("/api/studies");
    assert_eq!(studies[0]["name"], "srv");
    assert_eq!(studies[0]["trials"]["succeeded"], 4);
    let study = get_json("/api/studies/srv");
    assert_eq!(study["leaderboard"].as_array().map(Vec::len), Some(4));
    assert_eq!(study["leaderboard"][0]["params"]["x"], 1);
    assert_eq!(study["spec"]["objective"]["metric"], "loss");
    let trials = get_json("/api/studies/srv/trials");
    assert_eq!(trials.as_array().map(Vec::len), Some(4));
    let t1 = get_json("/api/trials/srv/1");
    assert_eq!(t1["series"].as_array().map(Vec::len), Some(3));
    let (status, ctype, log) = http_get(&addr, "/api/trials/srv/1/log");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"));
    assert!(log.contains(" out METRICS: step=3, loss="), "{log}");
    assert_eq!(
        log,
        text(&sb.augur(&["logs", "srv/1"]).stdout),
        "the same as augur logs"
    );
    let (status, _, body) = http_get(&addr, "/api/studies/nope");
    assert_eq!(status, 404);
    assert!(body.contains("no study named `nope`"), "{body}");
    assert_eq!(http_get(&addr, "/api/trials/srv/99").0, 404);
    // A name that could become a path is refused before any lookup.
    for path in [
        "/api/trials/../1/log",
        "/api/trials/..%2F..%2Fetc/1/log",
        "/studies/.x",
    ] {
        let (status, _, body) = http_get(&addr, path);
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    let (status, _, body) = http_get(&addr, "/api/trials/..%2F..%2Fetc/1/log");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not a study name"), "{body}");
    let (status, ctype, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(
        metrics.contains("augur_trials{study=\"srv\",state=\"succeeded\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("augur_studies{state=\"done\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("augur_runner_"), "no run in this process");
    // Pages: links, tables and charts drawn on the server.
    let (status, ctype, home) = http_get(&addr, "/");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"));
    assert!(home.contains("<a href=\"/studies/srv\">srv</a>"), "{home}");
    let (_, _, page) = http_get(&addr, "/studies/srv");
    for want in [
        "data-src=\"/api/studies/srv/analysis\"",
        "src=\"/assets/echarts-6.1.0.min.js\"",
        "Leaderboard",
        "href=\"/trials/srv/1\"",
    ] {
        assert!(page.contains(want), "study page lacks {want}");
    }
    // What the page draws: every trial with its curve, the parameters' kinds, and
    // (with 4 trials) no importance yet, saying why.
    let (status, _, analysis) = http_get(&addr, "/api/studies/srv/analysis");
    assert_eq!(status, 200);
    let a: Value = serde_json::from_str(&analysis).expect("analysis json");
    assert_eq!(a["trials"].as_array().map(Vec::len), Some(4), "{a}");
    assert_eq!(
        a["trials"][0]["curve"],
        json!([[1.0, 10.0], [2.0, 5.0], [3.0, 3.0]]),
        "{a}"
    );
    assert_eq!(a["params"][0]["kind"], "number");
    assert!(a["importance"]["why_not"].is_string(), "{a}");
    // The vendored chart library and the page's scripts are augur's own.
    for asset in [
        "/assets/echarts-6.1.0.min.js",
        "/assets/study.js",
        "/assets/augur.css",
    ] {
        let (status, _, body) = http_get(&addr, asset);
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 500, "{asset}");
    }
    assert_eq!(http_get(&addr, "/assets/nope.js").0, 404);
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(
            !page.contains(external),
            "nothing from the network: {external}"
        );
    }
    let (_, _, tpage) = http_get(&addr, "/trials/srv/1");
    assert!(
        tpage.contains("id=\"series-data\"")
            && tpage.contains("data-src=\"/api/trials/srv/1/log\""),
        "{tpage}"
    );
    let _ = server.kill();
    let _ = server.wait();

    // augur run --serve: the run's counters, and a log that follows a running trial.
    sb.write(
        "slow.toml",
        "name='slow'\nobjective={metric='loss'}\noracle='grid'\nparallel=2\n[params]\nx={values=[1,2]}\n[run]\nscript='for s in 1 2 3 4; do echo \"tick $s\"; sleep 0.3; done; echo METRICS: loss=$AUGUR_PARAM_X'\n",
    );
    let mut args = vec!["run", "slow.toml", "--serve", "127.0.0.1:0"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    let addr = server_addr(&mut child);
    sb.wait_running("slow", 1, LIMIT);
    // While it runs: the run's own counters (both trials launched at once).
    let (_, _, metrics) = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("augur_runner_launched_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE augur_runner_succeeded_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE augur_reconcile_pass_seconds summary")
            && metrics.contains("augur_reconcile_pass_seconds_count ")
            && metrics.contains("augur_reconcile_tick_seconds_count "),
        "{metrics}"
    );
    // The log of a running trial, followed to its end (the server lets it finish
    // even though the run ends at the same moment).
    let (status, _, followed) = http_get(&addr, "/api/trials/slow/1/log?follow");
    assert_eq!(status, 200);
    for s in 1..=4 {
        assert!(followed.contains(&format!(" out tick {s}")), "{followed}");
    }
    assert!(
        followed.contains(" augur succeeded"),
        "followed to the end: {followed}"
    );
    assert!(wait_exit(&mut child, LIMIT).success());
    // A busy address is refused before anything runs.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = busy.local_addr().expect("addr").to_string();
    let refused = sb.augur(&["serve", "--addr", &taken]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let help = text(&sb.augur(&["serve", "--help"]).stdout);
    assert!(help.contains("127.0.0.1:8080"), "{help}");
}

/// `augur gc`: agents of a deleted study are ended; agents of active attempts are
/// left to their driver; an expired lease and a deleted study's submitted mark are
/// removed; `--dry-run` changes nothing.
#[test]
fn gc_ends_orphans_and_expired_leases_and_leaves_live_work_alone() {
    use augur_store::TrialStore;
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name = \"orph\"\nobjective = { metric = \"v\" }\ntrials = 2\nparallel = 2\n[run]\nscript = 'sleep 120'\n",
    );
    // Beats a minute apart: an agent learns that its study was deleted at its next
    // beat and ends itself, which on a busy machine could come before `gc` ends it.
    let args = [
        "run",
        "s.toml",
        "--heartbeat",
        "60s",
        "--heartbeat-timeout",
        "180s",
        "--backoff-base",
        "50ms",
    ];
    let mut child = sb.spawn(&args);
    augur_tests::wait_for(Duration::from_secs(30), "2 trials running", || {
        let t = sb.try_trials("orph")?;
        (t.iter().filter(|t| t["state"] == "running").count() == 2).then_some(())
    });
    let _ = child.kill(); // SIGKILL: its agents run on.
    let _ = child.wait();
    let gc = |extra: &[&str]| {
        let mut a = vec!["gc", "--json"];
        a.extend_from_slice(extra);
        sb.json(&a)
    };
    let first = gc(&[]);
    assert_eq!(
        first["machines"],
        json!([]),
        "active attempts are left alone: {first}"
    );

    // A lease a dead driver left long ago, and a submitted mark of a study gone.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(async {
        let db = augur_store::SqliteStore::open(&sb.path().join(".augur/augur.db")).expect("db");
        db.take_lease("ghost", "augur-run@gone:1", 1_000, 2_000, 0)
            .await
            .expect("lease");
        db.set_submitted("ghost", true).await.expect("mark");
    });
    ok(&sb.augur(&["delete", "orph", "--force", "--yes"]));

    let dry = gc(&["--dry-run"]);
    let machines = dry["machines"].as_array().expect("machines");
    assert_eq!(machines.len(), 2, "{dry}");
    assert!(machines.iter().all(|m| m["reason"]
        .as_str()
        .is_some_and(|r| r.contains("not recorded"))));
    assert_eq!(dry["leases"][0]["study"], "ghost", "{dry}");
    assert_eq!(dry["submitted"], json!(["ghost"]), "{dry}");
    // Nothing changed: the same again.
    assert_eq!(
        gc(&["--dry-run"])["machines"].as_array().map(Vec::len),
        Some(2)
    );

    let out = sb.augur(&["gc"]);
    ok(&out);
    let said = text(&out.stdout);
    assert_eq!(said.matches("ended machine").count(), 2, "{said}");
    assert!(said.contains("removed lease of `ghost`"), "{said}");
    assert!(text(&out.stderr)
        .contains("2 machine(s) ended, 1 expired lease(s), 1 stale submitted mark(s)"));
    augur_tests::wait_for(
        Duration::from_secs(30),
        "the orphaned agents to end",
        || {
            gc(&["--dry-run"])["machines"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(())
        },
    );
    let last = gc(&[]);
    assert_eq!(last["leases"], json!([]), "{last}");
    assert_eq!(last["submitted"], json!([]), "{last}");
}

/// The status server on loopback answers only under its own name (a DNS-rebinding
/// page gets 403); beyond loopback it wants its token (401 without), which a browser
/// shows once in `?token=` and then carries in a cookie; `run.env` values never leave
/// it, only their names.
#[test]
fn status_server_refuses_rebinding_and_strangers_and_redacts_env() {
    use augur_tests::{http_request, server_addr, server_url};
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='sec'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='echo METRICS: m=1'\nenv={API_KEY='hunter2'}\n",
    );
    ok(&run(&sb, "s.toml", &[]));

    let mut local = sb.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server_addr(&mut local);
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    let (status, _, body) = http_request(&addr, "/api/studies/sec", &[("Host", &addr)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("API_KEY"), "the name stays: {body}");
    assert!(!body.contains("hunter2"), "the value never leaves: {body}");
    let localhost = format!("localhost:{port}");
    assert_eq!(http_request(&addr, "/", &[("Host", &localhost)]).0, 200);
    let evil = format!("rebound.example:{port}");
    let (status, _, body) = http_request(&addr, "/api/studies", &[("Host", &evil)]);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("sec"), "{body}");
    let _ = local.kill();
    let _ = local.wait();

    // Beyond loopback (all addresses; the test connects through 127.0.0.1 only).
    let mut wide = sb.spawn(&["serve", "--addr", "0.0.0.0:0"]);
    let url = server_url(&mut wide);
    let token = url
        .split("?token=")
        .nth(1)
        .expect("the printed address carries the token")
        .to_string();
    let port = url
        .split('/')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .expect("port")
        .to_string();
    let addr = format!("127.0.0.1:{port}");
    let host = [("Host", addr.as_str())];
    let (status, _, body) = http_request(&addr, "/api/studies", &host);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    let bad = [("Host", addr.as_str()), ("Authorization", "Bearer not-it")];
    assert_eq!(http_request(&addr, "/metrics", &bad).0, 401);
    let bearer = format!("Bearer {token}");
    let good = [("Host", addr.as_str()), ("Authorization", bearer.as_str())];
    let (status, _, body) = http_request(&addr, "/api/studies", &good);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sec"));
    // A browser: the printed address once, then its cookie.
    let (status, headers, _) = http_request(&addr, &format!("/?token={token}"), &host);
    assert_eq!(status, 200);
    let cookie = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_string())
        .expect("a cookie for the browser");
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.contains("HttpOnly")));
    let with_cookie = [("Host", addr.as_str()), ("Cookie", cookie.as_str())];
    assert_eq!(http_request(&addr, "/studies/sec", &with_cookie).0, 200);
    let _ = wide.kill();
    let _ = wide.wait();
}

/// A serverless tick checks every study record it reads back as strictly as a study
/// file: a record rewritten in the store (here: an attempt budget of 0 and a file path
/// out of the study's directory) is refused with the reason, and nothing is launched.
#[test]
fn a_tick_refuses_a_tampered_study_record() {
    use augur_store::TrialStore;
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='tam'\nobjective={metric='m'}\ntrials=2\n[run]\nscript='echo METRICS: m=1'\n",
    );
    ok(&sb.augur(&["submit", "s.toml"]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let db = augur_store::SqliteStore::open(&sb.path().join(".augur/augur.db")).expect("db");
        let mut rec = db.get_study("tam").await.expect("read").expect("recorded");
        rec.spec.run.files = vec!["../../../etc/passwd".into()];
        db.put_study(&rec).await.expect("tamper");
    });
    let out = sb.augur(&["tick", "--limit", "5s"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an error in the report: {}",
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    let row = &report["studies"][0];
    assert_eq!(row["outcome"], "error", "{report}");
    assert!(
        row["detail"]
            .as_str()
            .is_some_and(|d| d.contains("refused") && d.contains("leaves the study's directory")),
        "{report}"
    );
    assert_eq!(row["launched"], 0, "{report}");
    let trials: Value =
        serde_json::from_slice(&sb.augur(&["trials", "tam", "--json"]).stdout).expect("json");
    assert_eq!(
        trials.as_array().map(Vec::len),
        Some(0),
        "nothing was proposed: {trials}"
    );
}

/// Secrets by reference on the local backend: the value comes from the environment
/// of the same name, reaches the script, and is masked in what it prints; it is in
/// no record, log, export or page. Without the variable the attempt fails naming
/// the secret (not its value), and is not retried.
#[test]
fn secrets_reach_the_script_and_nothing_else() {
    // The script checks the value in two halves: the study file must not hold it.
    const VALUE: &str = "s3cr3t-v4lue-of-the-test";
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='sec'\nobjective={metric='ok'}\ntrials=1\n[run]\nmax_attempts=3\nsecrets={API_KEY='ssm:/team/api'}\nscript='''\necho \"the key is $API_KEY\"\n[ \"${API_KEY#s3cr3t-}\" = v4lue-of-the-test ] && echo METRICS: ok=1\n'''\n",
    );
    let out = sb
        .cmd(&[&["run", "s.toml"][..], &FAST[..]].concat())
        .env("API_KEY", VALUE)
        .output()
        .expect("augur");
    ok(&out);
    let shown = text(&sb.augur(&["show", "sec/1", "--json"]).stdout);
    let t: Value = serde_json::from_str(&shown).expect("show json");
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["metrics"]["ok"], 1.0, "the script got the value: {t}");
    let logs = text(&sb.augur(&["logs", "sec/1"]).stdout);
    assert!(logs.contains("the key is ***"), "{logs}");
    let export = text(&sb.augur(&["export", "sec", "--format", "jsonl"]).stdout);
    let api = text(&sb.augur(&["show", "sec", "--json"]).stdout);
    let mut everything = vec![
        shown,
        logs,
        export,
        api,
        text(&out.stdout),
        text(&out.stderr),
    ];
    // Every byte augur keeps: the database (and its journal) and the log files.
    let mut stack = vec![sb.path().join(".augur")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                everything.push(
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned(),
                );
            }
        }
    }
    assert!(everything.len() > 6, "files were read");
    for (i, t) in everything.iter().enumerate() {
        assert!(!t.contains(VALUE), "the value leaked (item {i}): {t}");
    }
    assert!(
        everything.iter().any(|t| t.contains("ssm:/team/api")),
        "the reference is kept"
    );

    // Unset: failed with the reason, not retried.
    sb.write(
        "s2.toml",
        &std::fs::read_to_string(sb.path().join("s.toml"))
            .expect("s")
            .replace("'sec'", "'sec2'"),
    );
    let out = sb
        .cmd(&[&["run", "s2.toml"][..], &FAST[..]].concat())
        .env_remove("API_KEY")
        .output()
        .expect("augur");
    let t: Value =
        serde_json::from_slice(&sb.augur(&["show", "sec2/1", "--json"]).stdout).expect("show json");
    assert_eq!(t["state"], "failed", "{t} {}", text(&out.stderr));
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    assert!(
        t["error"].as_str().is_some_and(
            |e| e.contains("secret `API_KEY` (ssm:/team/api)") && e.contains("not set")
        ),
        "{t}"
    );
}

/// examples/resume: a Python training script that checkpoints each epoch. The first
/// attempt of every other trial loses its agent half-way; its retry goes on from the
/// epoch it had saved, and every trial ends with all 12 epochs reported.
#[test]
fn the_resume_example_goes_on_from_its_checkpoints() {
    let sb = Sandbox::new();
    let study = augur_tests::repo().join("examples/resume/study.toml");
    let mut args = vec!["run", study.to_str().expect("utf-8 path")];
    args.extend_from_slice(&FAST);
    ok(&sb.augur(&args));
    let trials = sb.trials("resume");
    assert_eq!(states(&trials), vec!["succeeded"; 12]);
    for t in &trials {
        let id = t["id"].as_u64().expect("id");
        assert_eq!(t["metrics"]["step"], 12.0, "{t}");
        let log = text(&sb.augur(&["logs", &format!("resume/{id}")]).stdout);
        if id % 2 == 0 {
            assert_eq!(t["attempt"], 2, "{t}");
            assert!(log.contains("resuming from epoch 6"), "trial {id}: {log}");
        } else {
            assert!(!log.contains("resuming"), "trial {id}: {log}");
        }
    }
}

/// The record keeps a thinned series (at most 200 readings); `augur show --json`,
/// `export` and the trial page read the whole series back from the log.
#[test]
fn the_whole_series_is_read_back_from_the_log() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='long'\nobjective={metric='loss'}\ntrials=1\n[run]\nscript='for i in $(seq 500); do echo \"METRICS: step=$i, loss=$((1000 - i))\"; done'\n",
    );
    ok(&run(&sb, "s.toml", &[]));
    let shown: Value =
        serde_json::from_slice(&sb.augur(&["show", "long/1", "--json"]).stdout).expect("json");
    let series = shown["series"].as_array().expect("series");
    assert_eq!(series.len(), 500);
    assert_eq!(series[499]["values"]["step"], 500.0);
    let export = text(&sb.augur(&["export", "long", "--format", "jsonl"]).stdout);
    let line: Value = serde_json::from_str(export.trim()).expect("one line");
    assert_eq!(line["series"].as_array().map(Vec::len), Some(500));
    // The record itself holds the thinned series (read with Python's sqlite3).
    let db = sb.path().join(".augur/augur.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sqlite3,sys; d=sqlite3.connect(sys.argv[1]).execute('select data from trials').fetchone()[0]; print(len(json.loads(d)['series']))",
            &db.display().to_string(),
        ])
        .output()
        .expect("python3");
    let kept: usize = text(&out.stdout).trim().parse().expect("a count");
    assert!(
        (50..=augur_model::bounded::SERIES_POINTS + 1).contains(&kept),
        "{kept} readings in the record"
    );
}
