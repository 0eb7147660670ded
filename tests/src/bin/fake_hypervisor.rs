//! `fake-hypervisor`: makes an AWS emulator's EC2 instances real enough for augur.
//!
//! It polls the emulator for running instances tagged by augur, starts a local
//! `augur-agent` for each with the arguments its user-data carries (the
//! `# augur-agent-args:` line), kills the agent when the instance is terminated, and
//! terminates the instance when its agent exits (on EC2 the agent powers the instance
//! off, and shutdown terminates it). So the whole AWS path runs on one machine.
//!
//! Faults for tests: `--never-boot-every N` never starts the agent of every N-th
//! instance; `--reclaim-every N` terminates every N-th instance after its agent has
//! started (a spot reclaim); `--reclaim-spot` reclaims every spot instance so;
//! `--hang-every N` freezes the agent of every N-th instance (SIGSTOP).

use augur_model::agent::Invocation;
use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceLifecycleType};
use base64::Engine;
use clap::Parser;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

#[derive(Parser, Debug)]
#[command(
    name = "fake-hypervisor",
    about = "Runs a local augur-agent for each augur instance in an AWS emulator"
)]
struct Args {
    /// The emulator's endpoint.
    #[arg(long)]
    endpoint_url: String,
    /// The endpoint agents use (default: --endpoint-url), e.g. a proxy that counts calls.
    #[arg(long)]
    agent_endpoint_url: Option<String>,
    /// The agent binary (default: next to this one).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where each "instance" gets its disk.
    #[arg(long)]
    home: PathBuf,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "200")]
    poll_ms: u64,
    #[arg(long, default_value = "0")]
    never_boot_every: u32,
    #[arg(long, default_value = "0")]
    reclaim_every: u32,
    /// Reclaim every spot instance once its agent has started.
    #[arg(long)]
    reclaim_spot: bool,
    /// Freeze (SIGSTOP) the agent of every N-th started instance: a hung machine
    /// that neither heartbeats nor ends its script.
    #[arg(long, default_value = "0")]
    hang_every: u32,
}

struct Instance {
    child: Option<Child>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let agent = args.agent.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("augur-agent")))
            .unwrap_or_else(|| PathBuf::from("augur-agent"))
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&args.endpoint_url)
        .region(aws_config::Region::new(args.region.clone()))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "fake-hypervisor",
        ))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let mut running: HashMap<String, Instance> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut booted = 0u32;
    let mut started = 0u32;
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    loop {
        let listed = ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .values("augur:study")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await;
        let mut live = HashSet::new();
        if let Ok(out) = listed {
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                live.insert(id.to_string());
                if !seen.insert(id.to_string()) {
                    continue;
                }
                booted += 1;
                if args.never_boot_every > 0 && booted.is_multiple_of(args.never_boot_every) {
                    eprintln!("fake-hypervisor: {id} never boots");
                    running.insert(id.to_string(), Instance { child: None });
                    continue;
                }
                let Some(agent_args) = user_data_args(&ec2, id).await else {
                    eprintln!("fake-hypervisor: {id}: no agent arguments in its user-data");
                    continue;
                };
                let home = args.home.join(id);
                let Some(mut invocation) = Invocation::parse(&agent_args) else {
                    eprintln!("fake-hypervisor: {id}: its user-data's agent arguments are not an invocation");
                    continue;
                };
                // The instance's own directory, its id in the record, and no power-off
                // (this is not a machine of its own).
                invocation.home = home.display().to_string();
                invocation.machine = Some(id.to_string());
                invocation.shutdown = false;
                let mut cmd = Command::new(&agent);
                cmd.args(invocation.to_args())
                    .env(
                        "AWS_ENDPOINT_URL",
                        args.agent_endpoint_url
                            .as_deref()
                            .unwrap_or(&args.endpoint_url),
                    )
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_REGION", &args.region)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .kill_on_drop(true);
                let _ = std::fs::create_dir_all(&home);
                let log = std::fs::File::create(home.join("agent.err"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null());
                cmd.stderr(log);
                match cmd.spawn() {
                    Ok(child) => {
                        eprintln!(
                            "fake-hypervisor: {id} booted its agent (pid {:?})",
                            child.id()
                        );
                        started += 1;
                        running.insert(id.to_string(), Instance { child: Some(child) });
                        if args.hang_every > 0 && started.is_multiple_of(args.hang_every) {
                            if let Some(pid) = running
                                .get(id)
                                .and_then(|i| i.child.as_ref())
                                .and_then(|c| c.id())
                            {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                eprintln!("fake-hypervisor: {id} hangs");
                                // SAFETY: kill(2) on our own child's pid.
                                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                            }
                        }
                        let spot = i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot);
                        if (args.reclaim_every > 0 && started.is_multiple_of(args.reclaim_every))
                            || (args.reclaim_spot && spot)
                        {
                            // A spot reclaim: the instance goes away under the agent.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            eprintln!("fake-hypervisor: reclaiming {id}");
                            let _ = ec2.terminate_instances().instance_ids(id).send().await;
                        }
                    }
                    Err(e) => eprintln!(
                        "fake-hypervisor: {id}: cannot start {}: {e}",
                        agent.display()
                    ),
                }
            }
            // Terminated behind the agent's back: the machine is gone, so is the agent.
            let gone: Vec<String> = running
                .keys()
                .filter(|id| !live.contains(*id))
                .cloned()
                .collect();
            for id in gone {
                if let Some(mut inst) = running.remove(&id) {
                    if let Some(c) = &mut inst.child {
                        let _ = c.kill().await;
                        eprintln!("fake-hypervisor: {id} terminated; its agent is killed");
                    }
                }
            }
        }
        // An agent that exited powered its instance off: terminate it.
        let mut exited = Vec::new();
        for (id, inst) in running.iter_mut() {
            if let Some(c) = &mut inst.child {
                if let Ok(Some(_)) = c.try_wait() {
                    exited.push(id.clone());
                }
            }
        }
        for id in exited {
            running.remove(&id);
            let _ = ec2.terminate_instances().instance_ids(&id).send().await;
            eprintln!("fake-hypervisor: {id} shut down");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.poll_ms)) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for (_, mut inst) in running {
        if let Some(c) = &mut inst.child {
            let _ = c.kill().await;
        }
    }
}

/// The agent's arguments from an instance's user-data.
async fn user_data_args(ec2: &aws_sdk_ec2::Client, id: &str) -> Option<Vec<String>> {
    let out = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .ok()?;
    let b64 = out.user_data()?.value()?;
    let text =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(augur_aws::machines::ARGS_MARKER))?;
    serde_json::from_str(line).ok()
}
