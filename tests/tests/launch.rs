//! The launch protocol (DESIGN, "The launch protocol") on EC2's own terms, played by
//! the stand-in in front of the emulator: a `ClientToken` repeated answers with the
//! first call's instance, also after it ended
//! (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>),
//! instances end with their documented state reasons, and the fake hypervisor runs
//! each instance's real boot script. Ticks are `augur tick` processes, fresh each
//! time, as Lambda invocations are; nothing a tick knows outlives it but the store.

use augur_tests::cloud::{futures_lite, World};
use augur_tests::faults::{Fault, Rule};
use augur_tests::{ok, signal, text, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A study of `n` one-second trials; each script appends "TRIAL ATTEMPT" to `runs`.
fn write_study(w: &World, name: &str, n: usize, parallel: u32, image: &str, runs: &Path) {
    let xs: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    w.sb.write(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
objective = {{ metric = "v" }}
oracle = "grid"
parallel = {parallel}
[params]
x = {{ values = [{xs}] }}
[run]
max_attempts = 3
script = 'sleep 1; echo "$AUGUR_TRIAL $AUGUR_ATTEMPT" >> {runs}; echo "METRICS: v=$AUGUR_PARAM_X"'
[aws]
image = "{image}"
"#,
            xs = xs.join(", "),
            runs = runs.display()
        ),
    );
}

/// `augur submit` with 1 s heartbeats and the cloud's boot timeout (10 minutes: no
/// healthy instance is ever lost to a slow machine here).
fn submit(w: &World, name: &str) {
    ok(&w.augur(&[
        "submit",
        &format!("{name}.toml"),
        "--heartbeat",
        "1s",
        "--heartbeat-timeout",
        "30s",
        "--backoff-base",
        "200ms",
    ]));
}

fn trials(w: &World, study: &str) -> Vec<Value> {
    serde_json::from_slice(&w.augur(&["trials", study, "--json"]).stdout).unwrap_or_default()
}

fn studies(w: &World) -> Vec<Value> {
    serde_json::from_slice(&w.augur(&["studies", "--json"]).stdout).unwrap_or_default()
}

fn study_field(w: &World, study: &str, field: &str) -> Value {
    studies(w)
        .into_iter()
        .find(|s| s["name"] == study)
        .map(|s| s[field].clone())
        .unwrap_or(Value::Null)
}

/// Instances EC2 made for `study` (the emulator's, ended ones too): one per
/// launch, however often a token was repeated.
fn instances(w: &World, study: &str) -> usize {
    futures_lite(w.study_instances(study)).len()
}

/// Every trial of `n` ran its script once, at attempt 1.
fn ran_once_each(runs: &Path, n: usize) {
    let lines = std::fs::read_to_string(runs).unwrap_or_default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.lines() {
        *seen.entry(l).or_default() += 1;
    }
    assert!(
        seen.values().all(|c| *c == 1),
        "a script ran twice: {lines}"
    );
    assert_eq!(seen.len(), n, "every trial ran once: {lines}");
    assert!(seen.keys().all(|l| l.ends_with(" 1")), "{lines}");
}

fn spawn_tick(w: &World, study: &str, limit: &str) -> Child {
    w.spawn(&["tick", "--study", study, "--limit", limit])
}

/// Ticks of `limit`, `at_once` at a time, until the study is done or `rounds` pass;
/// the rounds it took.
fn tick_until_done(w: &World, study: &str, limit: &str, at_once: usize, rounds: usize) -> usize {
    for round in 1..=rounds {
        let ticks: Vec<Child> = (0..at_once).map(|_| spawn_tick(w, study, limit)).collect();
        for t in ticks {
            let out = t.wait_with_output().expect("tick");
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{}",
                text(&out.stderr)
            );
        }
        if study_field(w, study, "state") == "done" {
            return round;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "`{study}` not done after {rounds} rounds: {:#?}",
        trials(w, study)
    );
}

fn all_succeeded_at_first_attempt(w: &World, study: &str, n: usize) {
    let all = trials(w, study);
    assert_eq!(all.len(), n, "{all:#?}");
    for t in &all {
        assert_eq!(
            (&t["state"], &t["attempt"]),
            (&"succeeded".into(), &1.into()),
            "{t:#}"
        );
    }
}

/// Two ticks at a time, each with 5 s (a Lambda with little time left), while every
/// price lookup takes 4 s: each launch is recorded before its price is asked, so no
/// tick's deadline separates an instance from its record, and no instance's agent
/// finds its attempt gone. Six trials, six instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_five_second_ticks_finish_every_trial_with_one_instance_each() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.proxy.ec2().set_price("t3.micro", None, Some(0.0104));
    w.proxy.add(Rule::new(
        "AWSPriceListService",
        "GetProducts",
        Fault::Latency(Duration::from_secs(4)),
    ));
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "tight", 6, 3, "ami-12345678", &runs);
    submit(&w, "tight");
    let started = Instant::now();
    let rounds = tick_until_done(&w, "tight", "5s", 2, 60);
    all_succeeded_at_first_attempt(&w, "tight", 6);
    ran_once_each(&runs, 6);
    assert_eq!(instances(&w, "tight"), 6, "one instance a trial");
    // The price asked after the record reached it, when a tick had the time.
    let priced = trials(&w, "tight")
        .iter()
        .filter(|t| t["billing"]["price_from"] == "price list")
        .count();
    eprintln!(
        "6 trials in {rounds} rounds of two 5 s ticks ({:.0} s); {priced} priced from the price list; {} RunInstances asked",
        started.elapsed().as_secs_f64(),
        w.proxy.count("ec2", "RunInstances")
    );
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// An image whose instances all end before their agent starts, driven by ticks
/// alone: the failed boots are counted with the study, so that fresh tick
/// processes stop it as `augur run` does, after at most 6 launches in all, with
/// the reason in its record (`augur studies`, `augur show`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_image_under_ticks_stops_the_study_with_the_reason() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor_with(&["--bare-image", "ami-0bare0001"]);
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "broken", 4, 2, "ami-0bare0001", &runs);
    submit(&w, "broken");
    let start = Instant::now();
    while study_field(&w, "broken", "state") != "stopped" {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "not stopped: {:#?}",
            trials(&w, "broken")
        );
        let out = spawn_tick(&w, "broken", "20s")
            .wait_with_output()
            .expect("tick");
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let launched = instances(&w, "broken");
    assert!((3..=6).contains(&launched), "{launched} launches");
    let note = study_field(&w, "broken", "note");
    let note = note.as_str().unwrap_or_default();
    assert!(
        note.contains("machines ended before their agent reported")
            && note.contains("Client.InstanceInitiatedShutdown"),
        "{note}"
    );
    assert_eq!(study_field(&w, "broken", "submitted"), false);
    let listing = text(&w.augur(&["studies"]).stdout);
    assert!(listing.contains("broken: stopped: its first"), "{listing}");
    let shown = text(&w.augur(&["show", "broken/1"]).stdout);
    assert!(shown.contains("study      stopped: its first"), "{shown}");
    // Later ticks launch nothing more: the study left the tick's list.
    let out = spawn_tick(&w, "broken", "10s")
        .wait_with_output()
        .expect("tick");
    ok(&out);
    assert_eq!(instances(&w, "broken"), launched);
    // Submitted again, the bounds start afresh (and stop it again).
    submit(&w, "broken");
    assert_eq!(study_field(&w, "broken", "state"), "active");
    assert_eq!(study_field(&w, "broken", "note"), Value::Null);
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// Where a tick is killed (SIGKILL, as a Lambda past its timeout is) in the middle of
/// a launch: each is a call the proxy holds until the kill. Before the trial's first
/// write is applied; before RunInstances reaches EC2; after EC2 made the instance,
/// before the answer; after the answer, before the record names the machine; after
/// it, while the price is asked.
fn kill_points() -> Vec<(&'static str, Rule)> {
    let hold = Duration::from_secs(60);
    vec![
        (
            "before the trial's first write",
            Rule::new("dynamodb", "TransactWriteItems", Fault::Latency(hold)).first(1),
        ),
        (
            "before RunInstances",
            Rule::new("ec2", "RunInstances", Fault::Latency(hold)).first(1),
        ),
        (
            "after RunInstances applied, before its answer",
            Rule::new("ec2", "RunInstances", Fault::HoldAfterApply(hold)).first(1),
        ),
        (
            "before the record names the machine",
            Rule::new("dynamodb", "PutItem", Fault::Latency(hold))
                .when(r#"\"machine\":\"i-"#)
                .when(r#"\"state\":\"starting\""#)
                .first(1),
        ),
        (
            "while the price is asked",
            Rule::new("AWSPriceListService", "GetProducts", Fault::Latency(hold)).first(1),
        ),
    ]
}

/// A tick SIGKILLed at each step of a launch loses nothing: later ticks (each a fresh
/// process) finish the study with one instance per trial, each trial at its first
/// attempt, no script run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_killed_at_each_step_of_a_launch_loses_nothing() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.proxy.ec2().set_price("t3.micro", None, Some(0.0104));
    for (i, (step, rule)) in kill_points().into_iter().enumerate() {
        let name = format!("kill{i}");
        let runs = w.sb.path().join(format!("runs{i}.txt"));
        write_study(&w, &name, 2, 2, "ami-12345678", &runs);
        submit(&w, &name);
        let (service, operation) = (rule.service.clone(), rule.operation.clone());
        let before = w.proxy.count(&service, &operation);
        w.proxy.add(rule);
        let mut tick = spawn_tick(&w, &name, "4s");
        wait_for(Duration::from_secs(60), step, || {
            let held = w
                .proxy
                .calls()
                .into_iter()
                .skip(before)
                .any(|c| c.service == service && c.operation == operation && c.fault.is_some());
            held.then_some(())
        });
        signal(tick.id(), libc::SIGKILL);
        let _ = tick.wait();
        w.proxy.clear();
        let rounds = tick_until_done(&w, &name, "10s", 1, 60);
        all_succeeded_at_first_attempt(&w, &name, 2);
        ran_once_each(&runs, 2);
        assert_eq!(
            instances(&w, &name),
            2,
            "killed {step}: one instance a trial"
        );
        eprintln!("killed {step}: done {rounds} ticks later");
    }
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}
