//! `augur-agent`: runs one attempt of one trial (see the library docs).
//!
//! Exit codes: 0 the attempt ended and its state is recorded (whatever the script
//! did), 3 the store could not be used, 4 the attempt is not (or no longer) current.

use augur_agent::{run_attempt, AgentConfig, AgentError};
use augur_store::{Layout, SqliteStore};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "augur-agent",
    version,
    about = "augur's worker agent: runs one trial attempt"
)]
struct Args {
    /// augur's state directory (database, logs, work directories).
    #[arg(long, env = "AUGUR_HOME", default_value = ".augur")]
    home: PathBuf,
    #[arg(long)]
    study: String,
    #[arg(long)]
    trial: u64,
    #[arg(long)]
    attempt: u32,
    /// Time between heartbeats.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    heartbeat: std::time::Duration,
    /// The machine's name in the record (default: host:pid).
    #[arg(long)]
    machine: Option<String>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    augur_model::duration::parse(s)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUGUR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
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
    let layout = Layout::new(args.home);
    let cfg = AgentConfig {
        machine: args.machine.unwrap_or_else(|| {
            format!(
                "{}:{}",
                augur_agent::process::hostname(),
                std::process::id()
            )
        }),
        layout: layout.clone(),
        study: args.study,
        trial: args.trial,
        attempt: args.attempt,
        heartbeat: args.heartbeat,
    };
    let result = rt.block_on(async {
        let store = SqliteStore::open(&layout.db())?;
        run_attempt(&store, &cfg).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ AgentError::Stale { .. }) => {
            eprintln!("augur-agent: {e}");
            ExitCode::from(4)
        }
        Err(e) => {
            eprintln!("augur-agent: {e}");
            ExitCode::from(3)
        }
    }
}
