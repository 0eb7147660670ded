//! Instances kept warm (`run.reuse = "study"`) on the AWS path: the fake hypervisor
//! boots each instance's real user-data, and the agent that finished an attempt
//! reads the study's changes for the next one the orchestrator assigns it.
//!
//! And the bench of issue 18 (`warm_machines_bench`, ignored: `tests/bench/warm_machines.sh`).

use augur_tests::cloud::{futures_lite, World, RUN};
use augur_tests::{ok, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn study(name: &str, trials: u32, parallel: u32, reuse: &str, script: &str) -> String {
    format!(
        r#"
name = "{name}"
objective = {{ metric = "v" }}
oracle = "random"
trials = {trials}
parallel = {parallel}
[params]
x = {{ range = [0, 1] }}
[run]
max_attempts = 1
{reuse}
script = '{script}'
[aws]
image = "ami-12345678"
"#
    )
}

fn trials(w: &World, name: &str) -> Vec<Value> {
    let out = w.augur(&["trials", name, "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("trials json")
}

/// Each instance's attempts by their turn on it: `{instance: [turn, ...]}`.
fn turns(trials: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut by = BTreeMap::<String, Vec<u64>>::new();
    for t in trials {
        let m = t["machine"].as_str().unwrap_or("-").to_string();
        by.entry(m)
            .or_default()
            .push(t["machine_turn"].as_u64().unwrap_or(0));
    }
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// Six trials, two at a time, on instances kept warm: two instances run them all,
/// each attempt fenced and recorded with its machine and its turn on it (1, 2, 3 on
/// each machine, none twice), and when the study has no trial left the idle
/// instances are ended, not left to their keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_take_the_next_trials_of_their_study() {
    let mut w = World::new();
    let script = r#"sleep 1; echo "METRICS: v=$AUGUR_PARAM_X""#;
    let file = study(
        "warm",
        6,
        2,
        "reuse = \"study\"\nkeep_alive = \"30s\"",
        script,
    );
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    ok(&out);
    let ts = trials(&w, "warm");
    assert_eq!(ts.len(), 6);
    assert!(ts.iter().all(|t| t["state"] == "succeeded"), "{ts:?}");
    let launches = w.proxy.count("ec2", "RunInstances");
    let by = turns(&ts);
    assert!(launches <= 3, "{launches} launches for 6 trials: {by:?}");
    assert!(by.len() <= launches, "{by:?}");
    // Every machine's attempts are its 1st, 2nd, ...: none ran twice at once.
    for (m, turns) in &by {
        let want: Vec<u64> = (1..=turns.len() as u64).collect();
        assert_eq!(turns, &want, "{m}: {by:?}");
    }
    assert!(
        by.values().any(|t| t.len() >= 2),
        "no machine was reused: {by:?}"
    );
    assert_eq!(w.duplicated("warm").await, 0);
    wait_for(Duration::from_secs(20), "no instance left", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    // An instance whose agent powered itself off would say so: they were ended.
    let log = std::fs::read_to_string(w.sb.path().join("hypervisor.log")).unwrap_or_default();
    assert!(!log.contains("its boot script ended"), "{log}");
}

/// A warm instance reclaimed while it waits between two attempts (a failed host:
/// EC2 ends it with `Server.InternalError`, no notice): its study loses nothing and
/// runs nothing twice. An attempt already assigned to it, not taken, is a
/// preemption and runs elsewhere; the other instances keep taking trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_reclaimed_while_idle_loses_nothing() {
    let mut w = World::new();
    let script = r#"sleep 1; echo "METRICS: v=$AUGUR_PARAM_X""#;
    let file = study("idle", 8, 2, "reuse = \"study\"", script);
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor_with(&["--reclaim-idle", "2"]);
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let t0 = Instant::now();
    let out = w.augur(&args);
    let took = t0.elapsed();
    ok(&out);
    let log = std::fs::read_to_string(w.sb.path().join("hypervisor.log")).unwrap_or_default();
    assert!(log.contains("reclaimed while idle"), "{log}");
    let ts = trials(&w, "idle");
    let completed = ts.iter().filter(|t| t["state"] == "succeeded").count();
    let preempted: u64 = ts
        .iter()
        .map(|t| t["preemptions"].as_u64().unwrap_or(0))
        .sum();
    let launches = w.proxy.count("ec2", "RunInstances");
    assert!(
        launches < 8,
        "{launches} launches: warm instances were not reused"
    );
    let duplicated = w.duplicated("idle").await;
    assert_eq!(duplicated, 0);
    augur_tests::table::Row {
        key: "o-ec2-warm-idle",
        what: "a warm instance reclaimed while idle between two attempts (AWS, run.reuse = \"study\")",
        injected: format!("1 idle instance reclaimed (Server.InternalError); {preempted} attempt(s) assigned to it preempted"),
        trials: 8,
        completed,
        launches,
        lost: 8 - completed,
        duplicated,
        took,
    }
    .record();
}

/// A study of `trials` trials asking `gpus` GPUs each of instances of `ty`, kept
/// warm; each trial reports its first GPU, how many it sees, how many the
/// instance's `nvidia-smi -L` lists, and when it ran (ms).
fn gpu_study(name: &str, trials: u32, gpus: u32, ty: &str) -> String {
    let script = r#"t0=$(date +%s%3N); sleep 3; first=${CUDA_VISIBLE_DEVICES%%,*}; n=$(echo "$CUDA_VISIBLE_DEVICES" | tr , "\n" | wc -l); smi=$(nvidia-smi -L | wc -l); echo "METRICS: v=$AUGUR_PARAM_X,first=$first,n=$n,smi=$smi,t0=$t0,t1=$(date +%s%3N)""#;
    format!(
        r#"
name = "{name}"
objective = {{ metric = "v" }}
oracle = "random"
trials = {trials}
parallel = 2
[params]
x = {{ range = [0, 1] }}
[run]
max_attempts = 1
gpus = {gpus}
reuse = "study"
keep_alive = "30s"
script = '{script}'
[aws]
image = "ami-12345678"
instance_type = "{ty}"
"#
    )
}

/// 8 trials of `run.gpus = 2` on a 4-GPU type (g5.12xlarge, as EC2's
/// `DescribeInstanceTypes` says): one instance runs them all, two at a time, each
/// on GPUs of its own (from each trial's own `CUDA_VISIBLE_DEVICES` and times), and
/// each attempt pays half the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_trials_share_one_warm_instance_on_gpus_of_their_own() {
    let mut w = World::new();
    w.sb.write("s.toml", &gpu_study("gpus", 8, 2, "g5.12xlarge"));
    w.init();
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    ok(&out);
    let ts = trials(&w, "gpus");
    assert_eq!(ts.len(), 8);
    assert!(ts.iter().all(|t| t["state"] == "succeeded"), "{ts:?}");
    let machines: Vec<&str> = ts.iter().filter_map(|t| t["machine"].as_str()).collect();
    assert_eq!(
        w.proxy.count("ec2", "RunInstances"),
        1,
        "one instance for the study: {machines:?}"
    );
    let metric = |t: &Value, m: &str| t["metrics"][m].as_f64().unwrap_or(-1.0);
    let mut spans = Vec::new();
    for t in &ts {
        let machine = t["machine"].as_str().unwrap_or("-");
        let (first, n, smi) = (metric(t, "first"), metric(t, "n"), metric(t, "smi"));
        assert_eq!((n, smi), (2.0, 4.0), "trial {}: {t}", t["id"]);
        // Slot 0 is the instance and has GPUs 0,1; slot 1 (`i-.../1`) has 2,3.
        let slot1 = machine.ends_with("/1");
        assert_eq!(first, if slot1 { 2.0 } else { 0.0 }, "{machine}: {t}");
        spans.push((metric(t, "t0"), metric(t, "t1"), first));
    }
    // At most two at once: at each start, the trials running then.
    for a in &spans {
        let at_once = spans.iter().filter(|b| b.0 <= a.0 && a.0 < b.1).count();
        assert!(at_once <= 2, "{at_once} trials at once: {spans:?}");
    }
    let mut overlapped = 0;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if b.0 < a.1 && a.0 < b.1 {
                assert_ne!(a.2, b.2, "two trials at once on GPUs {}: {spans:?}", a.2);
                overlapped += 1;
            }
        }
    }
    assert!(overlapped > 0, "never two at once: {spans:?}");
    // Each attempt was billed for its half of the instance.
    for t in &ts {
        let share = t["billing"]["share"].as_f64();
        assert_eq!(share, Some(0.5), "{t}");
    }
    eprintln!(
        "8 trials of 2 GPUs on one g5.12xlarge, {overlapped} overlapping pairs, GPU sets disjoint"
    );
    assert_eq!(w.duplicated("gpus").await, 0);
    wait_for(Duration::from_secs(20), "no instance left", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// `augur stop` of a GPU study on AWS, while its trials run on an instance's
/// slots: the stop asks EC2 about the study's own instance types (not its own, it
/// launches nothing) and cancels both slots' trials; the instance is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_study_on_aws_stops_with_its_slots_running() {
    let mut w = World::new();
    let text = gpu_study("gpustop", 4, 2, "g5.12xlarge").replace("sleep 3", "sleep 600");
    w.sb.write("s.toml", &text);
    w.init();
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let mut run = w.spawn(&args);
    wait_for(Duration::from_secs(240), "two trials running", || {
        // Until `augur run` records the study, there is none to list.
        let out = w.augur(&["trials", "gpustop", "--json"]);
        let ts: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        let running = ts.iter().filter(|t| t["state"] == "running").count();
        (running == 2).then_some(())
    });
    ok(&w.augur(&["stop", "gpustop"]));
    let status = run.wait().expect("augur run");
    assert!(status.code().is_some(), "{status:?}");
    let ts = trials(&w, "gpustop");
    assert!(
        ts.iter().all(|t| t["state"] == "cancelled"),
        "{:?}",
        ts.iter().map(|t| &t["state"]).collect::<Vec<_>>()
    );
    wait_for(Duration::from_secs(60), "no instance left", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// A trial asking 3 GPUs of a 2-GPU type is refused before anything is recorded
/// or launched, naming the type.
#[test]
fn more_gpus_than_the_instance_type_has_is_refused_with_exit_2() {
    let w = World::new();
    w.sb.write("s.toml", &gpu_study("big", 2, 3, "g7e.12xlarge"));
    w.init();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("instance type g7e.12xlarge has 2") && err.contains("3 GPU(s)"),
        "{err}"
    );
    assert_eq!(w.proxy.count("ec2", "RunInstances"), 0);
    let listed = w.augur(&["trials", "big", "--json"]);
    assert_ne!(listed.status.code(), Some(0), "the study was recorded");
}

/// Reuse is refused where it cannot work, before anything is launched.
#[test]
fn keep_alive_without_reuse_is_refused_with_exit_2() {
    let w = World::new();
    let file = study(
        "nokeep",
        2,
        1,
        "reuse = \"attempt\"\nkeep_alive = \"30s\"",
        "true",
    );
    w.sb.write("s.toml", &file);
    let out = w.augur(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run.keep_alive"), "{err}");
}

/// What one mode of the bench cost.
struct Measured {
    wall: Duration,
    machine_s: f64,
    launches: usize,
    writes_per_trial: f64,
}

/// One study of the bench in a world of its own: `trials` trials of `trial_s`
/// seconds, parallel 4, instances booting in `boot_s` seconds.
async fn bench_mode(reuse: &str, trials: u32, trial_s: u32, boot_s: u32) -> Measured {
    let mut w = World::new();
    let script = format!(r#"sleep {trial_s}; echo "METRICS: v=$AUGUR_PARAM_X""#);
    let file = study("bench", trials, 4, reuse, &script);
    w.sb.write("s.toml", &file);
    w.init();
    let delay = (boot_s * 1000).to_string();
    w.start_hypervisor_with(&["--boot-delay-ms", &delay]);
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let t0 = Instant::now();
    let mut run = w.spawn(&args);
    // Machine-seconds: the instances alive, counted every second until none is
    // left and the study is done.
    let (mut machine_s, mut done, mut wall) = (0.0, false, Duration::ZERO);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let live = w.live_instances().await;
        machine_s += live as f64;
        if !done {
            done = run.try_wait().expect("wait").is_some();
            wall = t0.elapsed();
        }
        if done && live == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "the bench study hangs"
        );
    }
    let out = run.wait_with_output().expect("augur");
    ok(&out);
    let writes = [
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "BatchWriteItem",
    ]
    .iter()
    .map(|op| w.proxy.count("dynamodb", op))
    .sum::<usize>();
    Measured {
        wall,
        machine_s,
        launches: w.proxy.count("ec2", "RunInstances"),
        writes_per_trial: writes as f64 / trials as f64,
    }
}

/// Issue 18's bench: 20 trials of 30 s, parallel 4, instances that take 40 s to
/// boot, one instance per attempt against instances kept warm, measured in the
/// same run. Prints wall time, machine-seconds (each instance from its launch to
/// its end), RunInstances calls and DynamoDB writes per trial for both, and the
/// ratio of machine-seconds (target: >= 1.5 fewer when warm, writes per trial no
/// higher). `BENCH_SCALE` divides every duration (default 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a bench of about ten minutes: tests/bench/warm_machines.sh"]
async fn warm_machines_bench() {
    let scale: u32 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (trial_s, boot_s) = (30 / scale, 40 / scale);
    let single = bench_mode("reuse = \"attempt\"", 20, trial_s, boot_s).await;
    let warm = bench_mode("reuse = \"study\"", 20, trial_s, boot_s).await;
    for (name, m) in [("single-use", &single), ("warm", &warm)] {
        println!(
            "{name:>10}: wall {:.1} s, machine-seconds {:.0}, RunInstances {}, DynamoDB writes per trial {:.2}",
            m.wall.as_secs_f64(),
            m.machine_s,
            m.launches,
            m.writes_per_trial
        );
    }
    println!(
        "20 trials of {trial_s} s, parallel 4, boot {boot_s} s: machine-seconds single-use/warm = {:.2} (target >= 1.5); writes per trial warm/single-use = {:.2} (target <= 1.0); wall single-use/warm = {:.2}",
        single.machine_s / warm.machine_s,
        warm.writes_per_trial / single.writes_per_trial,
        single.wall.as_secs_f64() / warm.wall.as_secs_f64()
    );
}
