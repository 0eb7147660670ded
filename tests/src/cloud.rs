//! An AWS world for end-to-end tests: the emulator, the fault proxy in front of it, a
//! sandbox, and the fake hypervisor turning EC2 instances into local agents.

use crate::emulator::Emulator;
use crate::faults::FaultProxy;
use crate::{bin_dir, Sandbox};
use std::process::{Child, Command, Output, Stdio};

/// `augur run`'s timings for studies on the AWS path in tests: heartbeats every
/// 500 ms, a lease long enough for a loaded machine, quick retries.
pub const RUN: [&str; 6] = [
    "--heartbeat",
    "500ms",
    "--heartbeat-timeout",
    "20s",
    "--backoff-base",
    "100ms",
];

/// EC2's spot interruption notice, a warning in instance metadata
/// (`spot/instance-action`) two minutes before the instance is stopped or
/// terminated ("Spot Instance interruption notices", EC2 User Guide), played by the
/// fake hypervisor scaled down: every spot instance is told 1.5 s after its agent
/// starts, 2 s ahead.
pub const SCALED_SPOT_NOTICE: [&str; 5] = [
    "--reclaim-spot",
    "--reclaim-after-ms",
    "1500",
    "--spot-notice-ms",
    "2000",
];

/// A `[run]` section whose script trains `steps` steps of 200 ms, keeping its step
/// in `AUGUR_CHECKPOINT_DIR` and resuming from it, and appends
/// `TRIAL:ATTEMPT:STEP` to the file `log` for every step it runs.
pub fn checkpointing_run(steps: u32, log: &std::path::Path) -> String {
    format!(
        r#"[run]
max_attempts = 1
env = {{ STEPS = "{}" }}
script = '''
ck="$AUGUR_CHECKPOINT_DIR/step"; s=$(cat "$ck" 2>/dev/null || echo 0)
while [ "$s" -lt {steps} ]; do
  s=$((s + 1)); echo "$s" > "$ck.new"; mv "$ck.new" "$ck"; echo "$AUGUR_TRIAL:$AUGUR_ATTEMPT:$s" >> "$STEPS"; sleep 0.2
done
echo "METRICS: m=$s"
'''
"#,
        log.display()
    )
}

/// The emulator, the proxy, a sandbox and a table of one's own.
pub struct World {
    pub emu: Emulator,
    pub proxy: FaultProxy,
    pub sb: Sandbox,
    pub hypervisor: Option<Child>,
    pub table: String,
    /// The stack's worker resources, once [`World::init`] has deployed them.
    pub stack: std::sync::OnceLock<crate::deployed::Stack>,
    denials_expected: std::sync::atomic::AtomicBool,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        let emu = Emulator::start();
        let proxy = FaultProxy::start(&emu.endpoint);
        let sb = Sandbox::new();
        let table = format!("augur-e2e-{}", std::process::id());
        World {
            emu,
            proxy,
            sb,
            hypervisor: None,
            table,
            stack: std::sync::OnceLock::new(),
            denials_expected: Default::default(),
        }
    }

    /// The environment of augur's processes: the backend through the proxy, the
    /// deployed stack's config, a person's credentials (the stack's `CliPolicy`).
    pub fn env<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        if let Some(s) = self.stack.get() {
            c.envs(s.env());
        }
        c.env("AWS_ENDPOINT_URL", &self.proxy.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AUGUR_BACKEND", "aws")
            .env("AUGUR_TABLE", &self.table)
            .env("AUGUR_BUCKET", "augur-e2e")
            .env("AUGUR_AGENT_SHA256", crate::agent_sha256())
    }

    /// IAM enforced from now on: every request through the proxy is evaluated
    /// against the policies of the identity it runs under in the deployed stack
    /// (`infra/augur.yaml`, for this world's table and bucket), and refused as AWS
    /// refuses it ([`crate::iam::enforce`]). `init` runs as the deployer.
    pub fn enforce_iam(&self) {
        let d = match self.stack.get() {
            Some(s) => s.deployment(&self.table, "augur-e2e"),
            None => crate::iam::enforce::Deployment {
                table: self.table.clone(),
                bucket: "augur-e2e".into(),
                ..Default::default()
            },
        };
        let e = crate::iam::enforce::Enforcer::from_template(
            &crate::repo().join("infra/augur.yaml"),
            &crate::cfn_python(),
            &d,
        )
        .expect("the template's policies");
        self.proxy.enforce(e);
    }

    /// The test makes requests IAM refuses on purpose (it checks them itself).
    pub fn allow_denials(&self) {
        self.denials_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every request IAM refused so far.
    pub fn denied(&self) -> Vec<crate::iam::enforce::Denial> {
        self.proxy.iam().map(|i| i.denied()).unwrap_or_default()
    }

    /// The environment of a tick (`augur tick`, `augur-lambda`): the stack's
    /// `TickRole`.
    pub fn tick_env<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        self.env(c)
            .env("AWS_ACCESS_KEY_ID", crate::iam::enforce::TICK_KEY)
    }

    /// `augur ARGS` as it runs in the world: `augur tick` as the stack's tick
    /// (`TickRole`), every other command as a person with the `CliPolicy`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(args);
        match args.first() == Some(&"tick") {
            true => self.tick_env(&mut c),
            false => self.env(&mut c),
        };
        c
    }

    /// `augur ARGS` against the world, to its end.
    pub fn augur(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("augur")
    }

    /// `augur ARGS` against the world, to its end: its output and its peak resident
    /// memory in KB (see [`crate::output_and_peak`]).
    pub fn augur_peak(&self, args: &[&str]) -> (Output, Option<u64>) {
        crate::output_and_peak(&self.command(args))
    }

    /// `augur ARGS` against the world, in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn augur")
    }

    /// The AWS CLI (`scripts/awscli.sh`) against the emulator, to its end (it must
    /// succeed): its JSON answer.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(crate::awscli())
            .args(args)
            .args(["--output", "json"])
            .env("AWS_ENDPOINT_URL", &self.emu.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdin(Stdio::null())
            .output()
            .expect("aws");
        crate::ok(&out);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The stack deployed: `augur init` as the deployer (an administrator: it makes
    /// the table and the bucket, and uploads this build's agent for instances), the
    /// workers' security group, role, profile and launch template
    /// ([`crate::deployed::Stack`]); from then on IAM is enforced
    /// ([`World::enforce_iam`]).
    pub fn init(&self) {
        crate::ok(&self.init_with(&[bin_dir().join("augur-agent")]));
    }

    /// [`World::init`] with `agents` uploaded (`augur init --agent` each): its
    /// output. The stack is deployed and IAM enforced only if it succeeded.
    pub fn init_with(&self, agents: &[std::path::PathBuf]) -> Output {
        let out = self.init_tables(agents);
        if out.status.success() {
            let name = format!("augur-workers-{}", std::process::id());
            let stack = crate::deployed::Stack::make(|a| self.aws(a), &name);
            let _ = self.stack.set(stack);
            self.enforce_iam();
        }
        out
    }

    /// `augur init` as the deployer, alone (no stack, no IAM enforced): its output.
    pub fn init_tables(&self, agents: &[std::path::PathBuf]) -> Output {
        let mut args = vec!["init".to_string()];
        for a in agents {
            args.push("--agent".into());
            args.push(a.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.env(&mut self.sb.cmd(&args))
            .env("AWS_ACCESS_KEY_ID", crate::iam::enforce::DEPLOYER_KEY)
            .output()
            .expect("augur init")
    }

    pub fn start_hypervisor(&mut self) {
        self.start_hypervisor_with(&[]);
    }

    /// The fake hypervisor with `faults` (its flags), booting instances with the AWS
    /// CLI of `scripts/awscli.sh`; a reclaim's notice comes 300 ms ahead unless the
    /// faults say otherwise.
    pub fn start_hypervisor_with(&mut self, faults: &[&str]) {
        let mut cmd = Command::new(bin_dir().join("fake-hypervisor"));
        cmd.args(faults);
        if !faults.contains(&"--spot-notice-ms") {
            cmd.args(["--spot-notice-ms", "300"]);
        }
        let child = cmd
            .args([
                "--endpoint-url",
                &self.emu.endpoint,
                "--agent-endpoint-url",
                &self.proxy.endpoint,
                "--aws-cli",
            ])
            .arg(crate::awscli())
            .arg("--home")
            .arg(self.sb.path().join("instances"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.sb.path().join("hypervisor.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("fake-hypervisor");
        self.hypervisor = Some(child);
    }

    async fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.emu.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_ec2::Client::new(&config)
    }

    /// Every augur instance the emulator knows, ended ones too: (trial, attempt,
    /// state, spot).
    pub async fn instances(&self) -> Vec<(u64, u32, String, bool)> {
        self.instances_where("tag-key", "augur:study").await
    }

    /// The instances of one study, ended ones too.
    pub async fn study_instances(&self, study: &str) -> Vec<(u64, u32, String, bool)> {
        self.instances_where("tag:augur:study", study).await
    }

    async fn instances_where(&self, filter: &str, value: &str) -> Vec<(u64, u32, String, bool)> {
        let out = self
            .ec2()
            .await
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(filter)
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .expect("describe");
        let mut v: Vec<(u64, u32, String, bool)> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let tag = |k: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                (
                    tag("augur:trial"),
                    tag("augur:attempt") as u32,
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    i.instance_lifecycle()
                        == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Attempts of `study` with more than one instance.
    pub async fn duplicated(&self, study: &str) -> usize {
        let mut per = std::collections::BTreeMap::new();
        for i in self.study_instances(study).await {
            *per.entry((i.0, i.1)).or_insert(0) += 1;
        }
        per.values().filter(|c| **c > 1).count()
    }

    pub async fn live_instances(&self) -> usize {
        self.instances()
            .await
            .iter()
            .filter(|i| i.2 == "pending" || i.2 == "running")
            .count()
    }
}

impl Drop for World {
    /// Ends the hypervisor; and a test whose paths made a request the stack's
    /// policies refuse fails, naming each (unless it said it expects them:
    /// [`World::allow_denials`]).
    fn drop(&mut self) {
        if let Some(h) = &mut self.hypervisor {
            stop_hypervisor(h);
        }
        let denied = self.proxy.iam().map(|i| i.denied()).unwrap_or_default();
        let expected = self
            .denials_expected
            .load(std::sync::atomic::Ordering::Relaxed);
        if !denied.is_empty() && !expected && !std::thread::panicking() {
            let lines: Vec<String> = denied.iter().map(|d| format!("  {d}")).collect();
            panic!(
                "{} request(s) the stack's policies refuse (infra/augur.yaml):\n{}",
                denied.len(),
                lines.join("\n")
            );
        }
    }
}

/// Stops the fake hypervisor the way that lets it end its instances' processes
/// (SIGTERM: their agents and scripts, which a SIGKILL of it would leave running
/// after the test), then makes sure it is gone.
pub fn stop_hypervisor(h: &mut Child) {
    // SAFETY: kill(2) of our own child's pid; at worst it has exited (ESRCH).
    unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
    for _ in 0..200 {
        if matches!(h.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = h.kill();
    let _ = h.wait();
}

/// Blocks on a future from inside a synchronous closure of an async test.
pub fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
