//! `fake-hypervisor`: makes an AWS emulator's EC2 instances real enough for augur.
//!
//! It polls the emulator for running instances tagged by augur and boots each one as
//! cloud-init would: its real user-data runs under bash, in a directory of its own,
//! with the real AWS CLI and a metadata-service stand-in ([`instance`], [`imds`]).
//! So the boot script's `aws s3 cp`, `chmod`, agent and `shutdown` all run, and a
//! broken boot script breaks the tests.
//!
//! An instance ends as on EC2, and the fault proxy is told how (`POST
//! /__standin/ended`), so that `DescribeInstances` reports the state reason EC2
//! would:
//! - its `shutdown` powers it off, now or `+N` minutes on (a minute lasts
//!   `--minute-ms` here): `Client.InstanceInitiatedShutdown` (instances are
//!   launched to terminate on shutdown);
//! - a reclaim (`--reclaim-every N`, `--reclaim-spot`) of a spot instance is
//!   announced in its metadata (`spot/instance-action`) `--reclaim-after-ms` after its
//!   agent starts and `--spot-notice-ms` before it ends with
//!   `Server.SpotInstanceTermination`; an on-demand one ends without notice, with
//!   `Server.InternalError` (a failed host);
//! - `TerminateInstances` from anyone else: the emulator's own
//!   `Client.UserInitiatedShutdown`, and its processes are killed.
//!
//! A boot script that ends without powering off leaves the instance running, as on
//! EC2. Other faults: `--bare-image AMI` boots that image without the AWS CLI; `--never-boot-every N` never boots every N-th instance;
//! `--hang-every N` freezes every N-th instance (SIGSTOP to all its processes) once
//! its agent runs; `--reclaim-idle N` reclaims the N-th instance seen idle between
//! two attempts (a warm machine). `--boot-delay-ms` is how long each instance takes
//! to boot before its boot script starts.

mod imds;
mod instance;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceLifecycleType};
use base64::Engine;
use clap::Parser;
use instance::{Boot, Instance};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser, Debug)]
#[command(
    name = "fake-hypervisor",
    about = "Boots each augur instance of an AWS emulator on this machine"
)]
struct Args {
    /// The emulator's endpoint (the hypervisor's own calls).
    #[arg(long)]
    endpoint_url: String,
    /// The endpoint instances reach AWS at: the fault proxy, which also takes the
    /// hypervisor's reports of how instances ended.
    #[arg(long)]
    agent_endpoint_url: String,
    /// The AWS CLI instances get on their PATH (scripts/awscli.sh installs it).
    #[arg(long)]
    aws_cli: PathBuf,
    /// Where each instance gets its disk.
    #[arg(long)]
    home: PathBuf,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "200")]
    poll_ms: u64,
    #[arg(long, default_value = "0")]
    never_boot_every: u32,
    /// Reclaim every N-th instance once its agent runs.
    #[arg(long, default_value = "0")]
    reclaim_every: u32,
    /// Reclaim every spot instance once its agent runs.
    #[arg(long)]
    reclaim_spot: bool,
    /// How long after an instance's agent starts its reclaim is announced (a spot
    /// instance) or lands (on demand).
    #[arg(long, default_value = "300")]
    reclaim_after_ms: u64,
    /// How long before a reclaim its notice appears in the instance's metadata (EC2:
    /// two minutes).
    #[arg(long, default_value = "120000")]
    spot_notice_ms: u64,
    /// Freeze every N-th instance once its agent runs: a hung machine that neither
    /// heartbeats nor ends its script.
    #[arg(long, default_value = "0")]
    hang_every: u32,
    /// How long a minute lasts for a scheduled power-off (`shutdown -h +N`).
    #[arg(long, default_value = "60000")]
    minute_ms: u64,
    /// An image without the AWS CLI (may be repeated): its boot script cannot fetch
    /// the agent.
    #[arg(long)]
    bare_image: Vec<String>,
    /// How long an instance takes to boot before its boot script starts (EC2:
    /// typically 30-60 s for an instance to start, fetch the agent and run it).
    #[arg(long, default_value = "0")]
    boot_delay_ms: u64,
    /// Reclaim the N-th instance seen idle (a warm machine whose agent waits between
    /// two attempts, for at least 300 ms), at once: a spot reclaim, or a failed host.
    #[arg(long, default_value = "0")]
    reclaim_idle: u32,
}

/// An instance as the emulator lists it.
struct Live {
    spot: bool,
    image: String,
    /// Its type is a Graviton one: it runs aarch64 programs (under qemu here).
    arm64: bool,
    instance_type: String,
}

/// How long after its agent starts a fault lands on an instance.
const FAULT_AFTER: Duration = Duration::from_millis(300);

/// How long an agent must wait between two attempts to count as idle (its final
/// write and the read of its next attempt take less).
const IDLE_FOR: Duration = Duration::from_millis(300);

struct Hypervisor {
    args: Args,
    ec2: aws_sdk_ec2::Client,
    running: HashMap<String, Instance>,
    seen: HashSet<String>,
    /// When each instance not booted yet was first listed (`--boot-delay-ms`).
    listed: HashMap<String, Instant>,
    booted: u32,
    agents: u32,
    /// Idle spells seen (`--reclaim-idle`).
    idles: u32,
    /// The GPUs of each instance type seen, as `DescribeInstanceTypes` says.
    gpus: HashMap<String, u32>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
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
    let mut h = Hypervisor {
        ec2: aws_sdk_ec2::Client::new(&config),
        args,
        running: HashMap::new(),
        seen: HashSet::new(),
        listed: HashMap::new(),
        booted: 0,
        agents: 0,
        idles: 0,
        gpus: HashMap::new(),
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    loop {
        if let Some(live) = h.live().await {
            h.boot_new(&live).await;
            h.forget_gone(&live);
        }
        h.watch().await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(h.args.poll_ms)) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for inst in h.running.values_mut() {
        inst.end();
    }
}

impl Hypervisor {
    /// The augur instances the emulator lists as pending or running.
    async fn live(&self) -> Option<HashMap<String, Live>> {
        let out = self
            .ec2
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
            .await
            .ok()?;
        Some(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| {
                    let live = Live {
                        spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
                        image: i.image_id().unwrap_or_default().to_string(),
                        arm64: i
                            .instance_type()
                            .is_some_and(|t| augur_aws::instance::arm64(t.as_str())),
                        instance_type: i
                            .instance_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                    };
                    Some((i.instance_id()?.to_string(), live))
                })
                .collect(),
        )
    }

    /// The GPUs of instance type `ty` (none if the emulator cannot say).
    async fn gpus_of(&mut self, ty: &str) -> u32 {
        if let Some(&n) = self.gpus.get(ty) {
            return n;
        }
        // As augur counts them: the same answer, read the same way.
        let counts = augur_aws::gpus::describe(&self.ec2, &[ty.to_string()]).await;
        let n = counts
            .ok()
            .and_then(|c| c.first().map(|(_, n)| *n))
            .unwrap_or(0);
        self.gpus.insert(ty.to_string(), n);
        n
    }

    async fn boot_new(&mut self, live: &HashMap<String, Live>) {
        for (id, l) in live {
            let (spot, image, arm64) = (&l.spot, &l.image, &l.arm64);
            if self.seen.contains(id) {
                continue;
            }
            let listed = *self.listed.entry(id.clone()).or_insert_with(Instant::now);
            if listed.elapsed() < Duration::from_millis(self.args.boot_delay_ms) {
                continue;
            }
            self.listed.remove(id);
            self.seen.insert(id.clone());
            self.booted += 1;
            let every = self.args.never_boot_every;
            if every > 0 && self.booted.is_multiple_of(every) {
                eprintln!("fake-hypervisor: {id} never boots");
                let dead = Instance::dead(id, *spot, &self.args.home);
                self.running.insert(id.clone(), dead);
                continue;
            }
            let Some(user_data) = user_data(&self.ec2, id).await else {
                eprintln!("fake-hypervisor: {id}: no user-data");
                continue;
            };
            let bare = self.args.bare_image.contains(image);
            let gpus = self.gpus_of(&l.instance_type).await;
            let boot = Boot {
                gpus,
                home: &self.args.home,
                aws_cli: (!bare).then_some(self.args.aws_cli.as_path()),
                endpoint: &self.args.agent_endpoint_url,
                region: &self.args.region,
                arm64: *arm64,
            };
            match Instance::boot(id, *spot, &user_data, &boot) {
                Ok(inst) => {
                    eprintln!("fake-hypervisor: {id} boots");
                    self.running.insert(id.clone(), inst);
                }
                Err(e) => eprintln!("fake-hypervisor: {id}: cannot boot: {e}"),
            }
        }
    }

    /// Instances ended by someone else: their processes end with them.
    fn forget_gone(&mut self, live: &HashMap<String, Live>) {
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|id| !live.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(mut inst) = self.running.remove(&id) {
                inst.end();
                eprintln!("fake-hypervisor: {id} terminated");
            }
        }
    }

    /// Powers off the instances that asked, and lands the faults that are due.
    async fn watch(&mut self) {
        let now = Instant::now();
        let mut ending = Vec::new();
        for inst in self.running.values_mut() {
            if inst.booted_out() {
                eprintln!("fake-hypervisor: {}: its boot script ended", inst.id);
            }
            inst.refuse_foreign_programs();
            if inst.powered_off(self.args.minute_ms) {
                ending.push((inst.id.clone(), "Client.InstanceInitiatedShutdown"));
                continue;
            }
            if self.args.reclaim_idle > 0 && inst.agent_seen.is_some() {
                if inst.agent_idle() {
                    let (since, counted) = inst.idle.get_or_insert((now, false));
                    if !*counted && now >= *since + IDLE_FOR {
                        *counted = true;
                        self.idles += 1;
                        if self.idles == self.args.reclaim_idle {
                            eprintln!("fake-hypervisor: {} reclaimed while idle", inst.id);
                            inst.reclaim_at = Some(now);
                        }
                    }
                } else {
                    inst.idle = None;
                }
            }
            if inst.reclaim_at.is_some_and(|at| now >= at) {
                let code = if inst.spot {
                    "Server.SpotInstanceTermination"
                } else {
                    "Server.InternalError"
                };
                ending.push((inst.id.clone(), code));
                continue;
            }
            if inst.agent_seen.is_none() && inst.imds.is_some() && inst.agent_running() {
                inst.agent_seen = Some(now);
                let arch = if inst.arm64 {
                    "aarch64, under qemu"
                } else {
                    "x86_64"
                };
                eprintln!("fake-hypervisor: {}: its agent runs ({arch})", inst.id);
                self.agents += 1;
                let n = self.agents;
                let every = |k: u32| k > 0 && n.is_multiple_of(k);
                inst.hung = every(self.args.hang_every);
                if every(self.args.reclaim_every) || (self.args.reclaim_spot && inst.spot) {
                    // Only a spot instance is told ahead; a failed host just goes.
                    let notice = match inst.spot {
                        true => Duration::from_millis(self.args.spot_notice_ms),
                        false => Duration::ZERO,
                    };
                    let after = Duration::from_millis(self.args.reclaim_after_ms);
                    if inst.spot {
                        inst.notice_at = Some(now + after);
                    }
                    inst.reclaim_at = Some(now + after + notice);
                }
            }
            if let (Some(at), Some(imds)) = (inst.notice_at, &inst.imds) {
                if now >= at {
                    let ends = inst
                        .reclaim_at
                        .map_or(Duration::ZERO, |r| r.saturating_duration_since(now));
                    imds.announce_reclaim(SystemTime::now() + ends);
                    inst.notice_at = None;
                }
            }
            if inst.hung && inst.agent_seen.is_some_and(|at| now >= at + FAULT_AFTER) {
                eprintln!("fake-hypervisor: {} hangs", inst.id);
                inst.signal(libc::SIGSTOP);
                inst.hung = false;
            }
        }
        for (id, code) in ending {
            self.end(&id, code).await;
        }
    }

    /// Ends an instance as EC2 would, with the state reason `code`.
    async fn end(&mut self, id: &str, code: &str) {
        report(&self.args.agent_endpoint_url, id, code);
        if let Some(mut inst) = self.running.remove(id) {
            inst.end();
        }
        let _ = self.ec2.terminate_instances().instance_ids(id).send().await;
        eprintln!("fake-hypervisor: {id} ended ({code})");
    }
}

/// Tells the fault proxy how an instance ended.
fn report(proxy: &str, id: &str, code: &str) {
    let port = proxy
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok());
    let path = format!("/__standin/ended?id={id}&code={code}");
    if port.and_then(|p| augur_tests::emulator::http(p, "POST", &path)) != Some(204) {
        eprintln!("fake-hypervisor: cannot report to the proxy at {proxy}");
    }
}

/// An instance's user-data, decoded.
async fn user_data(ec2: &aws_sdk_ec2::Client, id: &str) -> Option<String> {
    let out = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .ok()?;
    let b64 = out.user_data()?.value()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
}
