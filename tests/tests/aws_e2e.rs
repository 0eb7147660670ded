//! The AWS path end to end on one machine: the real `augur` and `augur-agent` against
//! a local AWS emulator (moto, or `AUGUR_TEST_AWS_ENDPOINT`), with the fake hypervisor
//! turning EC2 instances into local agents, and the fault proxy counting calls.

use augur_tests::cloud::{futures_lite, World};
use augur_tests::{bin_dir, exits, ok, text, wait_for, Sandbox};
use serde_json::Value;
use std::time::Duration;

const DYNAMO_WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_study_runs_on_the_aws_path_and_leaves_no_instance() {
    let mut w = World::new();
    w.sb.write("helper.sh", "echo \"helper says hi from $AUGUR_TRIAL\"\n");
    w.sb.write(
        "s.toml",
        r#"
name = "cloud"
objective = { metric = "loss" }
oracle = "grid"
parallel = 3
[params]
x = { values = [1, 2, 3, 4, 5, 6] }
[run]
script = 'bash helper.sh; sleep 2; echo "METRICS: loss=$(( (AUGUR_PARAM_X - 4) * (AUGUR_PARAM_X - 4) ))"'
files = ["helper.sh"]
[aws]
image = "ami-12345678"
instance_type = "t3.micro"
"#,
    );
    let agent = bin_dir().join("augur-agent");
    ok(&w.init_with(&[agent]));
    ok(&w.init_tables(&[])); // idempotent
    w.start_hypervisor();
    let before = w.proxy.calls().len();
    let started = std::time::Instant::now();
    let out = w.augur(&[
        "run",
        "s.toml",
        "--heartbeat",
        "1s",
        "--heartbeat-timeout",
        "20s",
    ]);
    let took = started.elapsed();
    ok(&out);
    let run_calls: Vec<_> = w.proxy.calls()[before..].to_vec();

    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "cloud", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 6);
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        let x = t["params"]["x"].as_i64().expect("x");
        assert_eq!(
            t["metrics"]["loss"].as_f64(),
            Some(((x - 4) * (x - 4)) as f64)
        );
        assert!(
            t["machine"].as_str().unwrap_or_default().starts_with("i-"),
            "ran on an instance: {t}"
        );
        assert!(
            t["log"]
                .as_str()
                .unwrap_or_default()
                .starts_with("cloudwatch:/augur/cloud:"),
            "{t}"
        );
    }
    let lb: Vec<Value> = serde_json::from_slice(
        &w.augur(&["leaderboard", "cloud", "--json", "-n", "1"])
            .stdout,
    )
    .expect("json");
    assert_eq!(lb[0]["params"]["x"], 4);
    // Logs come from CloudWatch Logs, in the same format as locally.
    let logs = w.augur(&["logs", "cloud/2"]);
    ok(&logs);
    let logs = text(&logs.stdout);
    assert!(
        logs.contains(" out helper says hi from 2"),
        "study files came from S3: {logs}"
    );
    assert!(logs.contains(" augur attempt 1 of trial 2"), "{logs}");
    assert!(logs.contains(" augur succeeded"), "{logs}");
    // `augur script`: the files come from the bucket; --run fetches them from S3 and
    // runs the trial again here.
    let script = text(&w.augur(&["script", "cloud/2"]).stdout);
    assert!(
        script.contains("aws s3 cp --recursive 's3://")
            && script.contains("/studies/cloud/files/' ."),
        "{script}"
    );
    assert!(
        script.contains("/checkpoints/cloud/2/' .augur-checkpoint/"),
        "the checkpoint comes from the bucket too: {script}"
    );
    let dir = w.sb.path().join("again").display().to_string();
    let again = w.augur(&["script", "cloud/2", "--run", "--dir", &dir]);
    ok(&again);
    assert!(
        text(&again.stdout).contains("helper says hi from 2")
            && text(&again.stdout).contains("METRICS: loss=4"),
        "{}",
        text(&again.stdout)
    );
    let filtered = text(
        &w.augur(&["logs", "cloud/2", "--filter", "helper says"])
            .stdout,
    );
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    // The whole study, interleaved from the log group, in the local format; --follow
    // ends at once since the study is done.
    let all = w.augur(&[
        "logs",
        "cloud",
        "--follow",
        "--filter",
        "\"helper says hi\" -err",
    ]);
    ok(&all);
    let all = text(&all.stdout);
    assert_eq!(all.lines().count(), 6, "{all}");
    for id in 1..=6 {
        assert!(
            all.contains(&format!(" {id}/1 out helper says hi from {id}")),
            "{all}"
        );
    }
    let times: Vec<&str> = all.lines().filter_map(|l| l.split(' ').next()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "{all}");
    let json = text(
        &w.augur(&[
            "logs",
            "cloud",
            "--format",
            "json",
            "--filter",
            "METRICS: -err",
        ])
        .stdout,
    );
    let trials_seen: std::collections::BTreeSet<u64> = json
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter_map(|v| v["trial"].as_u64())
        .collect();
    assert_eq!(trials_seen.len(), 6, "{json}");
    // Every instance is gone at the end (the agents power them off).
    wait_for(Duration::from_secs(30), "no instance left running", || {
        let n = futures_lite(w.live_instances());
        (n == 0).then_some(())
    });

    // Cost figures.
    let ec2 = run_calls.iter().filter(|c| c.service == "ec2").count() as f64 / 6.0;
    let writes = run_calls
        .iter()
        .filter(|c| c.service == "dynamodb" && DYNAMO_WRITES.contains(&c.operation.as_str()))
        .count() as f64
        / 6.0;
    let logs_calls = run_calls.iter().filter(|c| c.service == "logs").count() as f64 / 6.0;
    eprintln!("per trial (6 trials of ~2 s, heartbeat 1 s): {ec2:.2} EC2 calls, {writes:.2} DynamoDB write requests, {logs_calls:.2} CloudWatch Logs calls");
    // EC2 calls: one launch per trial, at most one termination, and one listing of
    // the whole study per 5 s (the listing's reuse), however many trials.
    let ec2_ops = |op: &str| {
        run_calls
            .iter()
            .filter(|c| c.service == "ec2" && c.operation == op)
            .count()
    };
    assert_eq!(ec2_ops("RunInstances"), 6);
    assert!(ec2_ops("TerminateInstances") <= 6);
    let listings = ec2_ops("DescribeInstances") as u64;
    assert!(
        listings <= took.as_secs() / 5 + 4,
        "{listings} listings in {took:?}"
    );
    assert!(writes <= 12.0, "DynamoDB writes per trial: {writes}");

    // Every DynamoDB call the agents made (with the instance role's session) is one
    // the template's worker policy allows, as IAM evaluates it (infra/iam_eval.py):
    // reads, and writes of trial partitions only.
    let worker: Vec<Value> = run_calls
        .iter()
        .filter(|c| c.service == "dynamodb" && c.session.as_deref() == Some("standin-session"))
        .map(|c| {
            serde_json::json!({
                "action": format!("dynamodb:{}", c.operation),
                "resource": augur_tests::EVAL_TABLE_ARN,
                "context": { "dynamodb:LeadingKeys": c.partitions },
            })
        })
        .collect();
    assert!(
        worker.len() >= 6 * 3,
        "the agents' calls were seen: {}",
        worker.len()
    );
    assert!(worker.iter().any(|r| r["action"] == "dynamodb:PutItem"
        && r["context"]["dynamodb:LeadingKeys"][0] == "trials#cloud"));
    augur_tests::iam_allows("WorkerRole", &worker);
}

#[test]
fn an_unreachable_backend_exits_3_and_missing_settings_exit_2() {
    let sb = Sandbox::new();
    sb.write(
        "s.toml",
        "name='u'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\n[aws]\nimage='ami-1'\n",
    );
    let port = augur_tests::emulator::free_port();
    let out = sb
        .cmd(&[
            "run",
            "s.toml",
            "--backend",
            "aws",
            "--table",
            "t",
            "--bucket",
            "b",
            "--aws-attempts",
            "2",
            "--aws-backoff",
            "10ms",
        ])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AUGUR_AGENT_SHA256", augur_tests::agent_sha256())
        .output()
        .expect("augur");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("DynamoDB"),
        "{}",
        text(&out.stderr)
    );
    let out = sb
        .cmd(&["run", "s.toml", "--backend", "aws", "--bucket", "b"])
        .output()
        .expect("augur");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--table or AUGUR_TABLE"),
        "{}",
        text(&out.stderr)
    );
    let out = sb
        .cmd(&["run", "s.toml", "--backend", "aws", "--table", "t"])
        .output()
        .expect("augur");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--bucket or AUGUR_BUCKET"),
        "{}",
        text(&out.stderr)
    );
}

/// Instances that never boot, instances reclaimed under a running agent, and launches
/// whose answer is lost (the SDK's retry carries the same ClientToken, which the
/// stand-in answers with the first instance, as EC2 does): each trial still runs its
/// script exactly once to success, and no instance is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_reclaimed_and_duplicated_instances_are_recovered() {
    use augur_tests::faults::{Fault, Rule};
    let mut w = World::new();
    let runs = w.sb.path().join("runs.txt");
    w.sb.write(
        "s.toml",
        &format!(
            r#"
name = "rough"
objective = {{ metric = "v" }}
oracle = "grid"
parallel = 3
[params]
x = {{ values = [1, 2, 3, 4, 5, 6] }}
[run]
max_attempts = 10
script = 'sleep 1; echo "$AUGUR_TRIAL $AUGUR_ATTEMPT" >> {runs}; echo "METRICS: v=$AUGUR_PARAM_X"'
[aws]
image = "ami-12345678"
"#,
            runs = runs.display()
        ),
    );
    w.init();
    // Every 4th instance never boots; every 3rd booted one is reclaimed at once.
    w.start_hypervisor_with(&["--never-boot-every", "4", "--reclaim-every", "3"]);
    w.proxy
        .add(Rule::new("ec2", "RunInstances", Fault::DropAfterApply).every(3));
    let out = w.augur(&[
        "run",
        "s.toml",
        "--heartbeat",
        "500ms",
        // Room for a loaded machine to boot and run healthy instances: only the
        // faults lose attempts.
        "--heartbeat-timeout",
        "12s",
        "--boot-timeout",
        "30s",
        "--backoff-base",
        "100ms",
    ]);
    ok(&out);
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "rough", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 6);
    assert!(
        trials.iter().all(|t| t["state"] == "succeeded"),
        "{trials:?}"
    );
    assert!(
        trials.iter().any(|t| t["attempt"].as_u64() > Some(1)),
        "some trials needed another machine"
    );
    let lines = std::fs::read_to_string(&runs).expect("runs");
    let mut finished: Vec<&str> = lines
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    finished.sort();
    // A reclaimed attempt may have written its line before dying; a trial's final
    // attempt writes exactly one. Each trial has at least one and no attempt twice.
    let mut attempts: Vec<&str> = lines.lines().collect();
    attempts.sort();
    let before = attempts.len();
    attempts.dedup();
    assert_eq!(before, attempts.len(), "an attempt ran twice: {lines}");
    finished.dedup();
    assert_eq!(finished.len(), 6, "{lines}");
    let dropped = w.proxy.calls().iter().filter(|c| c.fault.is_some()).count();
    assert!(
        dropped >= 1,
        "launches were dropped after they were applied"
    );
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    // A retried trial keeps its earlier attempts, each on its own instance.
    let retried: Vec<&Value> = trials
        .iter()
        .filter(|t| t["attempt"].as_u64() > Some(1))
        .collect();
    for t in &retried {
        let shown: Value = serde_json::from_slice(
            &w.augur(&["show", &format!("rough/{}", t["id"]), "--json"])
                .stdout,
        )
        .expect("show json");
        let earlier = shown["earlier_attempts"].as_array().expect("earlier");
        assert_eq!(earlier.len() as u64 + 1, t["attempt"].as_u64().unwrap_or(0));
        assert!(earlier.iter().all(|a| a["state"] == "lost"), "{shown}");
    }

    // `augur serve` on the AWS backend: the API and pages read DynamoDB, and /metrics
    // counts this process's AWS calls by service, throttled attempts and retries too.
    use augur_tests::{http_get, server_addr};
    let mut server = w.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server_addr(&mut server);
    let (code, _, body) = http_get(&addr, "/api/studies/rough/trials");
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("trials json");
    assert_eq!(listed.as_array().map(Vec::len), Some(6));
    if let Some(t) = retried.first() {
        let (code, _, page) = http_get(&addr, &format!("/trials/rough/{}", t["id"]));
        assert_eq!(code, 200);
        assert!(page.contains("<h2>Attempts</h2>"), "{page}");
        assert!(page.matches("i-").count() >= 2, "instances named: {page}");
    }
    w.proxy
        .add(Rule::new("dynamodb", "*", Fault::Throttle).first(3));
    let (code, _, body) = http_get(&addr, "/api/studies/rough");
    assert_eq!(code, 200, "answered once the throttling passed: {body}");
    let (_, _, metrics) = http_get(&addr, "/metrics");
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
    };
    assert!(value("augur_aws_requests_total{service=\"dynamodb\",outcome=\"ok\"}") >= 2);
    assert_eq!(
        value("augur_aws_requests_total{service=\"dynamodb\",outcome=\"throttled\"}"),
        3
    );
    assert_eq!(value("augur_aws_errors_total{service=\"dynamodb\"}"), 3);
    assert_eq!(value("augur_aws_retries_total{service=\"dynamodb\"}"), 3);
    assert_eq!(
        value("augur_trials{study=\"rough\",state=\"succeeded\"}"),
        6
    );
    let _ = server.kill();
    let _ = server.wait();

    let err = text(&out.stderr);
    eprintln!(
        "{}",
        err.lines()
            .filter(|l| l.contains("lost"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Early stopping on the AWS path: the orchestrator writes `pruned` to DynamoDB, the
/// agent on the instance sees it at its next heartbeat and ends the script, the
/// instance goes away, and the pruned trials' logs in CloudWatch say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_trials_stop_their_instances_on_the_aws_path() {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        r#"
name = "cloudprune"
objective = { metric = "loss" }
oracle = "grid"
parallel = 2
[params]
x = { values = [1, 2, 3, 4] }
[run]
script = 'for s in $(seq 1 25); do echo "METRICS: step=$s, loss=$(awk "BEGIN { print $AUGUR_PARAM_X + 1 / $s }")"; sleep 0.2; done; echo finished'
[prune]
rule = "median"
min_trials = 2
warmup = 2
[aws]
image = "ami-12345678"
"#,
    );
    w.init();
    w.start_hypervisor();
    let mut run = w.spawn(&[
        "run",
        "s.toml",
        "--heartbeat",
        "500ms",
        "--heartbeat-timeout",
        "20s",
    ]);
    // Follow the whole study from CloudWatch while it runs, until it is done.
    wait_for(Duration::from_secs(30), "the study to exist", || {
        w.augur(&["trials", "cloudprune", "--json"])
            .status
            .success()
            .then_some(())
    });
    let follow = w.augur(&[
        "logs",
        "cloudprune",
        "--follow",
        "--filter",
        "METRICS: -err",
    ]);
    ok(&follow);
    assert!(augur_tests::wait_exit(&mut run, Duration::from_secs(60)).success());
    let followed = text(&follow.stdout);
    // Lines at the start time of each poll come back from FilterLogEvents: none is
    // printed twice, none is missed.
    for x in 1..=2 {
        for step in 1..=25 {
            let line = format!(" {x}/1 out METRICS: step={step}, loss=");
            assert_eq!(followed.matches(&line).count(), 1, "{line}: {followed}");
        }
    }
    assert!(followed.contains(" 3/1 out METRICS: step=1,"), "{followed}");
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "cloudprune", "--json"]).stdout).expect("json");
    let states: Vec<(i64, String)> = trials
        .iter()
        .map(|t| {
            (
                t["params"]["x"].as_i64().unwrap_or(0),
                t["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "succeeded".to_string()),
            (2, "succeeded".to_string()),
            (3, "pruned".to_string()),
            (4, "pruned".to_string())
        ]
    );
    for t in trials.iter().filter(|t| t["state"] == "pruned") {
        let ran = t["elapsed_ms"].as_i64().expect("started and finished");
        assert!(ran < 4_000, "pruned trial ran {ran} ms of 5 s: {t}");
        let id = t["id"].as_u64().unwrap_or(0).to_string();
        // The agent saw it at a heartbeat, and its last words reached CloudWatch
        // before the instance went (it had its grace; nobody killed it).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let log = loop {
            let log = text(&w.augur(&["logs", &format!("cloudprune/{id}")]).stdout);
            if log.contains("the trial is pruned: median rule") {
                break log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no note from the agent of trial {id}: {log}"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(
            !log.contains(" out finished"),
            "the script kept running: {log}"
        );
    }
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// Spot reclaims are preemptions, not failures of the trial: with `max_attempts = 1`
/// every trial is reclaimed twice and still completes, its third attempt on demand
/// (`spot_fallback_after = 2`). The reclaim is seen from the instance's state, not by
/// waiting out the heartbeat lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_reclaims_do_not_use_up_attempts_and_fall_back_to_on_demand() {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        r#"
name = "spotty"
objective = { metric = "v" }
oracle = "grid"
parallel = 3
[params]
x = { values = [1, 2, 3] }
[run]
max_attempts = 1
# Long enough that the hypervisor's reclaim (300 ms after boot, instances handled one
# at a time) always lands while the script runs.
script = 'sleep 5; echo "METRICS: v=$AUGUR_PARAM_X"'
[aws]
image = "ami-12345678"
spot = true
spot_fallback_after = 2
"#,
    );
    w.init();
    // Known prices (t3.micro is the default type): spot $0.36/h from the price
    // history, on demand $0.72/h from the Price List API.
    w.proxy.ec2().set_price("t3.micro", Some(0.36), Some(0.72));
    w.start_hypervisor_with(&["--reclaim-spot"]);
    let started = std::time::Instant::now();
    // A lease far longer than the whole run: reclaims must be seen another way.
    let out = w.augur(&[
        "run",
        "s.toml",
        "--heartbeat",
        "500ms",
        "--heartbeat-timeout",
        "120s",
        "--backoff-base",
        "100ms",
    ]);
    ok(&out);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(100), "took {took:?}");
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "spotty", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 3, "{t}");
        assert_eq!(t["preemptions"], 2, "{t}");
        assert_eq!(t["runs"], 1, "{t}");
        let shown: Value = serde_json::from_slice(
            &w.augur(&["show", &format!("spotty/{}", t["id"]), "--json"])
                .stdout,
        )
        .expect("show json");
        let earlier = shown["earlier_attempts"].as_array().expect("earlier");
        assert_eq!(earlier.len(), 2);
        for a in earlier {
            assert_eq!(a["state"], "lost");
            assert!(
                // Seen by augur from the instance's state, or by the agent from
                // the reclaim notice: a preemption either way.
                a["error"].as_str().is_some_and(|e| {
                    e.contains("its machine was taken away")
                        || e.contains("spot instance is reclaimed")
                }),
                "{a}"
            );
        }
    }
    assert_costs_by_hand(&w, &trials);
    // Attempts 1 and 2 of each trial ran on spot, attempt 3 on demand; one
    // instance per attempt.
    let instances = w.instances().await;
    for id in 1..=3u64 {
        let mine: Vec<(u32, bool)> = instances
            .iter()
            .filter(|i| i.0 == id)
            .map(|i| (i.1, i.3))
            .collect();
        assert_eq!(
            mine,
            vec![(1, true), (2, true), (3, false)],
            "{instances:?}"
        );
    }
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// Each trial ran two spot attempts at $0.36/h and one on-demand at $0.72/h, every
/// one shorter than a minute, so each is billed EC2's minimum of 60 seconds
/// (<https://aws.amazon.com/ec2/pricing/on-demand/>, "Per Second Billing"): a trial
/// costs 2 × $0.006 + $0.012 = $0.024 over 3 machine-minutes; the study $0.072 over
/// 0.15 machine-hours, two thirds of it on spot.
fn assert_costs_by_hand(w: &World, trials: &[Value]) {
    let close = |v: &Value, want: f64| v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9);
    for t in trials {
        assert!(close(&t["cost_usd"], 0.024), "{t}");
        assert_eq!(t["machine_seconds"].as_f64(), Some(180.0), "{t}");
        let b = &t["billing"];
        assert_eq!(
            (&b["lifecycle"], &b["usd_per_hour"], &b["price_from"]),
            (
                &Value::from("on-demand"),
                &Value::from(0.72),
                &Value::from("price list")
            ),
            "{t}"
        );
        let shown: Value = serde_json::from_slice(
            &w.augur(&["show", &format!("spotty/{}", t["id"]), "--json"])
                .stdout,
        )
        .expect("show json");
        for a in shown["earlier_attempts"].as_array().expect("earlier") {
            let b = &a["billing"];
            assert_eq!(
                (&b["lifecycle"], &b["usd_per_hour"], &b["price_from"]),
                (
                    &Value::from("spot"),
                    &Value::from(0.36),
                    &Value::from("spot price history")
                ),
                "{a}"
            );
        }
    }
    let studies: Value =
        serde_json::from_slice(&w.augur(&["studies", "--json"]).stdout).expect("json");
    let cost = &studies[0]["cost"];
    assert!(close(&cost["usd"], 0.072), "{cost}");
    assert_eq!(
        cost["summary"], "spent $0.0720 over 0.15 machine-hours, 67 % on spot",
        "{cost}"
    );
    let table = text(&w.augur(&["trials", "spotty"]).stdout);
    assert!(
        table.contains("COST") && table.contains("$0.0240"),
        "{table}"
    );
    assert!(
        table.contains("spent $0.0720 over 0.15 machine-hours"),
        "{table}"
    );
    // Each attempt at its own price, in `augur show`'s attempts.
    let shown = text(&w.augur(&["show", "spotty/1"]).stdout);
    assert!(
        shown.matches("spot $0.0060").count() == 2 && shown.contains("on-demand $0.0120"),
        "{shown}"
    );
    // The pages and /metrics say the same.
    let mut server = w.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = augur_tests::server_addr(&mut server);
    let (_, _, study) = augur_tests::http_get(&addr, "/studies/spotty");
    let (_, _, trial) = augur_tests::http_get(&addr, "/trials/spotty/1");
    let (_, _, metrics) = augur_tests::http_get(&addr, "/metrics");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        study.contains("spent $0.0720 over 0.15 machine-hours, 67 % on spot")
            && study.contains("<th>cost</th>"),
        "{study}"
    );
    assert!(
        trial.contains("$0.0240 over 3.0 machine-minutes")
            && trial.contains("t3.micro on-demand in ")
            && trial.contains("at $0.7200/h (price list)"),
        "{trial}"
    );
    assert!(
        metrics.contains("augur_cost_usd_total{study=\"spotty\"} 0.072000"),
        "{metrics}"
    );
}

/// `run.max_cost_usd`: launching stops once what is spent plus the next trial's
/// expected cost would pass it. At $0.36/h on demand each short trial is billed a
/// minute, $0.006: with $0.02, the third trial starts ($0.018) and a fourth would
/// pass ($0.024). `--dry-run` foresees the same, and launches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_budget_stops_launching_at_the_trial_that_would_pass_it() {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        r#"
name = "budgeted"
objective = { metric = "v" }
trials = 10
parallel = 1
[params]
x = { range = [0.0, 1.0] }
[run]
script = 'echo "METRICS: v=$AUGUR_PARAM_X"'
max_cost_usd = 0.02
[aws]
image = "ami-12345678"
instance_type = "t3.small"
"#,
    );
    w.init();
    w.proxy.ec2().set_price("t3.small", None, Some(0.36));
    let dry = w.augur(&["run", "s.toml", "--dry-run", "--duration", "30s"]);
    ok(&dry);
    let said = text(&dry.stdout);
    assert!(
        said.contains("t3.small on-demand in ? at $0.3600/h (price list)")
            && said.contains("about $0.06")
            && said.contains("let about 3 of the 10 trial(s) start"),
        "{said}"
    );
    assert_eq!(w.instances().await.len(), 0, "a dry run launches nothing");
    w.start_hypervisor();
    let out = w.augur(&["run", "s.toml", "--heartbeat", "500ms"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("study `budgeted` budget spent: 3 succeeded"),
        "{err}"
    );
    assert!(
        err.contains("augur: budget spent: $0.0180 of run.max_cost_usd = $0.0200 spent or committed, and a trial costs about $0.0060"),
        "{err}"
    );
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "budgeted", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 3, "{trials:?}");
    let studies = text(&w.augur(&["studies"]).stdout);
    assert!(
        studies.contains("budget spent") && studies.contains("$0.0180"),
        "{studies}"
    );
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// `augur gc` on AWS: the instances of a deleted study are terminated, those of a
/// driven one are left alone, an expired lease in DynamoDB is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_terminates_orphaned_instances_and_removes_expired_leases() {
    use augur_store::TrialStore;
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        "name = \"orphans\"\nobjective = { metric = \"v\" }\ntrials = 2\nparallel = 2\n[run]\nscript = 'sleep 120'\n[aws]\nimage = \"ami-12345678\"\n",
    );
    w.init();
    w.start_hypervisor();
    let mut run = w.spawn(&["run", "s.toml", "--heartbeat", "500ms"]);
    wait_for(Duration::from_secs(60), "2 instances running", || {
        (futures_lite(w.live_instances()) == 2).then_some(())
    });
    // ... and both agents running their scripts: an instance whose agent only
    // starts after the study is deleted finds no trial and powers itself off,
    // leaving gc nothing to end.
    wait_for(Duration::from_secs(60), "both agents running", || {
        let out = w.augur(&["trials", "orphans", "--json"]);
        let ts: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        (ts.len() == 2 && ts.iter().all(|t| t["state"] == "running")).then_some(())
    });
    let _ = run.kill();
    let _ = run.wait();
    let json = |args: &[&str]| -> Value {
        let out = w.augur(args);
        ok(&out);
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let first = json(&["gc", "--json"]);
    assert_eq!(first["machines"], serde_json::json!([]), "{first}");
    assert_eq!(w.live_instances().await, 2);

    let opts = augur_aws::AwsOptions {
        endpoint: Some(w.emu.endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
        ..Default::default()
    };
    let store = augur_aws::DynamoStore::new(
        augur_aws::dynamodb(&augur_aws::sdk_config(&opts).await),
        w.table.clone(),
    );
    store
        .take_lease("ghost", "augur-run@gone:1", 1_000, 2_000, 0)
        .await
        .expect("lease");
    ok(&w.augur(&["delete", "orphans", "--force", "--yes"]));
    let done = json(&["gc", "--json"]);
    assert_eq!(done["machines"].as_array().map(Vec::len), Some(2), "{done}");
    assert_eq!(done["leases"][0]["study"], "ghost", "{done}");
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    assert!(store.leases().await.expect("leases").is_empty());
}

/// Secrets by reference on AWS: an SSM SecureString and a Secrets Manager secret,
/// read by the agent on the instance with the instance's credentials, reach the
/// script and are masked in its log; no value is in the table, the logs, `show` or
/// the export. A reference to a parameter that is not there fails the attempt with
/// the reason, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_on_the_instance_and_kept_nowhere() {
    const SSM_VALUE: &str = "wandb-0123456789abcdef";
    const SM_VALUE: &str = "hf_secret_token_value";
    let mut w = World::new();
    w.aws(&[
        "ssm",
        "put-parameter",
        "--name",
        "/augur/wandb",
        "--type",
        "SecureString",
        "--value",
        SSM_VALUE,
    ]);
    let created = w.aws(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "augur/hf",
        "--secret-string",
        SM_VALUE,
    ]);
    let arn = created["ARN"].as_str().expect("ARN").to_string();
    // The script checks each value in two halves: the study file must not hold it.
    w.sb.write(
        "s.toml",
        &format!(
            r#"
name = "secretive"
objective = {{ metric = "ok" }}
trials = 1
[run]
secrets = {{ WANDB_API_KEY = "ssm:/augur/wandb", HF_TOKEN = "{arn}" }}
script = '''
echo "keys: $WANDB_API_KEY and $HF_TOKEN"
[ "${{WANDB_API_KEY#wandb-}}" = 0123456789abcdef ] && [ "${{HF_TOKEN#hf_}}" = secret_token_value ] && echo "METRICS: ok=1"
'''
[aws]
image = "ami-12345678"
"#
        ),
    );
    w.sb.write(
        "missing.toml",
        "name = \"missing\"\nobjective = { metric = \"ok\" }\ntrials = 1\n[run]\nsecrets = { K = \"ssm:/augur/not-there\" }\nscript = 'echo METRICS: ok=1'\n[aws]\nimage = \"ami-12345678\"\n",
    );
    w.init();
    w.start_hypervisor();
    let flags = ["--heartbeat", "500ms", "--heartbeat-timeout", "20s"];
    ok(&w.augur(&[&["run", "s.toml"][..], &flags].concat()));
    // Its one trial cannot read its secret: no trial succeeded (exit 5).
    exits(
        &w.augur(&[&["run", "missing.toml"][..], &flags].concat()),
        5,
    );
    let t: Value =
        serde_json::from_slice(&w.augur(&["show", "secretive/1", "--json"]).stdout).expect("json");
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["metrics"]["ok"], 1.0, "the script got both values: {t}");
    let logs = text(&w.augur(&["logs", "secretive/1"]).stdout);
    assert!(logs.contains("keys: *** and ***"), "{logs}");
    let table = w
        .aws(&["dynamodb", "scan", "--table-name", &w.table])
        .to_string();
    assert!(
        table.contains("ssm:/augur/wandb"),
        "the reference is kept: {table}"
    );
    let kept = [
        table,
        logs,
        t.to_string(),
        text(
            &w.augur(&["export", "secretive", "--format", "jsonl"])
                .stdout,
        ),
    ];
    for k in &kept {
        assert!(
            !k.contains(SSM_VALUE) && !k.contains(SM_VALUE),
            "a value leaked: {k}"
        );
    }
    let m: Value =
        serde_json::from_slice(&w.augur(&["show", "missing/1", "--json"]).stdout).expect("json");
    assert_eq!(m["state"], "failed", "{m}");
    assert_eq!(m["attempt"], 1, "not retried: {m}");
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.contains("secret `K` (ssm:/augur/not-there)")
                && e.contains("ParameterNotFound")),
        "{m}"
    );
}

/// A study's log group is made with its retention (`[aws] keep_days`, rounded up to
/// what CloudWatch Logs takes; else the stack's), and `augur delete` removes it and
/// the study's files in the bucket with the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_kept_keep_days_and_delete_removes_them_and_the_files() {
    let mut w = World::new();
    w.sb.write("helper.sh", "echo hi\n");
    let study = |name: &str, keep: &str| {
        format!("name = \"{name}\"\nobjective = {{ metric = \"m\" }}\ntrials = 1\n[run]\nfiles = [\"helper.sh\"]\nscript = 'bash helper.sh; echo METRICS: m=1'\n[aws]\nimage = \"ami-12345678\"\n{keep}")
    };
    w.sb.write("kept.toml", &study("kept", "keep_days = 10\n"));
    w.sb.write("plain.toml", &study("plain", ""));
    w.init();
    w.start_hypervisor();
    ok(&w.augur(&[
        "run",
        "kept.toml",
        "--heartbeat",
        "500ms",
        "--heartbeat-timeout",
        "20s",
    ]));
    let out = w
        .env(&mut w.sb.cmd(&[
            "run",
            "plain.toml",
            "--heartbeat",
            "500ms",
            "--heartbeat-timeout",
            "20s",
        ]))
        .env("AUGUR_LOG_RETENTION_DAYS", "30")
        .output()
        .expect("augur");
    ok(&out);
    let retention = |name: &str| {
        let groups = w.aws(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &format!("/augur/{name}"),
        ]);
        groups["logGroups"][0]["retentionInDays"].clone()
    };
    assert_eq!(
        retention("kept"),
        14,
        "10 days, as CloudWatch Logs rounds them"
    );
    assert_eq!(retention("plain"), 30, "the stack's default");
    // A done study's items expire with its logs: DynamoDB's time to live reads
    // `expires_at` in epoch seconds.
    let now_s = (augur_store::now_ms() / 1000) as f64;
    let items = w.aws(&["dynamodb", "scan", "--table-name", &w.table]);
    let expiry = |pk: &str| -> Vec<f64> {
        items["Items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["pk"]["S"] == pk || i["sk"]["S"] == format!("study#{pk}"))
            .map(|i| {
                i["expires_at"]["N"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0.0)
            })
            .collect()
    };
    for (study, days) in [("kept", 10.0), ("plain", 30.0)] {
        let mut at = expiry(study);
        at.extend(expiry(&format!("trials#{study}")));
        assert!(at.len() >= 3, "study, index entry, trial: {at:?}");
        for a in at {
            let left = (a - now_s) / 86_400.0;
            assert!(
                (days - 0.1..=days).contains(&left),
                "{study}: {left} days left"
            );
        }
    }
    let objects = |name: &str| {
        w.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "augur-e2e",
            "--prefix",
            &format!("studies/{name}/"),
        ])["Contents"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(objects("kept"), 1);
    // The stack's bucket is versioned: a second version of the file, and a
    // checkpoint written twice and then deleted (two versions behind a delete marker).
    w.aws(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "augur-e2e",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let file = w.sb.path().join("helper.sh");
    let file = file.to_str().expect("path");
    for key in [
        "studies/kept/files/helper.sh",
        "checkpoints/kept/1/c",
        "checkpoints/kept/1/c",
    ] {
        w.aws(&[
            "s3api",
            "put-object",
            "--bucket",
            "augur-e2e",
            "--key",
            key,
            "--body",
            file,
        ]);
    }
    w.aws(&[
        "s3api",
        "delete-object",
        "--bucket",
        "augur-e2e",
        "--key",
        "checkpoints/kept/1/c",
    ]);
    let versions = |prefix: &str| {
        let v = w.aws(&[
            "s3api",
            "list-object-versions",
            "--bucket",
            "augur-e2e",
            "--prefix",
            prefix,
        ]);
        let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
        (n("Versions"), n("DeleteMarkers"))
    };
    assert_eq!(versions("studies/kept/"), (2, 0));
    assert_eq!(versions("checkpoints/kept/"), (2, 1));
    let out = w.augur(&["delete", "kept", "--yes"]);
    ok(&out);
    let said = text(&out.stderr);
    assert!(said.contains("removed log group /augur/kept"), "{said}");
    assert!(
        said.contains("1 file(s) in s3://augur-e2e/studies/kept/"),
        "{said}"
    );
    let groups = w.aws(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/augur/kept",
    ]);
    assert_eq!(
        groups["logGroups"].as_array().map_or(0, Vec::len),
        0,
        "{groups}"
    );
    assert_eq!(objects("kept"), 0);
    for prefix in ["studies/kept/", "checkpoints/kept/"] {
        assert_eq!(
            versions(prefix),
            (0, 0),
            "no version is left under {prefix}"
        );
    }
    assert_eq!(objects("plain"), 1, "another study's files stay");
    assert_eq!(
        versions("studies/plain/"),
        (1, 0),
        "nor any of its versions"
    );
}

/// A spot reclaim mid-trial does not throw the trial's work away: the agent sends
/// `AUGUR_CHECKPOINT_DIR` to the bucket at its heartbeats and once more after the
/// reclaim's SIGTERM, and the next attempt (on demand) starts from it. The steps run
/// in all are at most the trial's 20 plus those of one sync interval, not 20 + the
/// steps attempt 1 had done. `augur delete` removes the checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_trial_resumes_from_its_checkpoint() {
    let mut w = World::new();
    let steps = w.sb.path().join("steps.txt");
    w.sb.write(
        "s.toml",
        &format!(
            "name = \"resumed\"\nobjective = {{ metric = \"m\" }}\ntrials = 1\n{}[aws]\nimage = \"ami-12345678\"\nspot = true\nspot_fallback_after = 1\n",
            augur_tests::cloud::checkpointing_run(20, &steps)
        ),
    );
    w.init();
    // The spot notice scaled down: attempt 1 is some steps in when it is told, and
    // has time to send its checkpoint.
    w.start_hypervisor_with(&augur_tests::cloud::SCALED_SPOT_NOTICE);
    ok(&w.augur(&[&["run", "s.toml"][..], &augur_tests::cloud::RUN].concat()));
    let t: Value =
        serde_json::from_slice(&w.augur(&["show", "resumed/1", "--json"]).stdout).expect("json");
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        (t["attempt"].as_u64(), t["preemptions"].as_u64()),
        (Some(2), Some(1)),
        "{t}"
    );
    let ran = std::fs::read_to_string(&steps).expect("steps");
    let by = |a: &str| -> Vec<u32> {
        ran.lines()
            .filter_map(|l| l.strip_prefix(a))
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let (first, second) = (by("1:1:"), by("1:2:"));
    eprintln!("attempt 1 ran steps {first:?}; attempt 2 ran steps {second:?}");
    assert!(!first.is_empty() && !second.is_empty(), "{ran}");
    assert_eq!(second.last(), Some(&20), "{ran}");
    assert!(
        second[0] > 1,
        "attempt 2 started from the checkpoint, not from step 0: {ran}"
    );
    // One heartbeat (500 ms) holds at most 3 steps of 200 ms.
    assert!(
        first.len() + second.len() <= 20 + 3,
        "{} steps in all: {ran}",
        first.len() + second.len()
    );
    let logs = text(&w.augur(&["logs", "resumed/1"]).stdout);
    assert!(logs.contains("checkpoint: restored 1 file(s)"), "{logs}");
    // The record says what the bucket holds: the one file, "20\n".
    assert_eq!(t["checkpoint"]["files"], 1, "{t}");
    assert_eq!(t["checkpoint"]["bytes"], 3, "{t}");
    let human = text(&w.augur(&["show", "resumed/1"]).stdout);
    assert!(
        human.contains("checkpoint 1 file(s), 3 bytes, kept "),
        "{human}"
    );
    // `augur script` fetches the checkpoint with the files; `--run` restores it
    // into a fresh directory, where the script sees its last step and goes on.
    let shown = text(&w.augur(&["script", "resumed/1"]).stdout);
    assert!(
        // The files the checkpoint's manifest names (published whole).
        shown.contains("aws s3 cp 's3://augur-e2e/checkpoints/resumed/1/augur-data/")
            && shown.contains("/step' '.augur-checkpoint/step'")
            && shown.contains("export AUGUR_CHECKPOINT_DIR=\"$PWD/.augur-checkpoint\""),
        "{shown}"
    );
    let again = w.sb.path().join("again");
    let rerun = w.augur(&[
        "script",
        "resumed/1",
        "--run",
        "--dir",
        &again.display().to_string(),
    ]);
    ok(&rerun);
    assert!(
        text(&rerun.stderr).contains("1 checkpoint file(s) restored"),
        "{}",
        text(&rerun.stderr)
    );
    assert!(
        text(&rerun.stdout).contains("METRICS: m=20"),
        "{}",
        text(&rerun.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&steps).expect("steps"),
        ran,
        "the re-run went on from step 20: no step ran again"
    );
    let gone = w.augur(&["delete", "resumed", "--yes"]);
    ok(&gone);
    assert!(
        text(&gone.stderr).contains("checkpoint file(s) in s3://"),
        "{}",
        text(&gone.stderr)
    );
}

/// A DynamoDB item is at most 400 KB
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>),
/// and every heartbeat rewrites the trial's item. A script that prints 30,000
/// readings and twenty 60 KiB lines must still succeed at its first attempt with a
/// small record: the series is thinned (the newest reading always kept), the last
/// lines and the status clipped; the log keeps every line whole, though CloudWatch
/// Logs is slow to take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_script_keeps_its_record_small_and_succeeds() {
    let mut w = World::new();
    w.sb.write(
        "s.toml",
        r#"
name = "chatty"
objective = { metric = "loss" }
trials = 1
[run]
max_attempts = 1
script = '''
for i in $(seq 8); do echo "warming up $i"; sleep 0.5; done
awk 'BEGIN { for (i = 1; i <= 30000; i++) printf "METRICS: step=%d, loss=%.6f\n", i, 1 / i }'
for i in $(seq 20); do head -c 61440 /dev/zero | tr '\0' x; echo; done
'''
[aws]
image = "ami-12345678"
"#,
    );
    w.init();
    w.start_hypervisor();
    // CloudWatch Logs slow to take every call, as on a busy machine, and the script
    // printing while calls are under way: the burst of readings comes during one,
    // and the shipper takes it rather than dropping what its queue cannot hold
    // (30,000 at once lost 2,119 beside a release build).
    w.proxy.add(augur_tests::faults::Rule::new(
        "logs",
        "PutLogEvents",
        augur_tests::faults::Fault::Latency(Duration::from_secs(3)),
    ));
    ok(&w.augur(&[&["run", "s.toml"][..], &augur_tests::cloud::RUN].concat()));
    let t: Value =
        serde_json::from_slice(&w.augur(&["show", "chatty/1", "--json"]).stdout).expect("json");
    assert_eq!(
        (&t["state"], &t["attempt"]),
        (&Value::from("succeeded"), &Value::from(1)),
        "{}",
        t["error"]
    );
    assert_eq!(t["metrics"]["step"], 30000.0);
    for line in t["log_tail"].as_array().expect("tail") {
        let n = line.as_str().map_or(0, |l| l.chars().count());
        assert!(n <= augur_model::bounded::LINE_CHARS + 1, "{n} chars kept");
    }
    let items = w.aws(&["dynamodb", "scan", "--table-name", &w.table]);
    let item = items["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["pk"]["S"] == "trials#chatty" && i["sk"]["S"] == "trial#0000000001")
        .expect("the trial's item");
    let size = item.to_string().len();
    eprintln!("the trial's item: {size} bytes");
    assert!(size < 20 * 1024, "{size} bytes");
    // The record's series is thinned, its newest reading kept ...
    let record: Value =
        serde_json::from_str(item["data"]["S"].as_str().unwrap_or_default()).expect("record");
    let kept = record["series"].as_array().expect("series");
    assert!(
        (50..=augur_model::bounded::SERIES_POINTS + 1).contains(&kept.len()),
        "{} points",
        kept.len()
    );
    let last_step = |s: &[Value]| s.last().map(|p| p["values"]["step"].clone());
    assert_eq!(last_step(kept), Some(Value::from(30000.0)));
    // ... and `show` reads the whole series back from the log.
    let whole = t["series"].as_array().expect("series");
    assert_eq!(whole.len(), 30000);
    assert_eq!(last_step(whole), Some(Value::from(30000.0)));
    // The log has every line whole.
    let logs = text(
        &w.augur(&["logs", "chatty/1", "--filter", "step=30000"])
            .stdout,
    );
    assert!(logs.contains("METRICS: step=30000"), "{logs}");
}
