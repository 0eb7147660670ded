//! The serverless control plane end to end, on the emulator: `augur submit`, then
//! reconcile ticks alone drive the study. Ticks come from the real `augur-lambda`
//! binary polling a local Lambda Runtime API (two function instances at once, as
//! Lambda scales out), from `augur tick` processes (killed half-way), and from the
//! handler called as a plain async function.

use augur::app::backend::{AwsArgs, Backend};
use augur::app::tick::{handle, TickReport};
use augur_tests::cloud::{futures_lite, World};
use augur_tests::faults::{Fault, Rule};
use augur_tests::lambda::RuntimeApi;
use augur_tests::{bin_dir, ok, signal, text, wait_for};
use clap::Parser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A study of `n` grid points whose script appends "TRIAL ATTEMPT" to `runs`.
fn write_study(w: &World, name: &str, n: usize, parallel: u32, runs: &Path) {
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
max_attempts = 5
script = 'sleep 1; echo "$AUGUR_TRIAL $AUGUR_ATTEMPT" >> {runs}; echo "METRICS: v=$AUGUR_PARAM_X"'
[aws]
image = "ami-12345678"
"#,
            xs = xs.join(", "),
            runs = runs.display()
        ),
    );
}

/// Every (trial, attempt) ran its script at most once, and every trial of `n` ran.
fn ran_once_each(runs: &Path, n: usize) {
    let lines = std::fs::read_to_string(runs).unwrap_or_default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.lines() {
        *seen.entry(l).or_default() += 1;
    }
    assert!(
        seen.values().all(|c| *c == 1),
        "an attempt ran twice: {lines}"
    );
    let mut trials: Vec<&str> = seen
        .keys()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    trials.dedup();
    assert_eq!(trials.len(), n, "every trial ran: {lines}");
}

fn trials(w: &World, study: &str) -> Vec<Value> {
    let out = w.augur(&["trials", study, "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("trials json")
}

fn study_state(w: &World, study: &str) -> String {
    let out = w.augur(&["studies", "--json"]);
    ok(&out);
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("studies json");
    all.iter()
        .find(|s| s["name"] == study)
        .and_then(|s| s["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

/// Whether `augur studies` shows the study as submitted to the serverless tick.
fn submitted(w: &World, study: &str) -> bool {
    let out = w.augur(&["studies", "--json"]);
    ok(&out);
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("studies json");
    all.iter()
        .find(|s| s["name"] == study)
        .and_then(|s| s["submitted"].as_bool())
        .unwrap_or_else(|| panic!("no `submitted` for {study}: {all:?}"))
}

fn outcome(report: &Value, study: &str) -> Option<String> {
    report["studies"]
        .as_array()?
        .iter()
        .find(|s| s["study"] == study)
        .and_then(|s| s["outcome"].as_str())
        .map(str::to_string)
}

fn init(w: &World) {
    w.init();
}

/// The real `augur-lambda`, polling `api` as a Lambda instance does.
struct Function(Child);

impl Function {
    fn start(w: &World, api: &RuntimeApi, log: &Path) -> Function {
        let log = std::fs::File::create(log).expect("log");
        let mut c = Command::new(bin_dir().join("augur-lambda"));
        w.tick_env(&mut c)
            .env_remove("AUGUR_BACKEND")
            .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", "augur-tick")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/augur-tick")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Function(c.spawn().expect("augur-lambda"))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DynamoDB stream batch as Lambda delivers it: trial `id` of `study` moved.
/// A stream record of a trial's change, keyed as the store keys trials (in their
/// study's `trials#` partition).
fn stream_event(study: &str, id: u64, old: &str, new: &str) -> Value {
    let pk = format!("trials#{study}");
    let image = |state: &str| json!({"pk": {"S": pk}, "sk": {"S": format!("trial#{id:010}")}, "state": {"S": state}});
    json!({"Records": [{
        "eventID": "1",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"pk": {"S": pk}, "sk": {"S": format!("trial#{id:010}")}},
            "OldImage": image(old),
            "NewImage": image(new),
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    }]})
}

const SCHEDULE: &str = r#"{"version":"0","id":"1","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-25T12:00:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/augur-tick"],"detail":{}}"#;

/// Submitted, then driven by nothing but Lambda invocations: the schedule every
/// second, to two function instances at once, plus stream batches. The study runs to
/// the end, no trial is launched twice, and the study leaves the tick's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_study_runs_to_completion_on_lambda_ticks_alone() {
    let mut w = World::new();
    init(&w);
    w.start_hypervisor();
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "srv", 8, 3, &runs);
    let out = w.augur(&[
        "submit",
        "srv.toml",
        "--heartbeat",
        "1s",
        "--heartbeat-timeout",
        "20s",
        "--boot-timeout",
        "60s",
    ]);
    ok(&out);
    assert!(text(&out.stderr).contains("submitted study `srv`"));
    assert_eq!(study_state(&w, "srv"), "active");
    assert!(submitted(&w, "srv"));
    assert!(
        trials(&w, "srv").is_empty(),
        "submit launches nothing itself"
    );

    let api = RuntimeApi::start();
    let _f1 = Function::start(&w, &api, &w.sb.path().join("fn1.log"));
    let _f2 = Function::start(&w, &api, &w.sb.path().join("fn2.log"));
    let schedule: Value = serde_json::from_str(SCHEDULE).expect("schedule event");
    let start = Instant::now();
    let mut reports: Vec<Value> = Vec::new();
    let mut invocations = 0;
    'ticks: while start.elapsed() < Duration::from_secs(120) {
        // Two overlapping invocations (the schedule and a stream batch, say).
        let a = api.invoke_async(schedule.clone(), Duration::from_secs(15));
        let b = if invocations % 2 == 0 {
            api.invoke_async(schedule.clone(), Duration::from_secs(15))
        } else {
            api.invoke_async(
                stream_event("srv", 1, "running", "succeeded"),
                Duration::from_secs(15),
            )
        };
        invocations += 2;
        for id in [a, b] {
            let r = api
                .wait(&id, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("the function failed: {e}"));
            if outcome(&r, "srv").as_deref() == Some("done") {
                reports.push(r);
                break 'ticks;
            }
            reports.push(r);
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    let all = trials(&w, "srv");
    assert_eq!(all.len(), 8, "{all:?}");
    assert!(all.iter().all(|t| t["state"] == "succeeded"), "{all:?}");
    assert!(all.iter().all(|t| t["attempt"] == 1), "{all:?}");
    assert_eq!(study_state(&w, "srv"), "done");
    ran_once_each(&runs, 8);
    let launches = w.proxy.count("ec2", "RunInstances");
    assert_eq!(launches, 8, "one launch per trial, never two");
    let held = reports
        .iter()
        .filter(|r| outcome(r, "srv").as_deref() == Some("held"))
        .count();
    eprintln!(
        "{invocations} invocations in {:.1}s; {held} found the lease held by the other",
        start.elapsed().as_secs_f64()
    );
    // Done: the study left the tick's list.
    let r = api
        .invoke(schedule.clone(), Duration::from_secs(15))
        .expect("tick");
    assert_eq!(r["studies"], json!([]), "{r}");
    assert!(!submitted(&w, "srv"), "withdrawn when done");
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    aws: AwsArgs,
}

/// The handler's context for this world, as `augur-lambda` builds it from its
/// environment (the SDK configured for the proxy in front of the emulator).
async fn ctx(w: &World) -> Backend {
    let stack = w.stack.get().expect("the stack deployed");
    let args = Args::try_parse_from([
        "augur-lambda",
        "--backend",
        "aws",
        "--table",
        &w.table,
        "--bucket",
        "augur-e2e",
        "--agent-sha256",
        augur_tests::agent_sha256(),
        // The stack's, as the Lambda's environment gives them.
        "--security-groups",
        &stack.security_group,
        "--instance-profile",
        &stack.instance_profile,
        "--launch-template",
        &stack.launch_template,
    ])
    .expect("args");
    let sdk = augur_aws::sdk_config(&augur_aws::AwsOptions {
        endpoint: Some(w.proxy.endpoint.clone()),
        region: Some("us-east-1".into()),
        // The tick's role, as the Lambda runs under it.
        credentials: Some((augur_tests::iam::enforce::TICK_KEY.into(), "test".into())),
        ..Default::default()
    })
    .await;
    Backend {
        layout: augur_store::Layout::new(w.sb.path().join("lambda-tmp")),
        aws: args.aws,
        sdk: tokio::sync::OnceCell::new_with(Some(sdk)),
    }
}

fn row<'r>(r: &'r TickReport, study: &str) -> &'r augur::app::tick::StudyTick {
    r.studies
        .iter()
        .find(|s| s.study == study)
        .unwrap_or_else(|| panic!("no row for {study}: {r:?}"))
}

/// The handler as a plain async function: schedule and stream events, events that need
/// no decision, two ticks at once (one acts, the other finds the lease held), a tick
/// with no time left, and a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_answers_schedule_and_stream_events() {
    let w = World::new();
    init(&w);
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "hand", 6, 2, &runs);
    ok(&w.augur(&["submit", "hand.toml", "--boot-timeout", "10m"]));
    // A study run in the foreground elsewhere is not the tick's business.
    write_study(&w, "other", 2, 1, &runs);
    let ctx = ctx(&w).await;
    let later = || Instant::now() + Duration::from_secs(30);
    let schedule: Value = serde_json::from_str(SCHEDULE).expect("schedule event");

    // Heartbeats and the driver's own writes: nothing to do, nothing read.
    let before = w.proxy.calls().len();
    let quiet = json!({"Records": [
        stream_event("hand", 1, "running", "running")["Records"][0],
        stream_event("hand", 2, "pending", "starting")["Records"][0],
    ]});
    let r = handle(&ctx, &quiet, later(), "t0").await.expect("tick");
    assert_eq!(r.trigger, "nothing");
    assert!(r.studies.is_empty());
    assert_eq!(w.proxy.calls().len(), before, "no call for a quiet batch");
    // A change in a study nobody submitted.
    let r = handle(
        &ctx,
        &stream_event("other", 1, "running", "failed"),
        later(),
        "t0",
    )
    .await
    .expect("tick");
    assert_eq!(r.trigger, "changes");
    assert!(r.studies.is_empty(), "{r:?}");

    // Two ticks at once: one holds the lease and launches; the other stands aside.
    let (a, b) = tokio::join!(
        handle(&ctx, &schedule, later(), "t1"),
        handle(&ctx, &schedule, later(), "t2")
    );
    let (a, b) = (a.expect("t1"), b.expect("t2"));
    let mut outcomes = vec![row(&a, "hand").outcome, row(&b, "hand").outcome];
    outcomes.sort();
    assert_eq!(outcomes, ["held", "waiting"], "{a:?} {b:?}");
    assert_eq!(row(&a, "hand").launched + row(&b, "hand").launched, 2);
    assert_eq!(w.proxy.count("ec2", "RunInstances"), 2);
    // The lease was given back: the next tick acts (nothing to launch: slots full).
    let before = w.proxy.calls().len();
    let r = handle(
        &ctx,
        &stream_event("hand", 1, "running", "succeeded"),
        later(),
        "t3",
    )
    .await
    .expect("tick");
    assert_eq!(row(&r, "hand").outcome, "waiting");
    assert_eq!(row(&r, "hand").launched, 0);
    let calls = &w.proxy.calls()[before..];
    let count = |svc: &str| calls.iter().filter(|c| c.service == svc).count();
    eprintln!(
        "a tick with nothing to do: {} DynamoDB calls, {} EC2 calls",
        count("dynamodb"),
        count("ec2")
    );
    assert_eq!(count("ec2"), 1, "one listing of the study's instances");
    // No time left: skipped, nothing done.
    let r = handle(&ctx, &schedule, Instant::now(), "t4")
        .await
        .expect("tick");
    assert_eq!(row(&r, "hand").outcome, "skipped");

    // Stopped: the instances end, and the study leaves the tick's list.
    ok(&w.augur(&["stop", "hand"]));
    let r = handle(&ctx, &schedule, later(), "t5").await.expect("tick");
    assert_eq!(row(&r, "hand").outcome, "stopped");
    let r = handle(&ctx, &schedule, later(), "t6").await.expect("tick");
    assert!(r.studies.is_empty(), "{r:?}");
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    // Submitting again resumes it.
    ok(&w.augur(&["submit", "hand.toml"]));
    let r = handle(&ctx, &schedule, later(), "t7").await.expect("tick");
    assert_eq!(row(&r, "hand").outcome, "waiting");
    assert_eq!(row(&r, "hand").launched, 2);
}

/// The most memory an `augur tick` process took (KB): what a cold Lambda tick needs
/// before its warm caches grow (see `augur-sim --serverless` for those).
static TICK_PEAK_KB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn tick(w: &World, limit: &str) -> Value {
    let (out, kb) = w.augur_peak(&["tick", "--limit", limit]);
    TICK_PEAK_KB.fetch_max(kb.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("tick json")
}

/// A tick killed in the middle of its launches: the next tick finds the lease still
/// held (until the dead tick's deadline), then a later one finishes the study. No
/// trial runs twice and no instance is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_killed_half_way_is_finished_by_the_next() {
    let mut w = World::new();
    init(&w);
    w.start_hypervisor();
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "kill", 4, 4, &runs);
    ok(&w.augur(&[
        "submit",
        "kill.toml",
        "--heartbeat",
        "1s",
        "--heartbeat-timeout",
        "10s",
        "--backoff-base",
        "100ms",
    ]));
    // Slow launches, so the kill lands between them.
    w.proxy.add(
        Rule::new(
            "ec2",
            "RunInstances",
            Fault::Latency(Duration::from_millis(1500)),
        )
        .first(4),
    );
    let mut child = w.spawn(&["tick", "--limit", "8s"]);
    wait_for(
        Duration::from_secs(20),
        "the second launch under way",
        || (w.proxy.count("ec2", "RunInstances") >= 2).then_some(()),
    );
    signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    let r = tick(&w, "8s");
    assert_eq!(
        outcome(&r, "kill").as_deref(),
        Some("held"),
        "the dead tick's lease lasts to its deadline: {r}"
    );
    let start = Instant::now();
    let mut outcomes = Vec::new();
    loop {
        let r = tick(&w, "8s");
        let o = outcome(&r, "kill");
        outcomes.push(o.clone().unwrap_or_default());
        if o.as_deref() == Some("done") {
            break;
        }
        assert_ne!(
            o.as_deref(),
            Some("stopped"),
            "the study stopped: {r}; refused by IAM: {:?}; trials: {:?}",
            w.denied().iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            trials(&w, "kill")
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not done: {outcomes:?} {:?}",
            trials(&w, "kill")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let all = trials(&w, "kill");
    assert!(all.iter().all(|t| t["state"] == "succeeded"), "{all:?}");
    ran_once_each(&runs, 4);
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    eprintln!(
        "after the kill: {} tick(s) to done ({:.1}s): {outcomes:?}; an `augur tick` process's peak RSS: {:.1} MB",
        outcomes.len(),
        start.elapsed().as_secs_f64(),
        TICK_PEAK_KB.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
}

/// `augur run` on a study whose lease another driver holds (a tick, here a holder that
/// went silent): it follows, says so, takes over when the lease expires, and runs the
/// study to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn augur_run_follows_the_lease_holder_then_takes_over() {
    let mut w = World::new();
    init(&w);
    w.start_hypervisor();
    let runs = w.sb.path().join("runs.txt");
    write_study(&w, "both", 3, 3, &runs);
    ok(&w.augur(&["submit", "both.toml", "--heartbeat", "1s"]));
    let ctx = ctx(&w).await;
    let store = ctx.store().await.expect("store");
    let now = augur_store::now_ms();
    let lease = store
        .take_lease("both", "lambda:gone", now, now + 4_000, 0)
        .await
        .expect("lease");
    assert!(lease.held_by("lambda:gone"));
    let start = Instant::now();
    let out = w.augur(&["run", "both.toml", "--heartbeat", "1s"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("is being driven by lambda:gone"),
        "it said whom it follows: {err}"
    );
    assert!(
        err.contains("driving `both` now"),
        "and when it took over: {err}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(3_000),
        "it did not act while the lease was live"
    );
    let all = trials(&w, "both");
    assert!(all.iter().all(|t| t["state"] == "succeeded"), "{all:?}");
    ran_once_each(&runs, 3);
    // The lease is free again: a tick now finds the study done and withdraws it.
    let r = handle(
        &ctx,
        &json!({}),
        Instant::now() + Duration::from_secs(20),
        "t",
    )
    .await
    .expect("tick");
    assert_eq!(row(&r, "both").outcome, "done");
}
