//! The chaos suite: faults injected while real studies run, on both backends, each
//! row checked for its promise (the study completes, no trial lost, no attempt run
//! twice, no second instance for an attempt) and its figures written to
//! `<target>/debug/chaos/` (`scripts/test.sh` prints them as one table).
//!
//! CI runs the bounded form; `AUGUR_CHAOS_SCALE=N` multiplies the injections.

use augur_tests::cloud::{futures_lite, World, RUN};
use augur_tests::faults::{Fault, Rule};
use augur_tests::table::Row;
use augur_tests::{ok, text, wait_for, Sandbox, FAST};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn scale() -> u32 {
    std::env::var("AUGUR_CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Lines of the shared `runs` file, as (trial, attempt) → how many times.
fn attempts(runs: &std::path::Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in std::fs::read_to_string(runs).unwrap_or_default().lines() {
        *out.entry(l.to_string()).or_default() += 1;
    }
    out
}

/// Machines launched for a local study: one agent per attempt.
fn launches(trials: &[Value]) -> usize {
    trials
        .iter()
        .filter_map(|t| t["attempt"].as_u64())
        .sum::<u64>() as usize
}

fn succeeded(trials: &[Value]) -> usize {
    trials.iter().filter(|t| t["state"] == "succeeded").count()
}

/// Kills the orchestrator with SIGKILL at random moments, 20 times in one study, each
/// time running it again: the budget stays exact and no attempt runs twice.
#[test]
fn orchestrator_kill_9_twenty_times() {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    let n = 24;
    sb.write(
        "s.toml",
        &format!(
            "name = \"k9\"\nobjective = {{ metric = \"v\" }}\noracle = \"random\"\ntrials = {n}\nparallel = 4\n[params]\nv = {{ range = [0.0, 1.0] }}\n[run]\nscript = 'echo \"$AUGUR_TRIAL $AUGUR_ATTEMPT\" >> {}; sleep 0.3; echo \"METRICS: v=$AUGUR_PARAM_V\"'\n",
            runs.display()
        ),
    );
    let started = Instant::now();
    let mut rng = Rng::new(20261125);
    let kills = 20 * scale();
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    for _ in 0..kills {
        let mut child = sb.spawn(&args);
        std::thread::sleep(Duration::from_millis(30 + rng.below(500)));
        let _ = child.kill();
        let _ = child.wait();
    }
    ok(&sb.augur(&args));
    let trials = sb.trials("k9");
    let ran = attempts(&runs);
    let done = succeeded(&trials);
    Row {
        key: "a-orchestrator",
        what: "orchestrator SIGKILL at random moments, then re-run (local)",
        injected: format!("{kills} kills"),
        trials: n,
        completed: done,
        launches: launches(&trials),
        lost: n - done + trials.len().saturating_sub(n),
        duplicated: ran.values().filter(|c| **c > 1).count(),
        took: started.elapsed(),
    }
    .record();
}

/// PIDs of this sandbox's agents.
fn agents_of(sb: &Sandbox) -> Vec<i32> {
    let home = sb.path().join(".augur").display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("augur-agent"))
            && args
                .windows(2)
                .any(|w| w[0] == "--home" && w[1].ends_with(".augur"))
            && args
                .iter()
                .any(|a| a.contains(&home) || home.ends_with(a.as_str()))
        {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs agents (`agents`) or scripts (`!agents`) at random while a local study
/// runs: their trials are retried and complete; no attempt runs twice.
fn kill_workers(agents: bool) {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    let pids = sb.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let n = 10;
    sb.write(
        "s.toml",
        &format!(
            "name = \"kw\"\nobjective = {{ metric = \"v\" }}\ntrials = {n}\nparallel = 3\n[run]\nmax_attempts = 10\nscript = 'echo $$ > {pids}/$AUGUR_TRIAL.$AUGUR_ATTEMPT; echo \"$AUGUR_TRIAL $AUGUR_ATTEMPT\" >> {runs}; sleep 1.5; echo \"METRICS: v=$AUGUR_TRIAL\"'\n",
            pids = pids.display(),
            runs = runs.display()
        ),
    );
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    let mut rng = Rng::new(if agents { 7 } else { 11 });
    let target = 6 * scale();
    let mut kills = 0;
    let mut killed_scripts = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while kills < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300 + rng.below(600)));
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        let victim = if agents {
            let live = agents_of(&sb);
            (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize])
        } else {
            let files: Vec<_> = std::fs::read_dir(&pids)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| !killed_scripts.contains(p))
                .collect();
            let f =
                (!files.is_empty()).then(|| files[rng.below(files.len() as u64) as usize].clone());
            f.and_then(|f| {
                killed_scripts.insert(f.clone());
                std::fs::read_to_string(f).ok()?.trim().parse().ok()
            })
        };
        if let Some(pid) = victim {
            // SAFETY: kill(2) with a pid we found and SIGKILL.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                kills += 1;
            }
        }
    }
    let status = augur_tests::wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "the study completes");
    let trials = sb.trials("kw");
    let done = succeeded(&trials);
    let ran = attempts(&runs);
    assert!(kills >= 3, "only {kills} kills landed");
    let retried = trials
        .iter()
        .filter(|t| t["attempt"].as_u64() > Some(1))
        .count();
    assert!(retried >= 1, "killed trials were retried");
    Row {
        key: if agents { "b-agents" } else { "c-scripts" },
        what: if agents {
            "agent processes SIGKILLed at random (local)"
        } else {
            "scripts SIGKILLed at random, agents left alive (local)"
        },
        injected: format!("{kills} kills, {retried} trials retried"),
        trials: n,
        completed: done,
        launches: launches(&trials),
        lost: n - done,
        duplicated: ran.values().filter(|c| **c > 1).count(),
        took: started.elapsed(),
    }
    .record();
}

/// Warm agents (the local default) SIGKILLed while idle, between two attempts: the
/// next launch finds its agent gone and starts another; nothing is lost or run
/// twice, and the survivors keep taking the study's trials.
#[test]
fn warm_agents_sigkilled_between_attempts() {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    let n = 16;
    sb.write(
        "s.toml",
        &format!(
            "name = \"warm\"\nobjective = {{ metric = \"v\" }}\ntrials = {n}\nparallel = 2\n[run]\nmax_attempts = 10\nscript = 'echo \"$AUGUR_TRIAL $AUGUR_ATTEMPT\" >> {}; sleep 0.3; echo \"METRICS: v=$AUGUR_TRIAL\"'\n",
            runs.display()
        ),
    );
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let mut child = sb.spawn(&args);
    let target = 4 * scale();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kills < target && Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        // An agent with no script is between two attempts.
        for pid in agents_of(&sb)
            .into_iter()
            .filter(|p| !augur_tests::has_child(*p))
        {
            // SAFETY: kill(2) with a pid we found and SIGKILL.
            if kills < target && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                kills += 1;
                std::thread::sleep(Duration::from_millis(400));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = augur_tests::wait_exit(&mut child, Duration::from_secs(120));
    let trials = sb.trials("warm");
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let states: Vec<String> = trials
            .iter()
            .map(|t| format!("{} {} {} {}", t["id"], t["state"], t["attempt"], t["error"]))
            .collect();
        panic!(
            "the study did not complete ({status}): {err}\n{}",
            states.join("\n")
        );
    }
    let done = succeeded(&trials);
    let ran = attempts(&runs);
    assert!(kills >= 2, "only {kills} kills landed");
    let machines: std::collections::BTreeSet<&str> = trials
        .iter()
        .filter_map(|t| t["machine"].as_str())
        .collect();
    assert!(
        machines.len() < n,
        "machines were reused: {} for {n} trials",
        machines.len()
    );
    Row {
        key: "b-warm-idle",
        what: "warm agents SIGKILLed while idle, between two attempts (local)",
        injected: format!("{kills} kills; {} agents ran {n} trials", machines.len()),
        trials: n,
        completed: done,
        launches: launches(&trials),
        lost: n - done,
        duplicated: ran.values().filter(|c| **c > 1).count(),
        took: started.elapsed(),
    }
    .record();
}

#[test]
fn agents_sigkilled_at_random() {
    kill_workers(true);
}

#[test]
fn scripts_sigkilled_at_random() {
    kill_workers(false);
}

/// A world with an AWS study of `n` trials whose script sleeps `sleep` seconds, and
/// the fake hypervisor started with `hypervisor` faults.
fn aws_world(name: &str, n: usize, sleep: u32, hypervisor: &[&str]) -> World {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        &format!(
            "name = \"{name}\"\nobjective = {{ metric = \"v\" }}\noracle = \"grid\"\nparallel = 3\n[params]\nx = {{ values = [{}] }}\n[run]\nmax_attempts = 10\nscript = 'sleep {sleep}; echo \"METRICS: v=$AUGUR_PARAM_X\"'\n[aws]\nimage = \"ami-12345678\"\n",
            (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ),
    );
    w.init();
    w.start_hypervisor_with(hypervisor);
    w
}

/// An AWS study of `n` trials through the fault proxy and the fake hypervisor, with
/// `faults` for the hypervisor; returns the world, the run's output and its time.
fn aws_study(
    name: &str,
    n: usize,
    hypervisor: &[&str],
    prepare: impl FnOnce(&World),
    extra: &[&str],
) -> (World, std::process::Output, Duration) {
    // 3 s: the hypervisor's faults (300 ms after boot, one instance at a time) land
    // while scripts run.
    let w = aws_world(name, n, 3, hypervisor);
    prepare(&w);
    let started = Instant::now();
    // A loaded 2-core machine may take seconds to boot a healthy instance (bash, the
    // AWS CLI, the agent) or to run its agent: the boot timeout and the lease leave
    // room for that, so only the faults injected lose attempts.
    let mut args = vec![
        "run",
        "s.toml",
        "--heartbeat",
        "500ms",
        "--heartbeat-timeout",
        "12s",
        "--boot-timeout",
        "30s",
        "--backoff-base",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let out = w.augur(&args);
    (w, out, started.elapsed())
}

/// Checks an AWS study: every trial succeeded with its metric, one instance per
/// attempt, none left running; returns (completed, lost, duplicated instances).
/// (completed, lost, duplicated, launches) of an AWS study.
fn aws_outcome(w: &World, name: &str, n: usize) -> (usize, usize, usize, usize) {
    let out = w.augur(&["trials", name, "--json"]);
    let trials: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let done = trials
        .iter()
        .filter(|t| {
            t["state"] == "succeeded" && t["metrics"]["v"].as_f64() == t["params"]["x"].as_f64()
        })
        .count();
    let instances = futures_lite(w.study_instances(name)).len();
    let duplicated = futures_lite(w.duplicated(name));
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    (done, n - done, duplicated, instances)
}

/// 30 % of the calls to EC2, DynamoDB and CloudWatch Logs (the orchestrator's and the
/// agents') answered with throttling, a 500, or a 500 after the call was applied
/// (EC2 and DynamoDB both document it), with EC2's token memory on: the study
/// completes within 3 minutes, every result and every log line is written once, one
/// instance per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_thirty_percent_throttling_and_5xx() {
    let n = 10;
    let (w, out, took) = aws_study(
        "storm",
        n,
        &[],
        |w| {
            // Applied, then a 500: every 7th launch and trial write.
            w.proxy
                .add(Rule::new("ec2", "RunInstances", Fault::ServerErrorAfterApply).every(7));
            w.proxy
                .add(Rule::new("dynamodb", "PutItem", Fault::ServerErrorAfterApply).every(7));
            for service in ["ec2", "dynamodb", "logs"] {
                w.proxy
                    .add(Rule::new(service, "*", Fault::Throttle).every(4));
                w.proxy
                    .add(Rule::new(service, "*", Fault::ServerError).every(10));
            }
        },
        &[],
    );
    ok(&out);
    let calls: Vec<_> = w
        .proxy
        .calls()
        .into_iter()
        .filter(|c| ["ec2", "dynamodb", "logs"].contains(&c.service.as_str()))
        .collect();
    let faulted = calls.iter().filter(|c| c.fault.is_some()).count();
    w.proxy.clear();
    let (done, lost, dup, launches) = aws_outcome(&w, "storm", n);
    // Every trial's METRICS line reached CloudWatch Logs exactly once.
    let logs = text(&w.augur(&["logs", "storm", "--filter", "METRICS"]).stdout);
    for x in 1..=n {
        let found = logs.matches(&format!("METRICS: v={x}\n")).count();
        if found != 1 {
            let all = text(&w.augur(&["logs", "storm"]).stdout);
            let agents: String = std::fs::read_dir(w.sb.path().join("instances"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| std::fs::read_to_string(e.path().join("agent.err")).unwrap_or_default())
                .collect();
            panic!("trial with x={x}: {found} times\n{all}\nagents:\n{agents}");
        }
    }
    let share = faulted as f64 / calls.len().max(1) as f64;
    assert!(share >= 0.29, "{faulted} of {} calls faulted", calls.len());
    // One instance per attempt: a launch retried after its answer was lost got the
    // instance it had made.
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "storm", "--json"]).stdout).unwrap_or_default();
    let attempts: u64 = trials
        .iter()
        .map(|t| t["attempt"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(launches as u64, attempts, "instances = attempts");
    Row {
        key: "d-aws-storm",
        what: "30 % throttling and 5xx on EC2, DynamoDB, CloudWatch Logs (AWS)",
        injected: format!(
            "{faulted} of {} calls ({:.0} %)",
            calls.len(),
            share * 100.0
        ),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took,
    }
    .record();
}

/// Instances taken away behind augur's back (failed hosts: `Server.InternalError`
/// from the hypervisor), and instances that never boot: re-created, the study
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_reclaimed_and_never_booting_instances() {
    let n = 6;
    let (w, out, took) = aws_study("reclaim", n, &["--reclaim-every", "2"], |_| {}, &[]);
    ok(&out);
    let (done, lost, dup, launches) = aws_outcome(&w, "reclaim", n);
    let reclaimed = text(&out.stderr).matches("taken away").count();
    Row {
        key: "e-aws-reclaim",
        what: "instances taken away behind augur's back: failed hosts, Server.InternalError (AWS)",
        injected: format!("every 2nd instance, {reclaimed} seen"),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took,
    }
    .record();
    assert!(reclaimed >= 1, "{}", text(&out.stderr));

    let (w, out, took) = aws_study("noboot", n, &["--never-boot-every", "3"], |_| {}, &[]);
    ok(&out);
    let (done, lost, dup, launches) = aws_outcome(&w, "noboot", n);
    let timeouts = text(&out.stderr).matches("did not report within").count();
    Row {
        key: "f-aws-noboot",
        what:
            "instances that never boot: lost after the boot timeout, terminated, re-created (AWS)",
        injected: format!("every 3rd instance, {timeouts} timed out"),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took,
    }
    .record();
    assert!(timeouts >= 1, "{}", text(&out.stderr));
}

/// Machines that hang (their agent frozen: no heartbeat, the script never ends, its
/// timeout never enforced by the agent): lost after the heartbeat lease, the instance
/// terminated by the orchestrator, the trial re-created and completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_hung_machines() {
    let n = 6;
    let (w, out, took) = aws_study("hung", n, &["--hang-every", "2"], |_| {}, &[]);
    ok(&out);
    let err = text(&out.stderr);
    let hung = err.matches("no heartbeat for").count();
    let (done, lost, dup, launches) = aws_outcome(&w, "hung", n);
    Row {
        key: "j-aws-hung",
        what: "hung machines (agent frozen: no heartbeat, its script never ends): lost after the lease, terminated, re-created (AWS)",
        injected: format!("every 2nd instance, {hung} hung"),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took,
    }
    .record();
    assert!(hung >= 1, "{err}");
}

/// DynamoDB unreachable for a while: the orchestrator (and the agents) wait with
/// backoff and continue; unreachable past the backend deadline, it exits 3 and a
/// re-run completes the study.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_database_unreachable_for_a_while_then_past_the_deadline() {
    let n = 6;
    let w = aws_world("dark", n, 2, &[]);
    let started = Instant::now();
    let run = |deadline: &str| {
        w.spawn(
            &[
                &["run", "s.toml"][..],
                &RUN,
                &["--backend-deadline", deadline],
            ]
            .concat(),
        )
    };
    // Dark for 4 s while trials run; the deadline (30 s) is not reached.
    let mut child = run("30s");
    wait_for(Duration::from_secs(60), "trials running", || {
        (futures_lite(w.live_instances()) >= 2).then_some(())
    });
    w.proxy.add(Rule::new("dynamodb", "*", Fault::Refuse));
    std::thread::sleep(Duration::from_secs(4));
    w.proxy.clear();
    let status = augur_tests::wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "continues after the outage");
    let refused_1 = w
        .proxy
        .calls()
        .iter()
        .filter(|c| c.fault == Some(Fault::Refuse))
        .count();
    let (done, lost, dup, launches) = aws_outcome(&w, "dark", n);
    Row {
        key: "g-aws-dark",
        what: "DynamoDB unreachable for 4 s mid-study: waits with backoff, continues (AWS)",
        injected: format!("{refused_1} calls refused"),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took: started.elapsed(),
    }
    .record();

    // Past the deadline: exit 3, then a re-run completes (another study).
    let started = Instant::now();
    let body = std::fs::read_to_string(w.sb.path().join("s.toml")).unwrap_or_default();
    w.sb.write(
        "s.toml",
        &body.replace("name = \"dark\"", "name = \"dark2\""),
    );
    w.proxy.add(Rule::new("dynamodb", "*", Fault::Refuse));
    let mut child = run("3s");
    let status = augur_tests::wait_exit(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(3), "past the deadline: exit 3");
    w.proxy.clear();
    let mut child = run("30s");
    let status = augur_tests::wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "resumes");
    let (done, lost, dup, launches) = aws_outcome(&w, "dark2", n);
    Row {
        key: "h-aws-deadline",
        what: "DynamoDB unreachable past the backend deadline: exit 3, re-run resumes (AWS)",
        injected: "all calls refused for 3 s+".into(),
        trials: n,
        completed: done,
        launches,
        lost,
        duplicated: dup,
        took: started.elapsed(),
    }
    .record();
}

/// The disk fills up (log writes fail with ENOSPC): the trial still ends in its true
/// state, with the write error said in its record; the other trials are untouched.
#[test]
fn disk_full_for_a_trial_log() {
    let sb = Sandbox::new();
    let n = 3;
    sb.write(
        "s.toml",
        &format!("name = \"full\"\nobjective = {{ metric = \"v\" }}\ntrials = {n}\nparallel = 1\n[run]\nscript = 'for i in $(seq 1 50); do echo line $i; done; echo \"METRICS: v=$AUGUR_TRIAL\"'\n"),
    );
    // Trial 2's log file is /dev/full: every write to it fails with ENOSPC.
    let logs = sb.path().join(".augur/logs/full");
    std::fs::create_dir_all(&logs).expect("logs dir");
    std::os::unix::fs::symlink("/dev/full", logs.join("2.1.log")).expect("symlink");
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend_from_slice(&FAST);
    let out = sb.augur(&args);
    ok(&out);
    let trials = sb.trials("full");
    let done = trials
        .iter()
        .filter(|t| t["state"] == "succeeded" && t["metrics"]["v"].as_f64() == t["id"].as_f64())
        .count();
    let shown = sb.show("full", 2);
    let last = shown["log_tail"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("No space left on device") && last.contains("the log is incomplete"),
        "the record says what happened to the log: {shown}"
    );
    assert!(
        shown["log_tail"].to_string().contains("METRICS: v=2"),
        "the last lines are kept in the record: {shown}"
    );
    // The other trials' logs are whole.
    let other = text(&sb.augur(&["logs", "full/1"]).stdout);
    assert!(
        other.contains("line 50") && other.contains("augur succeeded"),
        "{other}"
    );
    Row {
        key: "i-disk-full",
        what: "disk full: a trial's log writes fail with ENOSPC (local)",
        injected: "1 log on /dev/full".into(),
        trials: n,
        completed: done,
        launches: launches(&trials),
        lost: n - done,
        duplicated: 0,
        took: started.elapsed(),
    }
    .record();
}

/// Spot reclaims at three times the rate the other rows see: every spot instance is
/// reclaimed (its notice in the instance's metadata 1.5 s after its agent starts,
/// 2 s ahead, as EC2's two-minute warning scaled down), and a trial's first three
/// attempts run on spot. Each trial keeps its progress in `AUGUR_CHECKPOINT_DIR`:
/// every trial completes, and the steps run in all stay within the steps (N each)
/// plus what one sync interval (a heartbeat, 500 ms: 3 steps of 200 ms) can lose at
/// each reclaim, not 4 × N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_spot_reclaims_three_times_over_resume_from_checkpoints() {
    let (n, steps_each) = (3usize, 40u32);
    let mut w = World::new();
    let steps = w.sb.path().join("steps.txt");
    w.sb.write(
        "s.toml",
        &format!(
            "name = \"spot3x\"\nobjective = {{ metric = \"m\" }}\noracle = \"grid\"\nparallel = {n}\n[params]\nx = {{ values = [{}] }}\n{}[aws]\nimage = \"ami-12345678\"\nspot = true\nspot_fallback_after = 3\n",
            (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
            augur_tests::cloud::checkpointing_run(steps_each, &steps)
        ),
    );
    w.init();
    w.start_hypervisor_with(&augur_tests::cloud::SCALED_SPOT_NOTICE);
    let started = Instant::now();
    ok(&w.augur(&[&["run", "s.toml"][..], &RUN].concat()));
    let took = started.elapsed();
    let out = w.augur(&["trials", "spot3x", "--json"]);
    let trials: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let done = trials
        .iter()
        .filter(|t| t["state"] == "succeeded" && t["metrics"]["m"] == f64::from(steps_each))
        .count();
    let reclaims: u64 = trials
        .iter()
        .filter_map(|t| t["preemptions"].as_u64())
        .sum();
    let ran = std::fs::read_to_string(&steps).unwrap_or_default();
    let total = ran.lines().count();
    let bound = n * steps_each as usize + 3 * reclaims as usize;
    let instances = futures_lite(w.study_instances("spot3x")).len();
    let duplicated = futures_lite(w.duplicated("spot3x"));
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    Row {
        key: "j-aws-spot-3x",
        what: "spot reclaims three times over, with checkpoints: each trial resumes (AWS)",
        injected: format!(
            "{reclaims} reclaims; {total} steps run for {}",
            n * steps_each as usize
        ),
        trials: n,
        completed: done,
        launches: instances,
        lost: n - done,
        duplicated,
        took,
    }
    .record();
    assert_eq!(reclaims, 3 * n as u64, "{trials:?}");
    assert!(
        total <= bound,
        "{total} steps run, more than {bound} (N plus one sync interval per reclaim):\n{ran}"
    );
    // Without checkpoints it would have been about 4 × N.
    assert!(total < 2 * n * steps_each as usize, "{ran}");
}
