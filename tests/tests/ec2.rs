//! EC2 as AWS documents it, where the emulator is kinder: each test plays one
//! documented behaviour in the stand-in (the fake hypervisor boots each instance's
//! real user-data with the AWS CLI and a metadata service; the fault proxy keeps
//! ClientTokens and reports state reasons) and holds augur to it.

use augur_tests::cloud::{futures_lite, World, RUN};
use augur_tests::standin::Drought;
use augur_tests::table::Row;
use augur_tests::{ok, text, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

fn study(name: &str, image: &str, trials: u32) -> String {
    let xs: Vec<String> = (1..=trials).map(|x| x.to_string()).collect();
    let xs = xs.join(", ");
    format!(
        r#"
name = "{name}"
objective = {{ metric = "v" }}
oracle = "grid"
parallel = 3
[params]
x = {{ values = [{xs}] }}
[run]
max_attempts = 1
script = 'echo "METRICS: v=$AUGUR_PARAM_X"'
[aws]
image = "{image}"
"#
    )
}

/// An instance whose boot script cannot fetch the agent (an image without the AWS
/// CLI) powers itself off: EC2 reports `Client.InstanceInitiatedShutdown`
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html>).
/// That is a failed launch, not a spot reclaim, and when a study's first launches
/// all end so, the study stops with exit 3 and what to check, after a few launches
/// instead of ~21 per trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_script_that_cannot_fetch_the_agent_stops_the_study_after_a_few_launches() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("bare", "ami-0bare0001", 6));
    w.init();
    w.start_hypervisor_with(&["--bare-image", "ami-0bare0001"]);
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("machines ended before their agent reported")
            && err.contains("Client.InstanceInitiatedShutdown")
            && err.contains("instance profile")
            && err.contains("AWS CLI"),
        "{err}"
    );
    assert!(!err.contains("taken away"), "not a preemption: {err}");
    let launched = w.study_instances("bare").await.len();
    assert!((3..=6).contains(&launched), "{launched} launches");
    Row {
        key: "k-ec2-bootfail",
        what: "an image without the AWS CLI: every boot fails, the study stops with exit 3 and what to check (AWS)",
        injected: "every instance".into(),
        trials: 6,
        completed: 0,
        launches: launched,
        lost: 0,
        duplicated: w.duplicated("bare").await,
        took,
    }
    .write();
    // Nothing was lost: the trials are recorded, their attempts as failed launches,
    // and `augur run` again would resume them.
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "bare", "--json"]).stdout).expect("json");
    assert!(!trials.is_empty());
    for t in &trials {
        assert_eq!(t["preemptions"], 0, "{t}");
        assert_eq!(t["runs"], 0, "{t}");
    }
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
}

/// EC2 keeps a ClientToken for days, also after its instance has terminated, and
/// answers a repeated token with that first instance
/// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>). A
/// study deleted and run again under its name must get fresh instances, and no
/// trial may show an earlier attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_deleted_and_run_again_gets_fresh_instances() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("again", "ami-12345678", 3));
    w.init();
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    ok(&w.augur(&args));
    let first = w.study_instances("again").await.len();
    assert_eq!(first, 3);
    wait_for(
        Duration::from_secs(30),
        "the first run's instances ended",
        || (futures_lite(w.live_instances()) == 0).then_some(()),
    );
    ok(&w.augur(&["delete", "again", "--yes"]));
    let started = Instant::now();
    let out = w.augur(&args);
    ok(&out);
    let took = started.elapsed();
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "again", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "no earlier attempt: {t}");
    }
    assert_eq!(
        w.study_instances("again").await.len(),
        6,
        "3 fresh instances"
    );
    Row {
        key: "l-ec2-recreated",
        what: "a study deleted and run again under its name: fresh instances, no earlier attempt (AWS)",
        injected: "EC2 keeps every ClientToken".into(),
        trials: 3,
        completed: trials.iter().filter(|t| t["state"] == "succeeded").count(),
        launches: 3,
        lost: 0,
        // The first run's 3 instances share their (trial, attempt) with these.
        duplicated: w.duplicated("again").await.saturating_sub(first),
        took,
    }
    .record();
    // The stand-in did hold the tokens: a repeat of the first run's would have been
    // answered with its terminated instances.
    assert!(w.proxy.ec2().tokens() >= 6);
}

/// `InsufficientInstanceCapacity` is the study's weather, not the trial's fault
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/troubleshooting-launch.html#troubleshooting-launch-capacity>):
/// through a 60 s drought of every launch, with `max_attempts = 1`, the study waits,
/// says so, and every trial succeeds at its first attempt, one instance each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_drought_is_waited_out_without_using_up_attempts() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("dry", "ami-12345678", 3));
    w.init();
    w.start_hypervisor();
    w.proxy
        .ec2()
        .add_drought(Drought::everywhere(Duration::from_secs(60)));
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let run = w.spawn(&args);
    // The wait is on the record too, for `augur trials` and the status page.
    wait_for(Duration::from_secs(30), "a trial shown waiting", || {
        let out = w.augur(&["trials", "dry", "--json"]);
        let trials: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        trials
            .iter()
            .any(|t| {
                t["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("waiting for capacity"))
            })
            .then_some(())
    });
    let out = run.wait_with_output().expect("augur run");
    ok(&out);
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(
        err.contains("waiting for capacity") && err.contains("InsufficientInstanceCapacity"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(60), "{took:?}");
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "dry", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "no attempt used up: {t}");
        assert!(
            !t["status"].as_str().unwrap_or("").starts_with("waiting"),
            "the agent's first write clears the wait: {t}"
        );
    }
    let calls = w.proxy.count("ec2", "RunInstances");
    let instances = w.study_instances("dry").await.len();
    assert_eq!(instances, 3);
    Row {
        key: "m-ec2-drought",
        what: "no capacity anywhere for 60 s, max_attempts = 1: the study waits, no attempt used up (AWS)",
        injected: format!("InsufficientInstanceCapacity, {calls} RunInstances calls"),
        trials: 3,
        completed: trials.iter().filter(|t| t["state"] == "succeeded").count(),
        launches: instances,
        lost: 0,
        duplicated: w.duplicated("dry").await,
        took,
    }
    .record();
}

/// With no room for the first instance type, a launch falls back to the next at
/// once (each type its own ClientToken: EC2 refuses a token reused with other
/// parameters), and the study never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_for_one_type_falls_back_to_the_next_at_once() {
    let mut w = World::new();
    let file = study("fallback", "ami-12345678", 3).replace(
        "[aws]\n",
        "[aws]\ninstance_type = \"t3.micro\"\nfallback_instance_types = [\"t3.small\"]\n",
    );
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor();
    w.proxy
        .ec2()
        .add_drought(Drought::of_type("t3.micro", Duration::from_secs(600)));
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    ok(&out);
    assert!(!text(&out.stderr).contains("waiting for capacity"));
    // One refused call and one launch per trial.
    assert_eq!(w.proxy.count("ec2", "RunInstances"), 6);
    assert_eq!(w.study_instances("fallback").await.len(), 3);
}

/// A drought that outlasts the study's `capacity_timeout` stops the drive with exit
/// 3 and what to do; nothing is used up, and the trials wait to be launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drought_past_the_capacity_timeout_stops_the_study_with_exit_3() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("parched", "ami-12345678", 2));
    w.init();
    w.start_hypervisor();
    w.proxy
        .ec2()
        .add_drought(Drought::everywhere(Duration::from_secs(600)));
    let mut args = vec!["run", "s.toml", "--capacity-timeout", "3s"];
    args.extend(RUN);
    let out = w.augur(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no room to launch") && err.contains("fallback_instance_types"),
        "{err}"
    );
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "parched", "--json"]).stdout).expect("json");
    for t in &trials {
        assert_eq!(t["state"], "pending", "{t}");
        assert_eq!(t["attempt"], 1, "{t}");
    }
    assert_eq!(w.study_instances("parched").await.len(), 0);
}

/// EC2 announces a spot reclaim in the instance's metadata two minutes ahead
/// (`spot/instance-action`,
/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html>;
/// here 4 s). The agent tells the script (the working directory's
/// `augur-preempted.env`, then SIGTERM), keeps its last lines, and records the
/// attempt as preempted: with `max_attempts = 1` the trial still succeeds, on
/// demand (`spot_fallback_after = 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_tells_the_script_and_records_a_preemption() {
    let mut w = World::new();
    let file = study("noticed", "ami-12345678", 2)
        .replace(
            "script = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'",
            "script = '''\ntrap 'echo \"told: $(head -1 \"$AUGUR_WORKDIR/augur-preempted.env\")\"; exit 143' TERM\nif [ \"$AUGUR_ATTEMPT\" = 1 ]; then sleep 60 & wait; fi\necho \"METRICS: v=$AUGUR_PARAM_X\"\n'''",
        )
        .replace("[aws]\n", "[aws]\nspot = true\nspot_fallback_after = 1\n");
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor_with(&["--reclaim-spot", "--spot-notice-ms", "4000"]);
    let started = Instant::now();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    ok(&w.augur(&args));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "the scripts were not ended: {took:?}"
    );
    Row {
        key: "n-ec2-spot-notice",
        what: "spot reclaims announced 4 s ahead: the script is told, the attempt is a preemption (AWS)",
        injected: "every spot instance".into(),
        trials: 2,
        completed: 2,
        launches: w.study_instances("noticed").await.len(),
        lost: 0,
        duplicated: w.duplicated("noticed").await,
        took,
    }
    .record();
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "noticed", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 2, "{t}");
        assert_eq!(t["preemptions"], 1, "{t}");
        assert_eq!(t["runs"], 1, "{t}");
        let id = t["id"].as_u64().expect("id");
        let shown: Value = serde_json::from_slice(
            &w.augur(&["show", &format!("noticed/{id}"), "--json"])
                .stdout,
        )
        .expect("show json");
        let first = &shown["earlier_attempts"][0];
        assert_eq!(first["state"], "lost", "{first}");
        assert!(
            first["error"]
                .as_str()
                .is_some_and(|e| e.contains("spot instance is reclaimed")),
            "{first}"
        );
        let logs = text(&w.augur(&["logs", &format!("noticed/{id}")]).stdout);
        assert!(
            logs.contains("spot reclaim announced") && logs.contains("told: AUGUR_PREEMPTED=1"),
            "{logs}"
        );
    }
}

/// Settings do what they say: with no image, workers boot the latest Amazon Linux
/// 2023 for the type's architecture through the SSM parameter RunInstances
/// resolves (`resolve:ssm:`); `disk_gb` is the root volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_image_and_disk_gb_are_what_instances_launch_with() {
    let mut w = World::new();
    let file = study("plain", "unused", 2).replace(
        "image = \"unused\"\n",
        "instance_type = \"t3.micro\"\ndisk_gb = 50\n",
    );
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    ok(&w.augur(&args));
    // As EC2 got the launches.
    let launches = w.proxy.ec2().launches();
    assert_eq!(launches.len(), 2);
    for params in &launches {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("ImageId"),
            Some(
                "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
            )
        );
        assert_eq!(get("BlockDeviceMapping.1.DeviceName"), Some("/dev/xvda"));
        assert_eq!(get("BlockDeviceMapping.1.Ebs.VolumeSize"), Some("50"));
        assert_eq!(
            get("BlockDeviceMapping.1.Ebs.DeleteOnTermination"),
            Some("true")
        );
        // IMDSv2 only, and one hop: a container a script starts cannot reach the
        // role's credentials (AL2023's own default is 2,
        // https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-new-instances.html).
        assert_eq!(get("MetadataOptions.HttpTokens"), Some("required"));
        assert_eq!(get("MetadataOptions.HttpPutResponseHopLimit"), Some("1"));
    }
}

/// Workers launch from the stack's launch template (its latest version) when there
/// is one: what its owner put in it (here a key pair) reaches every instance, and
/// the request names the subnet itself, which a template with network interfaces
/// would forbid (`InvalidParameterCombination`,
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html>,
/// `SubnetId`), so the stack's template has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_launch_from_the_stacks_launch_template() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("templated", "ami-12345678", 2));
    w.init();
    // The stack's owner adds a key pair to its launch template (a new version):
    // launches are authorized against the key pair too, which the stack allows.
    let id = w.stack.get().expect("stack").launch_template.clone();
    w.aws(&[
        "ec2",
        "create-launch-template-version",
        "--launch-template-id",
        &id,
        "--source-version",
        "1",
        "--launch-template-data",
        r#"{"KeyName":"ops-key"}"#,
    ]);
    w.proxy
        .iam()
        .expect("enforced")
        .template_uses(&id, &["key-pair/ops-key"]);
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    ok(&w.augur(&args));
    let launches = w.proxy.ec2().launches();
    assert_eq!(launches.len(), 2);
    for params in &launches {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LaunchTemplate.LaunchTemplateId"), Some(id.as_str()));
        assert_eq!(get("LaunchTemplate.Version"), Some("$Latest"));
        assert_eq!(get("NetworkInterface.1.DeviceIndex"), None);
    }
    let described = w.aws(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=tag:augur:study,Values=templated",
    ]);
    let keys: Vec<&str> = described["Reservations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["Instances"].as_array().into_iter().flatten())
        .map(|i| i["KeyName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, vec!["ops-key", "ops-key"], "{described}");
}

/// Graviton: an arm64 instance type boots the arm64 Amazon Linux and fetches the
/// aarch64 agent, pinned on its own (`agent_sha256_arm64`). The stand-in's Graviton
/// instances run aarch64 programs only (under qemu), as the hardware does: an
/// x86_64 agent there dies with `Exec format error`. Before anything is launched, a
/// study is refused (exit 2) when no arm64 agent is pinned, or when its fallback
/// types mix architectures (one image boots one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graviton_study_runs_the_aarch64_agent() {
    let mut w = World::new();
    let file = study("arm", "unused", 3).replace(
        "image = \"unused\"\n",
        "instance_type = \"m7g.large\"\nfallback_instance_types = [\"t4g.large\"]\n",
    );
    w.sb.write("arm.toml", &file);
    w.sb.write(
        "mixed.toml",
        &file
            .replace("t4g.large", "t3.large")
            .replace("arm", "mixed"),
    );
    let arm_agent = augur_tests::instance_agent("aarch64");
    let x86_agent = augur_tests::bin_dir().join("augur-agent");
    let out = w.init_with(&[x86_agent, arm_agent.clone()]);
    ok(&out);
    assert!(
        text(&out.stderr).contains(&format!(
            "to s3://augur-e2e/agent/{}/augur-agent-arm64",
            augur_tests::sha256_of(&arm_agent)
        )),
        "{}",
        text(&out.stderr)
    );
    let refused = w.augur(&["run", "arm.toml"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("agent_sha256_arm64"),
        "{}",
        text(&refused.stderr)
    );
    w.start_hypervisor();
    let pin = augur_tests::sha256_of(&arm_agent);
    let arm = |args: &[&str]| {
        w.env(&mut w.sb.cmd(args))
            .env("AUGUR_AGENT_SHA256_ARM64", &pin)
            .output()
            .expect("augur")
    };
    let mixed = arm(&["run", "mixed.toml"]);
    assert_eq!(mixed.status.code(), Some(2), "{}", text(&mixed.stderr));
    assert!(
        text(&mixed.stderr).contains("two architectures"),
        "{}",
        text(&mixed.stderr)
    );
    let started = Instant::now();
    let mut args = vec!["run", "arm.toml"];
    args.extend(RUN);
    ok(&arm(&args));
    let took = started.elapsed();
    for params in &w.proxy.ec2().launches() {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("ImageId"),
            Some(
                "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
            )
        );
        assert_eq!(get("InstanceType"), Some("m7g.large"));
    }
    let log = std::fs::read_to_string(w.sb.path().join("hypervisor.log")).expect("log");
    assert_eq!(
        log.matches("its agent runs (aarch64, under qemu)").count(),
        3,
        "{log}"
    );
    assert!(!log.contains("Exec format error"), "{log}");
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "arm", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 3);
    assert!(
        trials.iter().all(|t| t["state"] == "succeeded"),
        "{trials:?}"
    );
    Row {
        key: "k-ec2-graviton",
        what: "Graviton instances (m7g): the aarch64 agent, under qemu in the stand-in (AWS)",
        injected: "arm64 type".into(),
        trials: 3,
        completed: 3,
        launches: w.study_instances("arm").await.len(),
        lost: 0,
        duplicated: w.duplicated("arm").await,
        took,
    }
    .write();
    assert!(w.study_instances("mixed").await.is_empty());
}

/// `augur init` outside us-east-1: S3 wants the bucket's region named
/// (`LocationConstraint`,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html>); and the
/// agent file may have any name (it is stored as `agent/<its SHA-256>/augur-agent`).
#[test]
fn init_works_in_any_region_with_any_agent_file_name() {
    let w = World::new();
    let agent = w.sb.path().join("my-agent.bin");
    std::fs::copy(augur_tests::bin_dir().join("augur-agent"), &agent).expect("copy");
    let out = w
        .env(&mut w.sb.cmd(&["init", "--agent", &agent.display().to_string()]))
        .env("AWS_REGION", "eu-west-1")
        .env("AUGUR_BUCKET", "augur-e2e-eu")
        .output()
        .expect("augur init");
    ok(&out);
    assert!(
        text(&out.stderr).contains(&format!(
            "to s3://augur-e2e-eu/agent/{}/augur-agent\n",
            augur_tests::sha256_of(&agent)
        )),
        "{}",
        text(&out.stderr)
    );
}

/// Nothing outlives its purpose, even when every augur process is dead: each boot
/// script schedules the power-off at its attempt's hard limit (timeout + grace + 10
/// minutes; here a minute lasts 500 ms). Every instance hangs (its agent and
/// script frozen) and `augur run` is killed with SIGKILL: each instance still ends
/// by itself, at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_end_at_their_hard_limit_when_every_augur_process_is_dead() {
    let mut w = World::new();
    let file = study("abandoned", "ami-12345678", 2)
        .replace(
            "max_attempts = 1\n",
            "max_attempts = 1\ntimeout = \"1m\"\ngrace = \"5s\"\n",
        )
        .replace(
            "script = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'",
            "script = 'sleep 600'",
        );
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor_with(&["--hang-every", "1", "--minute-ms", "500"]);
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let spawned = Instant::now();
    let mut run = w.spawn(&args);
    wait_for(Duration::from_secs(60), "2 instances running", || {
        (futures_lite(w.live_instances()) == 2).then_some(())
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    let _ = run.wait();
    let killed = Instant::now();
    // The limit: 1 min + 5 s of grace, rounded up, + 10 = 12 minutes = 6 s here.
    wait_for(
        Duration::from_secs(60),
        "every instance ended by itself",
        || (futures_lite(w.live_instances()) == 0).then_some(()),
    );
    let took = killed.elapsed();
    // Not before the limit, which counts from each boot script's start.
    let since = spawned.elapsed();
    assert!(since >= Duration::from_secs(6), "{since:?}");
    Row {
        key: "o-ec2-hard-limit",
        what: "every instance hung and augur SIGKILLed: each instance ends by itself at its hard limit (s: after the kill) (AWS)",
        injected: "2 hung instances, no augur".into(),
        trials: 2,
        completed: 0,
        launches: w.study_instances("abandoned").await.len(),
        lost: 0,
        duplicated: w.duplicated("abandoned").await,
        took,
    }
    .write();
}

/// The scheduled tick winds down a study run in the foreground and abandoned: its
/// `augur run` is SIGKILLed while both its instances hang (no heartbeat, a script
/// with no timeout: their hard limit is a week). While the driver lived, the tick
/// left the study to it; once its lease lapsed, one scheduled tick records both
/// attempts lost and ends their instances, launches nothing, and leaves the study
/// active for `augur run` to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_tick_winds_down_a_foreground_study_left_behind() {
    let mut w = World::new();
    let file = study("left", "ami-12345678", 3).replace(
        "script = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'",
        "script = 'sleep 600'",
    );
    w.sb.write("s.toml", &file.replace("parallel = 3", "parallel = 2"));
    w.init();
    w.start_hypervisor_with(&["--hang-every", "1"]);
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let mut run = w.spawn(&args);
    wait_for(Duration::from_secs(60), "2 instances running", || {
        (futures_lite(w.live_instances()) == 2).then_some(())
    });
    let tick = |w: &World| -> Value {
        let out = w.augur(&["tick", "--limit", "20s"]);
        ok(&out);
        serde_json::from_slice(&out.stdout).expect("tick report")
    };
    let alive = tick(&w);
    assert_eq!(
        alive["abandoned"][0]["outcome"], "held",
        "its driver lives: {alive}"
    );
    assert_eq!(alive["abandoned"][0]["terminated"], 0, "{alive}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    let _ = run.wait();
    let killed = Instant::now();
    // The driver's lease (30 s) and the clock-skew margin (5 s) lapse; the hung
    // agents' heartbeat lease (20 s) has lapsed by then too.
    std::thread::sleep(Duration::from_secs(36));
    let report = tick(&w);
    let row = &report["abandoned"][0];
    assert_eq!(row["study"], "left", "{report}");
    assert_eq!(row["lost"], 2, "{report}");
    assert_eq!(row["terminated"], 2, "{report}");
    assert_eq!(row["launched"], 0, "{report}");
    wait_for(Duration::from_secs(30), "no instance left running", || {
        (futures_lite(w.live_instances()) == 0).then_some(())
    });
    let took = killed.elapsed();
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "left", "--json"]).stdout).expect("json");
    let states: Vec<&str> = trials.iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(
        states.iter().filter(|s| **s == "lost").count(),
        2,
        "{trials:?}"
    );
    assert!(!states.contains(&"cancelled"), "{trials:?}");
    let studies: Vec<Value> =
        serde_json::from_slice(&w.augur(&["studies", "--json"]).stdout).expect("json");
    let left = studies.iter().find(|s| s["name"] == "left").expect("study");
    assert_eq!(left["state"], "active", "resumable as it was: {left}");
    assert_eq!(w.study_instances("left").await.len(), 2, "nothing launched");
    Row {
        key: "o-ec2-abandoned-tick",
        what: "a foreground study left behind (augur run SIGKILLed, instances hung): the scheduled tick records them lost and ends them (s: after the kill) (AWS)",
        injected: "augur SIGKILLed, 2 hung".into(),
        trials: 3,
        completed: 0,
        launches: 2,
        lost: 0,
        duplicated: w.duplicated("left").await,
        took,
    }
    .write();
}

/// An agent that cannot record a heartbeat for its give-up horizon (`--give-up`,
/// apart from and at least the lease) ends its script and powers its machine off:
/// augur counts that attempt lost and runs it again elsewhere, so the script must
/// not run on (nor the instance bill on). Here `augur run` is SIGKILLed and DynamoDB
/// then refuses every call: each instance ends about its horizon (4 s) later, not
/// when its 60 s script would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_the_store_past_its_lease_powers_off() {
    use augur_tests::faults::{Fault, Rule};
    let mut w = World::new();
    let file = study("cutoff", "ami-12345678", 2).replace(
        "script = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'",
        "script = 'sleep 60; echo \"METRICS: v=$AUGUR_PARAM_X\"'",
    );
    w.sb.write("s.toml", &file);
    w.init();
    w.start_hypervisor();
    let args = [
        "run",
        "s.toml",
        "--heartbeat",
        "500ms",
        "--heartbeat-timeout",
        "3s",
        "--give-up",
        "4s",
        "--backoff-base",
        "100ms",
    ];
    let mut run = w.spawn(&args);
    wait_for(Duration::from_secs(60), "2 trials running", || {
        let out = w.augur(&["trials", "cutoff", "--json"]);
        let trials: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        (trials.iter().filter(|t| t["state"] == "running").count() == 2).then_some(())
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    let _ = run.wait();
    w.proxy.add(Rule::new("dynamodb", "*", Fault::Refuse));
    let cut = Instant::now();
    wait_for(
        Duration::from_secs(45),
        "every instance ended by itself",
        || (futures_lite(w.live_instances()) == 0).then_some(()),
    );
    let took = cut.elapsed();
    assert!(took < Duration::from_secs(45), "{took:?}");
    Row {
        key: "p-ec2-store-cut",
        what: "augur SIGKILLed and DynamoDB refused: each agent ends its script at its give-up horizon and powers off (s: after the cut) (AWS)",
        injected: "every DynamoDB call refused".into(),
        trials: 2,
        completed: 0,
        launches: w.study_instances("cutoff").await.len(),
        lost: 0,
        duplicated: w.duplicated("cutoff").await,
        took,
    }
    .write();
}

/// The agent is pinned by its SHA-256 in each launch: when the object under the
/// pinned build's key is another build (here a working agent with bytes added, as
/// a tampered build would be), the boot script runs nothing and writes why into the attempt's record; the
/// trial fails with that reason, not retried, and no script ran. Without a pin the
/// aws backend refuses to launch at all (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_not_the_pinned_one_never_runs() {
    let mut w = World::new();
    w.sb.write("s.toml", &study("pinned", "ami-12345678", 2));
    let out = w
        .env(&mut w.sb.cmd(&["run", "s.toml"]))
        .env_remove("AUGUR_AGENT_SHA256")
        .output()
        .expect("augur");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("agent_sha256"),
        "{}",
        text(&out.stderr)
    );
    // The object under the pinned build's key replaced (the pin, World's, is the
    // real agent's; the key names it: agent/<sha256>/augur-agent).
    let tampered = w.sb.path().join("augur-agent");
    let mut bytes = std::fs::read(augur_tests::bin_dir().join("augur-agent")).expect("agent");
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&tampered, &bytes).expect("write");
    ok(&w.init_with(&[]));
    let key = augur_aws::instance::Arch::X86_64.agent_key(augur_tests::agent_sha256());
    w.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        "augur-e2e",
        "--key",
        &key,
        "--body",
        &tampered.display().to_string(),
    ]);
    let found = augur_tests::sha256_of(&tampered);
    w.start_hypervisor();
    let mut args = vec!["run", "s.toml"];
    args.extend(RUN);
    let out = w.augur(&args);
    let trials: Vec<Value> =
        serde_json::from_slice(&w.augur(&["trials", "pinned", "--json"]).stdout).expect("json");
    assert_eq!(trials.len(), 2, "{}", text(&out.stderr));
    for t in &trials {
        assert_eq!(t["state"], "failed", "{t}");
        assert_eq!(t["attempt"], 1, "not retried: {t}");
        assert_eq!(t["runs"], 0, "{t}");
        let error = t["error"].as_str().unwrap_or("");
        assert!(
            error.starts_with("refused: the agent fetched from the bucket")
                && error.contains(&format!(
                    "SHA-256 {found}, not the pinned {}",
                    augur_tests::agent_sha256()
                )),
            "{t}"
        );
    }
    assert_eq!(
        w.study_instances("pinned").await.len(),
        2,
        "one launch each"
    );
    // The agent's home on each instance (/var/lib/augur) stayed empty: it never ran.
    let homes: Vec<_> = std::fs::read_dir(w.sb.path().join("instances"))
        .expect("instances")
        .flatten()
        .map(|e| e.path().join("var/lib/augur"))
        .collect();
    assert_eq!(homes.len(), 2);
    for home in homes {
        let used = std::fs::read_dir(&home).map(|d| d.count()).unwrap_or(0);
        assert_eq!(used, 0, "the agent ran: {}", home.display());
    }
}
