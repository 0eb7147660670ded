//! IAM as a real account enforces it. Every AWS test runs under the stack's policies
//! (`World::init` deploys the stack and enforces `infra/augur.yaml`; a refused
//! request fails its test). Here: what a missing grant does to each kind of caller
//! (a foreground run exits 2 within seconds naming the grant and uses no attempt; a
//! tick stops the study with the reason recorded), and which calls of the paths
//! each of the template's grants is there for.

use augur_tests::cloud::{World, RUN};
use augur_tests::{ok, text};
use serde_json::Value;
use std::time::{Duration, Instant};

fn study(name: &str, n: usize, extra: &str) -> String {
    let xs: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!(
        "name = \"{name}\"\nobjective = {{ metric = \"v\" }}\noracle = \"grid\"\nparallel = 2\n[params]\nx = {{ values = [{}] }}\n[run]\nmax_attempts = 2\nscript = 'echo \"METRICS: v=$AUGUR_PARAM_X\"'\n[aws]\nimage = \"ami-12345678\"\n{extra}\n",
        xs.join(", ")
    )
}

fn run_args(file: &str) -> Vec<String> {
    let mut args = vec!["run".to_string(), file.to_string()];
    args.extend(RUN.iter().map(|s| s.to_string()));
    args
}

fn augur(w: &World, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.augur(&args)
}

fn trials(w: &World, study: &str) -> Vec<Value> {
    let out = w.augur(&["trials", study, "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("trials json")
}

/// A foreground run whose launches the CLI's policy refuses exits 2 within seconds,
/// naming the action, the resource, the policy and the grant; it made no instance
/// and used no attempt, and once the grant is back the same run finishes with
/// every trial on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_launch_exits_2_naming_the_grant_and_costs_no_attempt() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.allow_denials();
    let iam = w.proxy.iam().expect("enforced");
    iam.without("CliPolicy", "LaunchWorkers");
    w.sb.write("s.toml", &study("refused", 2, ""));
    let started = Instant::now();
    let out = augur(&w, &run_args("s.toml"));
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    for word in ["ec2:RunInstances", ":instance/*", "CliPolicy", "grant"] {
        assert!(err.contains(word), "`{word}` not in: {err}");
    }
    let refused = w.denied();
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|d| d.action == "ec2:RunInstances"),
        "{refused:?}"
    );
    assert_eq!(w.instances().await.len(), 0);
    let ts = trials(&w, "refused");
    assert!(ts.iter().all(|t| t["attempt"] == 1), "{ts:?}");
    let said = ts
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect::<Vec<_>>();
    assert!(said.iter().any(|s| s.contains("launch refused")), "{ts:?}");

    iam.restore();
    let refusals = w.denied().len();
    ok(&augur(&w, &run_args("s.toml")));
    assert_eq!(w.denied().len(), refusals, "nothing refused once granted");
    let ts = trials(&w, "refused");
    assert!(
        ts.iter()
            .all(|t| t["state"] == "succeeded" && t["attempt"] == 1),
        "{ts:?}"
    );
}

/// A launch EC2 refuses as asked (here a subnet that does not exist:
/// `InvalidSubnetID.NotFound`) is a configuration error as a missing grant is:
/// exit 2 within seconds naming it, no instance, no attempt used; once the
/// setting is fixed, the same run finishes on first attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_ec2_rejects_exits_2_and_costs_no_attempt() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.sb.write("s.toml", &study("badnet", 2, ""));
    let args = run_args("s.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = w
        .command(&args)
        .env("AUGUR_SUBNET", "subnet-0000dead")
        .output()
        .expect("augur");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("InvalidSubnetID.NotFound"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert_eq!(w.instances().await.len(), 0);
    let ts = trials(&w, "badnet");
    assert!(ts.iter().all(|t| t["attempt"] == 1), "{ts:?}");
    ok(&w.augur(&args));
    let ts = trials(&w, "badnet");
    assert!(
        ts.iter()
            .all(|t| t["state"] == "succeeded" && t["attempt"] == 1),
        "{ts:?}"
    );
}

/// A store the CLI may not read is a configuration error too: exit 2 at once,
/// naming `dynamodb:...` and the policy, never "unavailable" retried for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_table_exits_2_at_once() {
    let w = World::new();
    w.init();
    w.allow_denials();
    w.proxy
        .iam()
        .expect("enforced")
        .without("CliPolicy", "Records");
    w.sb.write("s.toml", &study("norecords", 1, ""));
    let started = Instant::now();
    let out = augur(&w, &run_args("s.toml"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert!(
        err.contains("dynamodb:") && err.contains("CliPolicy"),
        "{err}"
    );
    assert!(!err.contains("unavailable"), "{err}");
}

/// Under ticks, a refused launch stops the study with the reason recorded (shown
/// by `augur studies` and `augur show`), and the tick goes on with other studies;
/// once the grant is back and the study is submitted again, ticks finish it on
/// first attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tick_stops_the_study_with_the_reason() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.allow_denials();
    let iam = w.proxy.iam().expect("enforced");
    iam.without("TickRole", "LaunchWorkers");
    w.sb.write("s.toml", &study("ticked", 2, ""));
    ok(&w.augur(&["submit", "s.toml"]));
    let out = w.augur(&["tick", "--limit", "20s"]);
    ok(&out);
    let report = text(&out.stdout);
    assert!(
        report.contains("stopped"),
        "{report}\n{}",
        text(&out.stderr)
    );
    assert!(w.denied().iter().all(|d| d.identity == "TickRole"));
    let studies = w.augur(&["studies"]);
    ok(&studies);
    let listed = text(&studies.stdout);
    assert!(
        listed.contains("ec2:RunInstances") && listed.contains("TickRole"),
        "{listed}"
    );
    let shown = w.augur(&["show", "ticked/1"]);
    ok(&shown);
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("stopped") && shown.contains("TickRole"),
        "{shown}"
    );
    // A later tick leaves a stopped study alone: no launch asked again.
    let asked = w.denied().len();
    ok(&w.augur(&["tick", "--limit", "10s"]));
    assert_eq!(w.denied().len(), asked);

    iam.restore();
    ok(&w.augur(&["submit", "s.toml"]));
    let mut done = false;
    for _ in 0..40 {
        ok(&w.augur(&["tick", "--limit", "20s"]));
        let ts = trials(&w, "ticked");
        if ts.len() == 2 && ts.iter().all(|t| t["state"] == "succeeded") {
            assert!(ts.iter().all(|t| t["attempt"] == 1), "{ts:?}");
            done = true;
            break;
        }
    }
    assert!(done, "{:?}", trials(&w, "ticked"));
}

/// Which calls of augur's paths each grant of the template is there for. The paths
/// of a team on AWS run under the stack's policies (any refusal fails this test):
/// a foreground run on spot with the default image, a root volume, a checkpoint and
/// secrets from SSM and Secrets Manager; a warm study of an `ami-` image with a root
/// volume (its root device looked up); a submitted study driven by ticks; logs,
/// `stop`, `gc`, `delete` and `doctor`. Then each grant is taken away in turn
/// and the calls it would have refused are printed: every grant a path needs is
/// needed by some call, and the grants no path here needs are the ones named below
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_is_there_for_a_path() {
    let mut w = World::new();
    w.aws(&[
        "ssm",
        "put-parameter",
        "--name",
        "/augur/k",
        "--type",
        "SecureString",
        "--value",
        "v1",
    ]);
    let sm = w.aws(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "augur/s",
        "--secret-string",
        "v2",
    ]);
    let sm = sm["ARN"].as_str().expect("ARN").to_string();
    w.init();
    w.start_hypervisor();
    let fg = format!(
        "name = \"fg\"\nobjective = {{ metric = \"v\" }}\ntrials = 1\n[run]\nmax_attempts = 2\nsecrets = {{ K = \"ssm:/augur/k\", S = \"{sm}\" }}\nfiles = [\"helper.sh\"]\nscript = '''\nbash helper.sh; echo 1 > \"$AUGUR_CHECKPOINT_DIR/c\"; sleep 2; echo \"METRICS: v=1\"\n'''\n[aws]\nspot = true\ndisk_gb = 20\n"
    );
    w.sb.write("fg.toml", &fg);
    w.sb.write("helper.sh", "echo helped\n");
    ok(&augur(&w, &run_args("fg.toml")));
    w.sb.write(
        "warm.toml",
        &study("warm", 2, "disk_gb = 20")
            .replace("[aws]", "reuse = \"study\"\n[aws]")
            .replace("parallel = 2", "parallel = 1"),
    );
    ok(&augur(&w, &run_args("warm.toml")));
    // Ticks launch the default image (no `image`).
    w.sb.write(
        "sub.toml",
        &study("sub", 2, "").replace("image = \"ami-12345678\"\n", ""),
    );
    ok(&w.augur(&["submit", "sub.toml"]));
    let mut done = false;
    for _ in 0..40 {
        ok(&w.augur(&["tick", "--limit", "20s"]));
        let ts = trials(&w, "sub");
        if ts.len() == 2 && ts.iter().all(|t| t["state"] == "succeeded") {
            done = true;
            break;
        }
    }
    assert!(done, "{:?}", trials(&w, "sub"));
    ok(&w.augur(&["logs", "fg/1"]));
    ok(&w.augur(&["stop", "sub"]));
    ok(&w.augur(&["gc"]));
    ok(&w.augur(&["delete", "fg", "--yes"]));
    ok(&w.augur(&["doctor"]));

    let iam = w.proxy.iam().expect("enforced");
    let mut unneeded = Vec::new();
    eprintln!(
        "{:<11} {:<24} calls refused without it",
        "identity", "grant"
    );
    for (who, sid) in iam.statements() {
        let calls = iam.needing(&who, &sid);
        eprintln!("{who:<11} {sid:<24} {}", calls.join(", "));
        if calls.is_empty() {
            unneeded.push(format!("{who}/{sid}"));
        }
    }
    // Needed by what these paths do not do here: the Lambda's stream trigger, its
    // failure queue and its own log group (the Lambda runtime's calls, not
    // augur's), reading EC2's refusals (only when one happens: the tests above),
    // and the tick's ending of instances (its wind-down of a study left behind,
    // `ec2.rs`, `the_scheduled_tick_winds_down_a_foreground_study_left_behind`,
    // also under the stack's policies).
    let expected = [
        "TickRole/EndAugurInstancesOnly",
        "TickRole/Stream",
        "TickRole/SetFailedBatchesAside",
        "TickRole/OwnLogs",
        "TickRole/ReadRefusals",
        "CliPolicy/ReadRefusals",
    ];
    let surprising: Vec<&String> = unneeded
        .iter()
        .filter(|u| !expected.contains(&u.as_str()))
        .collect();
    assert!(
        surprising.is_empty(),
        "grants no path needed: {surprising:?}"
    );
}

/// A trial script holds the worker role's credentials (it runs as root beside the
/// agent). Here one attacks another study and the stack with the AWS CLI on its
/// instance; the stand-in, enforcing the template, refuses what the template can
/// express, and the one write it cannot (another study's trial partition: IAM
/// cannot tie an instance's credentials to its study) leaves the victim's reads
/// whole: the planted item is set aside, not a study-wide failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_script_cannot_reach_beyond_what_the_template_allows() {
    let mut w = World::new();
    w.init();
    w.start_hypervisor();
    w.allow_denials();
    w.sb.write("victim.toml", &study("victim", 2, ""));
    ok(&augur(&w, &run_args("victim.toml")));
    // A second study, submitted, not yet driven: a well-formed pending trial is
    // planted in its partition (a copy of a real trial item, with other values).
    w.sb.write("victim2.toml", &study("victim2", 2, ""));
    ok(&w.augur(&["submit", "victim2.toml"]));
    w.sb.write("planted.json", &planted_trial(&w, "victim", "victim2", 50));
    // (name, the request, whether the template refuses it)
    let attacks: [(&str, &str, bool); 13] = [
        (
            "rewrite a study's spec",
            r#"aws dynamodb put-item --table-name "$T" --item '{"pk":{"S":"victim"},"sk":{"S":"study"},"data":{"S":"{}"}}'"#,
            true,
        ),
        (
            "drop a study's lease",
            r#"aws dynamodb delete-item --table-name "$T" --key '{"pk":{"S":"victim"},"sk":{"S":"lease"}}'"#,
            true,
        ),
        (
            "read the whole table",
            r#"aws dynamodb scan --table-name "$T""#,
            true,
        ),
        (
            "read it with PartiQL",
            r#"aws dynamodb execute-statement --statement "SELECT * FROM \"$T\"""#,
            true,
        ),
        (
            "query a study's partition",
            r#"aws dynamodb query --table-name "$T" --key-condition-expression 'pk = :p' --expression-attribute-values '{":p":{"S":"victim"}}'"#,
            true,
        ),
        (
            "replace the agent",
            r#"aws s3 cp /etc/hostname "s3://$B/agent/$A/augur-agent""#,
            true,
        ),
        (
            "write a study's files",
            r#"aws s3 cp /etc/hostname "s3://$B/studies/victim/x""#,
            true,
        ),
        (
            "read a secret outside the prefix",
            r#"aws ssm get-parameter --name /other/secret"#,
            true,
        ),
        (
            "launch an instance",
            r#"aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro"#,
            true,
        ),
        (
            "end an instance",
            r#"aws ec2 terminate-instances --instance-ids i-0123456789abcdef0"#,
            true,
        ),
        (
            "delete a study's logs",
            r#"aws logs delete-log-group --log-group-name /augur/victim"#,
            true,
        ),
        (
            "plant a trial in another study",
            r#"aws dynamodb put-item --table-name "$T" --item '{"pk":{"S":"trials#victim"},"sk":{"S":"trial#0000000099"},"data":{"S":"not a record"}}'"#,
            false,
        ),
        (
            "plant a pending trial in another study",
            r#"aws dynamodb put-item --table-name "$T" --item file://planted.json"#,
            false,
        ),
    ];
    let mut script = String::from("try() { n=\"$1\"; shift; if eval \"$@\" > /dev/null 2> err; then echo \"ATTACK $n: allowed\"; else echo \"ATTACK $n: refused: $(tr '\\n' ' ' < err | cut -c1-160)\"; fi; }\n");
    for (name, request, _) in &attacks {
        script.push_str(&format!(
            "try {} {}\n",
            shell_quote(name),
            shell_quote(request)
        ));
    }
    script.push_str("echo \"METRICS: v=1\"\n");
    w.sb.write("attack.sh", &script);
    let table = w.table.clone();
    // The pinned agent's key: agent/<its SHA-256>/augur-agent.
    let pin = augur_tests::agent_sha256();
    w.sb.write(
        "attacker.toml",
        &format!(
            "name = \"attacker\"\nobjective = {{ metric = \"v\" }}\ntrials = 1\n[run]\nfiles = [\"attack.sh\", \"planted.json\"]\nenv = {{ T = \"{table}\", B = \"augur-e2e\", A = \"{pin}\" }}\nscript = 'bash attack.sh'\n[aws]\nimage = \"ami-12345678\"\n"
        ),
    );
    ok(&augur(&w, &run_args("attacker.toml")));
    let log = text(&w.augur(&["logs", "attacker/1"]).stdout);
    let refused: Vec<_> = w
        .denied()
        .into_iter()
        .filter(|d| d.identity == "WorkerRole")
        .collect();
    eprintln!("{:<34} {:<8} what refused it", "attack", "outcome");
    for (name, _, expect_refused) in &attacks {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("ATTACK {name}:")))
            .unwrap_or_else(|| panic!("no outcome for {name}: {log}"));
        let was_refused = line.contains(": refused");
        eprintln!(
            "{name:<34} {:<8} {}",
            if was_refused { "refused" } else { "allowed" },
            line.split(": refused: ").nth(1).unwrap_or("-")
        );
        assert_eq!(was_refused, *expect_refused, "{line}");
    }
    for d in &refused {
        eprintln!("refused by the stand-in: {d}");
    }
    assert!(
        refused.len() >= 11,
        "each refusal is the stand-in's IAM: {refused:#?}"
    );
    // The planted item is set aside: the victim's trials read as before, and the
    // study runs again.
    let ts = trials(&w, "victim");
    assert_eq!(ts.len(), 2, "{ts:?}");
    ok(&augur(&w, &run_args("victim.toml")));
    // The planted pending trial is set aside: never shown, counted or launched;
    // the study's own trials run, on their own points.
    ok(&augur(&w, &run_args("victim2.toml")));
    let ts = trials(&w, "victim2");
    assert!(ts.iter().all(|t| t["id"] != 50), "{ts:?}");
    assert!(
        ts.len() == 2 && ts.iter().all(|t| t["state"] == "succeeded"),
        "{ts:?}"
    );
    let launched = w.study_instances("victim2").await;
    assert!(launched.iter().all(|i| i.0 != 50), "{launched:?}");
    assert_eq!(launched.len(), 2, "{launched:?}");
}

/// A DynamoDB item for a pending trial `id` of study `to`, copied from trial 1 of
/// `from` as stored (its attributes as augur writes them), with its own values.
fn planted_trial(w: &World, from: &str, to: &str, id: u64) -> String {
    let key =
        serde_json::json!({"pk": {"S": format!("trials#{from}")}, "sk": {"S": "trial#0000000001"}});
    let got = w.aws(&[
        "dynamodb",
        "get-item",
        "--table-name",
        &w.table,
        "--key",
        &key.to_string(),
    ]);
    let mut item = got["Item"].clone();
    let mut data: Value =
        serde_json::from_str(item["data"]["S"].as_str().expect("data")).expect("trial json");
    data["study"] = to.into();
    data["id"] = id.into();
    data["point"] = 77.into();
    data["state"] = "pending".into();
    data["attempt"] = 1.into();
    data["runs"] = 0.into();
    for k in [
        "machine",
        "started_ms",
        "heartbeat_ms",
        "finished_ms",
        "exit_code",
        "error",
        "status",
        "log",
        "launched_ms",
        "billing",
    ] {
        data[k] = Value::Null;
    }
    data["metrics"] = serde_json::json!({});
    data["series"] = serde_json::json!([]);
    data["log_tail"] = serde_json::json!([]);
    data["history"] = serde_json::json!([]);
    item["pk"] = serde_json::json!({"S": format!("trials#{to}")});
    item["sk"] = serde_json::json!({"S": format!("trial#{id:010}")});
    item["data"] = serde_json::json!({"S": data.to_string()});
    if item.get("state").is_some() {
        item["state"] = serde_json::json!({"S": "pending"});
    }
    if item.get("chg").is_some() {
        item["chg"] = serde_json::json!({"N": augur_store::now_ms().to_string()});
    }
    item.to_string()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `augur doctor` asks IAM's policy simulator about every call of every path, for
/// the CLI's user and the stack's two roles (their ARNs from the config deploy.sh
/// writes): all allowed with the template. With a grant taken away it exits 2
/// naming the call and where the grant belongs, before anything is launched; a
/// caller who may not simulate is told so (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_missing_grant_before_anything_launches() {
    let w = World::new();
    w.init();
    let out = w.augur(&["doctor"]);
    ok(&out);
    let said = text(&out.stdout);
    for who in [
        "CliPolicy (arn:aws:iam::123456789012:user/augur-user)",
        "TickRole (",
        "WorkerRole (",
    ] {
        assert!(said.contains(who), "{who}: {said}");
    }
    assert!(!said.contains("refused"), "{said}");
    let iam = w.proxy.iam().expect("enforced");
    for (who, sid, call) in [
        ("TickRole", "DefaultImage", "ssm:GetParameters"),
        ("WorkerRole", "PollStudyTrials", "dynamodb:Query"),
        ("CliPolicy", "LaunchInto", "ec2:RunInstances"),
    ] {
        iam.without(who, sid);
        let out = w.augur(&["doctor"]);
        let said = text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{said}{}", text(&out.stderr));
        let line = said
            .lines()
            .find(|l| l.contains("refused"))
            .unwrap_or_else(|| panic!("nothing refused without {who}/{sid}: {said}"));
        assert!(line.contains(call) && line.contains(who), "{line}");
        eprintln!("without {who}/{sid}: {line}");
        iam.restore();
    }
    w.allow_denials();
    iam.without("CliPolicy", "CheckPermissions");
    let out = w.augur(&["doctor"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("iam:SimulatePrincipalPolicy") && err.contains("CliPolicy"),
        "{err}"
    );
    assert!(w.instances().await.is_empty());
}
