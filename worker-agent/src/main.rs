//! `augur-agent`: runs one attempt of one trial (see the library docs).
//!
//! Exit codes: 0 the attempt ended and its state is recorded (whatever the script
//! did), 2 bad arguments, 3 the store could not be used, 4 the attempt is not (or no
//! longer) current.

use augur_agent::reuse::{Assignments, Piped, Turns};
use augur_agent::{run_attempt, AgentConfig, AgentError, AwsAgent, Ended};
use augur_model::agent::{env, flag};
use augur_store::{now_ms, Layout, SqliteStore, TrialStore};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendKind {
    /// SQLite in --home, log files in --home.
    Local,
    /// DynamoDB (--table), CloudWatch Logs, study files from S3 (--bucket). Endpoint,
    /// region and credentials come from the standard AWS chain (AWS_ENDPOINT_URL too).
    Aws,
}

#[derive(Parser, Debug)]
#[command(
    name = "augur-agent",
    version,
    about = "augur's worker agent: runs one trial attempt"
)]
struct Args {
    /// augur's state directory (database and logs locally; work directories always).
    #[arg(long = flag::HOME, env = env::HOME, default_value = ".augur")]
    home: PathBuf,
    #[arg(long = flag::BACKEND, value_enum, default_value = "local")]
    backend: BackendKind,
    /// DynamoDB table (aws).
    #[arg(long = flag::TABLE, env = env::TABLE)]
    table: Option<String>,
    /// Artifacts bucket (aws).
    #[arg(long = flag::BUCKET, env = env::BUCKET)]
    bucket: Option<String>,
    /// Log groups are PREFIX/<study> (aws).
    #[arg(long = flag::LOG_GROUP_PREFIX, default_value = "/augur")]
    log_group_prefix: String,
    #[arg(long = flag::STUDY)]
    study: String,
    #[arg(long = flag::TRIAL)]
    trial: u64,
    #[arg(long = flag::ATTEMPT)]
    attempt: u32,
    /// Time between heartbeats.
    #[arg(long = flag::HEARTBEAT, default_value = "2s", value_parser = parse_duration)]
    heartbeat: std::time::Duration,
    /// The machine's name in the record (default: host:pid).
    #[arg(long = flag::MACHINE)]
    machine: Option<String>,
    /// Power the machine off when done (on EC2: the instance terminates).
    #[arg(long = flag::SHUTDOWN)]
    shutdown: bool,
    /// After the attempt, take further attempts of the study from standard input
    /// (`TRIAL ATTEMPT` lines; `idle` is written to standard output when ready).
    #[arg(long = flag::REUSE)]
    reuse: bool,
    /// The slot of an instance several attempts share that this agent runs them
    /// in: its name in the record is the slot's, and the boot script powers the
    /// instance off after the last slot's agent. With `--attempt 0` it waits for its
    /// first attempt.
    #[arg(long = flag::SLOT)]
    slot: Option<u32>,
}

/// A heartbeat interval: 10 ms to 1 h (a zero interval would never tick).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = augur_model::duration::parse(s)?;
    let range = std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(3600);
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(format!("{s}: the heartbeat must be from 10ms to 1h"))
    }
}

fn main() -> ExitCode {
    // Diagnostics only on request: the agent starts once per trial, so its start-up
    // is kept lean (warnings that matter are written to the trial's log anyway).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("AUGUR_LOG") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let args = Args::parse();
    augur_aws::denied::act_as("WorkerRole");
    if !augur_model::valid_study_name(&args.study) {
        eprintln!("augur-agent: `{}` is not a valid study name", args.study);
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-agent: cannot start runtime: {e}");
            return ExitCode::from(3);
        }
    };
    rt.block_on(run(args))
}

/// The store the agent writes to, and on AWS what else it reaches (logs, files,
/// secrets); a problem is said and its exit code returned.
async fn connect(
    args: &Args,
    layout: &Layout,
) -> Result<(Box<dyn TrialStore>, Option<AwsAgent>), ExitCode> {
    match args.backend {
        // The agent waits for each call: run them on its own thread.
        BackendKind::Local => match SqliteStore::open(&layout.db()) {
            Ok(s) => Ok((Box::new(s.inline()), None)),
            Err(e) => {
                eprintln!("augur-agent: {e}");
                Err(ExitCode::from(3))
            }
        },
        BackendKind::Aws => {
            let (Some(table), Some(bucket)) = (args.table.clone(), args.bucket.clone()) else {
                eprintln!("augur-agent: --backend aws needs --table and --bucket");
                return Err(ExitCode::from(2));
            };
            let opts = augur_aws::AwsOptions::default();
            let config = augur_aws::sdk_config(&opts).await;
            let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some();
            let store = augur_aws::DynamoStore::new(augur_aws::dynamodb(&config), table);
            let aws = AwsAgent {
                logs: augur_aws::logs(&config),
                log_prefix: args.log_group_prefix.clone(),
                s3: augur_aws::s3::client(&config, path_style),
                bucket,
                secrets: augur_aws::secrets::Secrets::new(&config),
            };
            Ok((Box::new(store), Some(aws)))
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let layout = Layout::new(args.home.clone());
    if args.attempt == 0 && !(args.slot.is_some() && args.reuse) {
        eprintln!("augur-agent: --attempt 0 is only for a warm slot (--slot, --reuse) that waits for its first attempt");
        return ExitCode::from(2);
    }
    // On a machine of its own (an EC2 instance), the machine is the instance (or
    // one of its slots).
    let instance = match (&args.machine, args.backend, args.shutdown) {
        (None, BackendKind::Aws, true) => augur_aws::instance_id()
            .await
            .map(|id| augur_model::machine::slot_name(&id, args.slot.unwrap_or(0))),
        _ => None,
    };
    let machine = args.machine.clone().or(instance).unwrap_or_else(|| {
        format!(
            "{}:{}",
            augur_agent::process::hostname(),
            std::process::id()
        )
    });
    let (store, aws) = match connect(&args, &layout).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    // Resolved once (the store made the directory): what every script is told.
    let layout = Layout::new(layout.root.canonicalize().unwrap_or(layout.root));
    let mut cfg = AgentConfig {
        machine,
        turn: 1,
        layout,
        study: args.study.clone(),
        trial: args.trial,
        attempt: args.attempt,
        heartbeat: args.heartbeat,
        spot: aws.is_some() && args.shutdown,
        aws,
    };
    if args.reuse {
        augur_agent::spare::SPARES.start_keeping();
    }
    let mut turns = args.reuse.then(|| match args.backend {
        BackendKind::Local => Turns::Piped(Box::new(Piped::new(&cfg))),
        BackendKind::Aws => Turns::Assigned(Assignments::default()),
    });
    // A fresh slot has no first attempt: it waits for one as a warm machine does.
    let (mut code, mut warm) = (ExitCode::SUCCESS, true);
    if cfg.attempt > 0 {
        (code, warm) = attempt(store.as_ref(), &cfg).await;
    } else {
        cfg.turn = 0;
    }
    // Warm: the next attempt of the study, unless the last ended by force or was
    // taken over (the machine may be what went wrong).
    while let (Some(t), true) = (&mut turns, warm) {
        let Some(turn) = t.next(store.as_ref(), &cfg, now_ms()).await else {
            break;
        };
        (cfg.trial, cfg.attempt, cfg.turn) = (turn.trial, turn.attempt, cfg.turn + 1);
        if let (Some(min), true) = (turn.life_min, args.shutdown) {
            rearm(&args.home, args.slot, min);
        }
        (code, warm) = attempt(store.as_ref(), &cfg).await;
    }
    drop(turns);
    // The agent of a slot leaves the power-off to its boot script, after the last.
    if args.shutdown && args.slot.is_none() {
        // Instance-initiated shutdown behaviour is `terminate`: this ends the machine.
        let _ = std::process::Command::new("shutdown")
            .args(["-h", "now"])
            .status();
    }
    code
}

/// Re-arms the machine's power-off at the hard limit of an attempt starting now,
/// `min` minutes on: the boot script's was for the first attempt (a later
/// `shutdown` replaces an earlier one). The agent of one slot among several never
/// moves it earlier than another slot's attempt needs: each writes its own limit
/// (`poweroff.SLOT` under its home, the boot script slot 0's first) and arms the
/// latest.
fn rearm(home: &std::path::Path, slot: Option<u32>, min: u64) {
    let mut minutes = min;
    if let Some(slot) = slot {
        let now = now_ms();
        let until = now + (min * 60_000) as i64;
        let _ = std::fs::write(home.join(format!("poweroff.{slot}")), until.to_string());
        let limits = std::fs::read_dir(home).into_iter().flatten().flatten();
        let latest = limits
            .filter(|e| e.file_name().to_string_lossy().starts_with("poweroff."))
            .filter_map(|e| {
                std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse::<i64>()
                    .ok()
            })
            .fold(until, i64::max);
        minutes = ((latest - now).max(0) as u64).div_ceil(60_000);
    }
    let _ = std::process::Command::new("shutdown")
        .args(["-h", &format!("+{minutes}")])
        .status();
}

/// Runs `cfg`'s attempt: the agent's exit code, and whether the attempt ended by
/// itself (a warm machine may take the next).
async fn attempt(store: &dyn TrialStore, cfg: &AgentConfig) -> (ExitCode, bool) {
    match run_attempt(store, cfg).await {
        Ok(ended) => (ExitCode::SUCCESS, matches!(ended, Ended::Finished(_))),
        Err(e @ AgentError::Stale { .. }) => {
            eprintln!("augur-agent: {e}");
            (ExitCode::from(4), false)
        }
        Err(e) => {
            eprintln!("augur-agent: {e}");
            (ExitCode::from(3), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::agent::{AwsTarget, Invocation};

    /// The flags every provider writes (the contract) are the flags this binary
    /// reads: a renamed or added flag on either side fails here.
    #[test]
    fn the_agent_reads_every_invocation_the_providers_write() {
        let local = Invocation {
            home: "/h".into(),
            aws: None,
            study: "s".into(),
            trial: 7,
            attempt: 2,
            heartbeat_ms: 1_500,
            machine: None,
            shutdown: false,
            reuse: false,
            slot: None,
        };
        let aws = Invocation {
            aws: Some(AwsTarget {
                table: "t".into(),
                bucket: "b".into(),
                log_group_prefix: "/p".into(),
            }),
            machine: Some("i-1".into()),
            shutdown: true,
            reuse: false,
            slot: Some(1),
            ..local.clone()
        };
        for inv in [local, aws] {
            let args = Args::try_parse_from(
                std::iter::once(augur_model::agent::PROGRAM.to_string()).chain(inv.to_args()),
            )
            .expect("the agent parses the contract's arguments");
            let read_back = Invocation {
                home: args.home.display().to_string(),
                aws: matches!(args.backend, BackendKind::Aws).then(|| AwsTarget {
                    table: args.table.clone().unwrap_or_default(),
                    bucket: args.bucket.clone().unwrap_or_default(),
                    log_group_prefix: args.log_group_prefix.clone(),
                }),
                study: args.study.clone(),
                trial: args.trial,
                attempt: args.attempt,
                heartbeat_ms: args.heartbeat.as_millis() as u64,
                machine: args.machine.clone(),
                shutdown: args.shutdown,
                reuse: args.reuse,
                slot: args.slot,
            };
            assert_eq!(read_back, inv);
        }
    }
}
