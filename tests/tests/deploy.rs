//! `infra/deploy.sh` against the emulator: the stack deploys (and deploys again with no
//! change), its resources and wiring are as the template says, and the CLI config it
//! writes is all `augur submit` and `augur tick` need to run a study.
//!
//! The emulator accepts resource types it does not emulate, so this
//! checks each resource the deploy made through the service's own API where moto
//! has one; cfn-lint and the IAM check (scripts/infra-check.sh) prove the template.

use augur_tests::emulator::Emulator;
use augur_tests::{awscli, ok, repo, text, Sandbox};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

struct Deploy {
    emu: Emulator,
    sb: Sandbox,
    aws: PathBuf,
}

impl Deploy {
    fn env<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("AWS_ENDPOINT_URL", &self.emu.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS", &self.aws)
            .env("AUGUR_CONFIG", self.config())
            .env_remove("AUGUR_TABLE")
            .env_remove("AUGUR_BUCKET")
            .env_remove("AUGUR_BACKEND")
            .stdin(Stdio::null())
    }

    fn config(&self) -> PathBuf {
        self.sb.path().join("config/augur.toml")
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        let agent = augur_tests::instance_agent("x86_64");
        let lambda = agent.with_file_name("augur-lambda");
        let mut c = Command::new("bash");
        c.arg(repo().join("infra/deploy.sh"))
            .args(["--stack", "augur-ci", "--agent"])
            .arg(&agent)
            .arg("--agent-arm64")
            .arg(augur_tests::instance_agent("aarch64"))
            .arg("--lambda")
            .arg(&lambda)
            .args(extra);
        self.env(&mut c).output().expect("deploy.sh")
    }

    fn aws(&self, args: &[&str]) -> Value {
        let mut c = Command::new(&self.aws);
        c.args(args).args(["--output", "json"]);
        let out = self.env(&mut c).output().expect("aws");
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn augur(&self, args: &[&str]) -> Output {
        // Only the config file: no AUGUR_TABLE or AUGUR_BUCKET in the environment.
        let mut c = self.sb.cmd(args);
        self.env(&mut c).output().expect("augur")
    }
}

#[test]
fn the_stack_deploys_into_the_emulator_and_the_cli_runs_on_its_config() {
    let d = Deploy {
        emu: Emulator::start(),
        sb: Sandbox::new(),
        aws: awscli(),
    };
    // Bad arguments: one message, exit 2, nothing deployed.
    let out = d.deploy(&["--tick-rate", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--tick-rate"));
    let out = d.deploy(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.deploy(&["--instance-types", "t3.micro;reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--instance-types"));
    // A network or an image that is not there: said before anything is made.
    for (args, says) in [
        (
            &["--subnet", "subnet-0123456789abcdef0"][..],
            "no such subnet",
        ),
        (&["--vpc", "vpc-0123456789abcdef0"][..], "no such VPC"),
        (&["--image", "ami-0123456789abcdef0"][..], "no such image"),
    ] {
        let out = d.deploy(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    let rtb = main_route_table(&d);
    let out = d.deploy(&["--route-tables", "rtb-0123456789abcdef0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no route table rtb-0123456789abcdef0"));
    assert!(!d.config().exists());

    let start = Instant::now();
    let out = d.deploy(&["--route-tables", &rtb]);
    ok(&out);
    eprintln!(
        "first deploy: {:.1}s\n{}",
        start.elapsed().as_secs_f64(),
        text(&out.stderr)
    );
    let stacks = d.aws(&[
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        "augur-ci",
    ]);
    assert_eq!(stacks["Stacks"][0]["StackStatus"], "CREATE_COMPLETE");
    // Spot launches through the API need EC2's spot service-linked role.
    let roles = d.aws(&[
        "iam",
        "list-roles",
        "--path-prefix",
        "/aws-service-role/spot.amazonaws.com/",
    ]);
    assert_eq!(roles["Roles"].as_array().map(Vec::len), Some(1), "{roles}");

    // Every resource of the template, complete.
    let template = std::fs::read_to_string(repo().join("infra/augur.yaml")).expect("template");
    let body = template
        .split("\nResources:\n")
        .nth(1)
        .and_then(|r| r.split("\nOutputs:\n").next())
        .expect("Resources section");
    let mut declared: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.strip_suffix(':'))
        .filter(|n| !n.starts_with(' '))
        .collect();
    declared.sort();
    let res = d.aws(&[
        "cloudformation",
        "list-stack-resources",
        "--stack-name",
        "augur-ci",
    ]);
    let res = res["StackResourceSummaries"].as_array().expect("resources");
    let mut made: Vec<&str> = res
        .iter()
        .map(|r| r["LogicalResourceId"].as_str().unwrap_or("?"))
        .collect();
    made.sort();
    for r in res {
        eprintln!(
            "  {:<24} {:<34} {}",
            r["LogicalResourceId"].as_str().unwrap_or("?"),
            r["ResourceType"].as_str().unwrap_or("?"),
            r["ResourceStatus"].as_str().unwrap_or("?")
        );
    }
    // moto lists an S3 bucket policy without its logical id or type, and does not
    // apply it (S3 answers NoSuchBucketPolicy), nor the bucket's public access block:
    // for those only cfn-lint and the IAM check vouch.
    if made.contains(&"") && !made.contains(&"BucketPolicy") {
        made.retain(|m| !m.is_empty());
        declared.retain(|d| *d != "BucketPolicy");
    }
    assert_eq!(made, declared, "one stack resource per declared resource");
    assert!(res.iter().all(|r| r["ResourceStatus"] == "CREATE_COMPLETE"));

    // The config the CLI reads, from the stack's outputs.
    let cfg = std::fs::read_to_string(d.config()).expect("config written");
    let field = |k: &str| {
        cfg.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {k} in {cfg}"))
            .to_string()
    };
    let (table, bucket, tick) = (field("table"), field("bucket"), field("tick_function"));

    // The wiring, checked through each service.
    let t = d.aws(&["dynamodb", "describe-table", "--table-name", &table]);
    assert_eq!(
        t["Table"]["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    assert_eq!(
        t["Table"]["BillingModeSummary"]["BillingMode"],
        "PAY_PER_REQUEST"
    );
    let f = d.aws(&["lambda", "get-function", "--function-name", &tick]);
    let fc = &f["Configuration"];
    assert_eq!(fc["Runtime"], "provided.al2023");
    assert_eq!(fc["Handler"], "bootstrap");
    assert_eq!(
        fc["Environment"]["Variables"]["AUGUR_TABLE"],
        table.as_str()
    );
    assert_eq!(
        fc["Environment"]["Variables"]["AUGUR_BUCKET"],
        bucket.as_str()
    );
    // The stream mapping never blocks its shard on a failing batch: split, retried
    // twice, then set aside in the stack's queue.
    let maps = d.aws(&[
        "lambda",
        "list-event-source-mappings",
        "--function-name",
        &tick,
    ]);
    let m = &maps["EventSourceMappings"][0];
    assert_eq!(m["MaximumRetryAttempts"], 2, "{maps}");
    assert_eq!(m["BisectBatchOnFunctionError"], true, "{maps}");
    assert!(
        m["DestinationConfig"]["OnFailure"]["Destination"]
            .as_str()
            .is_some_and(|q| q.starts_with("arn:aws:sqs:")),
        "{maps}"
    );
    // The agent is pinned by its SHA-256, for the CLI and the tick alike.
    // Workers launch from the stack's launch template, for the CLI and the tick alike.
    let template = fc["Environment"]["Variables"]["AUGUR_LAUNCH_TEMPLATE"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(template.starts_with("lt-"), "{fc}");
    assert!(
        cfg.contains(&format!("\nlaunch_template = \"{template}\"")),
        "{cfg}"
    );
    // Both agents: x86_64, and aarch64 for Graviton types.
    let objects = d.aws(&["s3api", "list-objects-v2", "--bucket", &bucket]);
    for (arch, setting, var, file) in [
        (
            "x86_64",
            "agent_sha256",
            "AUGUR_AGENT_SHA256",
            "augur-agent",
        ),
        (
            "aarch64",
            "agent_sha256_arm64",
            "AUGUR_AGENT_SHA256_ARM64",
            "augur-agent-arm64",
        ),
    ] {
        let pin = augur_tests::sha256_of(&augur_tests::instance_agent(arch));
        // Each build under a key named by its SHA-256.
        let key = format!("agent/{pin}/{file}");
        assert!(cfg.contains(&format!("\n{setting} = \"{pin}\"")), "{cfg}");
        assert_eq!(fc["Environment"]["Variables"][var], pin.as_str());
        assert!(
            objects["Contents"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["Key"] == key)),
            "{key} was uploaded: {objects}"
        );
    }
    bucket_keeps_no_bill_growing(&d, &bucket);
    let groups = d.aws(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/augur",
    ]);
    assert!(groups["logGroups"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g["retentionInDays"] == 30)));

    gateway_endpoints(&d, &rtb);

    // Again: an update, to the same settings.
    let out = d.deploy(&["--route-tables", &rtb]);
    ok(&out);
    assert_eq!(
        std::fs::read_to_string(d.config()).expect("config"),
        cfg,
        "the same stack, the same config"
    );
    let stacks = d.aws(&[
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        "augur-ci",
    ]);
    let status = stacks["Stacks"][0]["StackStatus"].as_str().unwrap_or("");
    assert!(status.ends_with("_COMPLETE"), "{status}");

    // The CLI on the config alone: submit, then ticks, on the deployed table.
    d.sb.write(
        "s.toml",
        "name = \"deployed\"\nobjective = { metric = \"m\" }\ntrials = 1\n[run]\nscript = 'echo METRICS: m=1'\n[aws]\nimage = \"ami-12345678\"\n",
    );
    // A secret the stack's instance role may not read: refused before anything.
    d.sb.write(
        "outside.toml",
        "name = \"outside\"\nobjective = { metric = \"m\" }\ntrials = 1\n[run]\nscript = 'true'\nsecrets = { K = \"ssm:/team/k\" }\n[aws]\nimage = \"ami-12345678\"\n",
    );
    assert!(cfg.contains("secrets_prefix = \"augur/\""), "{cfg}");
    let out = d.augur(&["submit", "--backend", "aws", "outside.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("outside the stack's secrets prefix `augur/`"),
        "{}",
        text(&out.stderr)
    );
    ok(&d.augur(&["submit", "--backend", "aws", "s.toml"]));
    let out = d.augur(&["tick", "--backend", "aws", "--limit", "10s"]);
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).expect("tick json");
    assert_eq!(report["studies"][0]["study"], "deployed", "{report}");
    assert_eq!(report["studies"][0]["launched"], 1, "{report}");
    let inst = d.aws(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=tag:augur:study,Values=deployed",
    ]);
    let i = &inst["Reservations"][0]["Instances"][0];
    let sg = i["SecurityGroups"][0]["GroupId"].as_str().unwrap_or("");
    assert!(
        cfg.contains(sg) && !sg.is_empty(),
        "launched into the stack's security group: {i}"
    );
    assert!(
        i["IamInstanceProfile"]["Arn"]
            .as_str()
            .is_some_and(|a| a.contains(&field("instance_profile"))),
        "with the stack's instance profile: {i}"
    );
    new_builds_keep_the_pinned_ones(&d, &bucket, &tick, &rtb);
    ok(&d.augur(&["stop", "--backend", "aws", "deployed"]));

    // Teardown; the data stays.
    let out = d.deploy(&["--delete"]);
    ok(&out);
    let t = d.aws(&["dynamodb", "describe-table", "--table-name", &table]);
    assert_eq!(
        t["Table"]["TableName"],
        table.as_str(),
        "the table is retained"
    );
}

/// The deployed bucket is versioned, and its lifecycle rules (each by name) expire
/// what nothing reads any more: replaced builds, study files and checkpoints, delete
/// markers left alone, parts of uploads never completed.
fn bucket_keeps_no_bill_growing(d: &Deploy, bucket: &str) {
    let v = d.aws(&["s3api", "get-bucket-versioning", "--bucket", bucket]);
    assert_eq!(v["Status"], "Enabled", "{v}");
    let lc = d.aws(&[
        "s3api",
        "get-bucket-lifecycle-configuration",
        "--bucket",
        bucket,
    ]);
    let rules = lc["Rules"].as_array().expect("lifecycle rules");
    let rule = |id: &str| {
        rules
            .iter()
            .find(|r| r["ID"] == id)
            .unwrap_or_else(|| panic!("no lifecycle rule {id}: {lc}"))
    };
    let prefix = |r: &Value| {
        r["Filter"]["Prefix"]
            .as_str()
            .or(r["Prefix"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    for (id, on, days) in [
        ("old-agent-builds", "agent/", 30),
        ("old-lambda-builds", "lambda/", 30),
        ("deleted-study-files", "studies/", 30),
        ("old-checkpoints", "checkpoints/", 1),
    ] {
        let r = rule(id);
        assert_eq!(r["Status"], "Enabled", "{r}");
        assert_eq!(prefix(r), on, "{r}");
        assert_eq!(
            r["NoncurrentVersionExpiration"]["NoncurrentDays"], days,
            "{r}"
        );
    }
    let r = rule("expired-delete-markers");
    assert_eq!(prefix(r), "", "the whole bucket: {r}");
    assert_eq!(r["Expiration"]["ExpiredObjectDeleteMarker"], true, "{r}");
    let r = rule("incomplete-uploads");
    assert_eq!(prefix(r), "", "the whole bucket: {r}");
    assert_eq!(
        r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 1,
        "{r}"
    );
    eprintln!(
        "bucket lifecycle rules: {:?}",
        rules.iter().map(|r| &r["ID"]).collect::<Vec<_>>()
    );
}

/// The main route table of the region's default VPC (where the test deploys).
fn main_route_table(d: &Deploy) -> String {
    let vpcs = d.aws(&[
        "ec2",
        "describe-vpcs",
        "--filters",
        "Name=isDefault,Values=true",
    ]);
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().expect("default VPC");
    let rt = d.aws(&[
        "ec2",
        "describe-route-tables",
        "--filters",
        &format!("Name=vpc-id,Values={vpc}"),
        "Name=association.main,Values=true",
    ]);
    rt["RouteTables"][0]["RouteTableId"]
        .as_str()
        .expect("main route table")
        .to_string()
}

/// Given route tables, the stack adds gateway endpoints for S3 and DynamoDB to them.
fn gateway_endpoints(d: &Deploy, rtb: &str) {
    let eps = d.aws(&["ec2", "describe-vpc-endpoints"]);
    let eps = eps["VpcEndpoints"].as_array().expect("endpoints");
    for service in ["s3", "dynamodb"] {
        let name = format!("com.amazonaws.us-east-1.{service}");
        let e = eps
            .iter()
            .find(|e| e["ServiceName"] == name.as_str())
            .unwrap_or_else(|| panic!("no endpoint for {name}: {eps:?}"));
        assert_eq!(e["VpcEndpointType"], "Gateway", "{e}");
        assert_eq!(e["RouteTableIds"], serde_json::json!([rtb]), "{e}");
    }
}

/// Every key under `agent/` in the bucket.
fn agent_keys(d: &Deploy, bucket: &str) -> Vec<String> {
    let listed = d.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        bucket,
        "--prefix",
        "agent/",
    ]);
    listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["Key"].as_str().map(String::from))
        .collect()
}

/// A redeploy with a new agent build (the same agent with bytes added: another
/// SHA-256) while a study's instance is launched under the old pin: the new build
/// is uploaded under its own key, the tick's pin moves to it, and the old build
/// stays where the launch's boot script fetches it. One more deploy with another
/// build deletes the first (neither pinned nor just replaced).
fn new_builds_keep_the_pinned_ones(d: &Deploy, bucket: &str, tick: &str, rtb: &str) {
    let a = augur_tests::sha256_of(&augur_tests::instance_agent("x86_64"));
    let build = |tag: &str| {
        let path = d.sb.path().join(format!("augur-agent-{tag}"));
        let mut bytes = std::fs::read(augur_tests::instance_agent("x86_64")).expect("agent");
        bytes.extend_from_slice(format!("\nbuild {tag}\n").as_bytes());
        std::fs::write(&path, bytes).expect("write");
        let pin = augur_tests::sha256_of(&path);
        (path, pin)
    };
    let (b_path, b) = build("b");
    let b_arg = b_path.display().to_string();
    // The fixed key of a deploy from before builds were named by their SHA-256: no
    // launch fetches it once the pin being replaced has its own key.
    d.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        bucket,
        "--key",
        "agent/augur-agent",
        "--body",
        &b_arg,
    ]);
    ok(&d.deploy(&["--route-tables", rtb, "--agent", &b_arg]));
    let keys = agent_keys(d, bucket);
    assert!(!keys.contains(&"agent/augur-agent".to_string()), "{keys:?}");
    for pin in [&a, &b] {
        let key = format!("agent/{pin}/augur-agent");
        assert!(keys.contains(&key), "{key}: {keys:?}");
    }
    let f = d.aws(&["lambda", "get-function", "--function-name", tick]);
    assert_eq!(
        f["Configuration"]["Environment"]["Variables"]["AUGUR_AGENT_SHA256"],
        b.as_str(),
        "the tick pins the new build"
    );
    let (c_path, c) = build("c");
    let c_arg = c_path.display().to_string();
    let out = d.deploy(&["--route-tables", rtb, "--agent", &c_arg]);
    ok(&out);
    let keys = agent_keys(d, bucket);
    assert!(
        !keys.contains(&format!("agent/{a}/augur-agent")),
        "{keys:?}"
    );
    for pin in [&b, &c] {
        let key = format!("agent/{pin}/augur-agent");
        assert!(keys.contains(&key), "{key}: {keys:?}");
    }
    assert!(
        text(&out.stderr).contains(&format!(
            "deleted the old agent build agent/{a}/augur-agent"
        )),
        "{}",
        text(&out.stderr)
    );
}
