//! The command line: parsing, dispatch, printing and exit codes. What the commands
//! do is in [`crate::app`] and the library below it.

mod complete;
mod doctor;
mod estimate;
mod gc;
mod inspect;
mod logs;
mod progress;
mod run;
mod script;
mod serve;
mod tick;

use crate::app::{backend, config};
pub use crate::app::{study_name, AppError};

use augur_store::Layout;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0    done (a study ran to its end and its trials succeeded or were pruned; a command succeeded)
  1    internal error (a bug in augur: please report it)
  2    bad input: a study file, an argument, or a conflict with what is recorded
  3    backend unavailable (database, agent binary, machines) after retries; the study stays resumable
  4    `augur run`: the study ended, but trials failed or were lost (--allow-failures makes it 0)
  5    `augur run`: the study ended and no trial succeeded
  130  interrupted (Ctrl-C, or `augur stop`); `augur run` again resumes the study

State lives in .augur/ under the working directory (or --home / AUGUR_HOME):
the SQLite database augur.db, logs/<study>/<trial>.<attempt>.log, work/ and data/.
The AWS backend's settings come from flags, AUGUR_* variables, or the config file
infra/deploy.sh writes (AUGUR_CONFIG, else ~/.config/augur/config.toml).";

/// augur runs black-box experiments: studies of many trials, each a run of your script
/// with one set of parameter values.
#[derive(Parser, Debug)]
#[command(name = "augur", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// State directory (database, logs, work directories).
    #[arg(long, global = true, env = "AUGUR_HOME", default_value = ".augur")]
    home: PathBuf,
    /// Format of augur's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// More diagnostics (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    aws: backend::AwsArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a study until its budget is spent (resumes a study already recorded).
    Run(run::RunArgs),
    /// Hand a study to the serverless tick (augur-lambda) and return at once.
    Submit(run::SubmitArgs),
    /// Run one serverless reconcile tick over the submitted studies (what augur-lambda
    /// does on its schedule; from cron, or by hand). Prints what it did as JSON.
    Tick(tick::TickArgs),
    /// Check a study file without running anything (and, if a study of its name is
    /// recorded, that `run` would continue it).
    Validate {
        /// The study file (TOML).
        study: PathBuf,
    },
    /// List studies, with how many trials of each are finished and the best value.
    #[command(visible_alias = "ls", alias = "list")]
    Studies {
        /// Print JSON (one object per study) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a study's trials.
    Trials {
        /// The study's name.
        #[arg(value_parser = study_name, add = complete::studies())]
        study: String,
        /// Print JSON (one object per trial) instead of a table.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// One row per trial, a column per parameter and metric.
        #[arg(long)]
        csv: bool,
    },
    /// Show one trial: STUDY/TRIAL.
    Show {
        /// The trial, as STUDY/TRIAL (for example quadratic/3).
        #[arg(value_name = "STUDY/TRIAL", add = complete::targets())]
        target: String,
        /// Print the whole record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the bash a trial ran (STUDY/TRIAL), with its environment and the commands
    /// that fetch its files; --run runs it here, recording nothing.
    Script(script::ScriptArgs),
    /// Rank a study's points by the objective (mean over succeeded replicates).
    Leaderboard {
        /// The study's name.
        #[arg(value_parser = study_name, add = complete::studies())]
        study: String,
        /// Show the best N points only.
        #[arg(short = 'n', long = "limit", value_name = "N")]
        limit: Option<usize>,
        /// Print JSON (one object per point) instead of a table.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV: one row per point, a column per parameter.
        #[arg(long)]
        csv: bool,
        /// Only the points whose trials cost at most USD (the COST column), and
        /// which of them is best: what to run when that is what you can spend.
        #[arg(long, value_name = "USD", value_parser = usd_budget)]
        budget: Option<f64>,
    },
    /// Write every trial of a study, with everything recorded, for other tools.
    Export {
        /// The study's name.
        #[arg(value_parser = study_name, add = complete::studies())]
        study: String,
        /// jsonl: one object per trial, with its metric series and log tail; csv: one
        /// row per trial, a column per parameter and metric.
        #[arg(long, value_enum, default_value_t = inspect::ExportFormat::Jsonl)]
        format: inspect::ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a shell completion script, which completes subcommands, flags and study
    /// names: `augur completions bash > ~/.local/share/bash-completion/completions/augur`,
    /// zsh: `source <(augur completions zsh)` in ~/.zshrc; fish:
    /// ~/.config/fish/completions/augur.fish. Make it anew after upgrading augur.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a trial's log (STUDY/TRIAL) or a whole study's, interleaved (STUDY).
    Logs(logs::LogsArgs),
    /// Serve status pages (studies, leaderboards, charts, live logs), their JSON API
    /// under /api and Prometheus text at /metrics, on 127.0.0.1:8080 by default.
    Serve(serve::ServeArgs),
    /// Stop a study: cancel its running and pending trials (`augur run` resumes it).
    Stop {
        /// The study's name.
        #[arg(value_parser = study_name, add = complete::studies())]
        study: String,
    },
    /// Set up the backend: the database locally; on AWS the DynamoDB table and the S3
    /// bucket (idempotent), and with --agent the agent binary instances download.
    Init {
        /// Upload this `augur-agent` build for instances (aws): an x86_64 or an
        /// aarch64 (Graviton) Linux build, told apart by its ELF header. May be
        /// given twice, once for each.
        #[arg(long)]
        agent: Vec<PathBuf>,
    },
    /// Check, before anything is launched, that IAM allows every call of augur's
    /// paths (run, submit, stop, gc, delete, logs; the tick's; the agents'): each is
    /// asked of IAM's policy simulator for the identity that makes it (aws).
    Doctor(doctor::DoctorArgs),
    /// Delete a study's records, logs and work directories.
    Delete {
        /// The study's name.
        #[arg(value_parser = study_name, add = complete::studies())]
        study: String,
        /// Delete even if trials are running.
        #[arg(long)]
        force: bool,
        /// Do not ask first (needed when standard input is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// End what nobody else will: machines whose study is deleted or whose trial is
    /// final or superseded, expired driver leases, submitted marks of deleted studies.
    /// Machines of active attempts are left to their study's driver.
    Gc(gc::GcArgs),
}

/// `augur run`: the study ended with failed or lost trials.
const EXIT_SOME_FAILED: u8 = 4;
/// `augur run`: the study ended and no trial succeeded.
const EXIT_NONE_SUCCEEDED: u8 = 5;

/// What a command returns: its exit code, or an error with its own.
pub type CmdResult = Result<u8, AppError>;

/// `STUDY/TRIAL` → (study, id).
fn parse_target(s: &str) -> Result<(String, u64), AppError> {
    let (study, id) = s.rsplit_once('/').ok_or_else(|| {
        AppError::input(format!(
            "`{s}` is not STUDY/TRIAL (for example quadratic/3)"
        ))
    })?;
    let study = study_name(study).map_err(AppError::input)?;
    let id = id
        .parse()
        .map_err(|_| AppError::input(format!("`{id}` is not a trial number (in `{s}`)")))?;
    Ok((study, id))
}

/// One thread: a command waits on the store, the machines and its agents in turn,
/// and a drive's hand-offs (an agent's word, the pass it wakes, the next attempt
/// written to an agent) stay on it instead of crossing threads. What takes long
/// (the status page's analysis) runs on the blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError {
            code: 1,
            message: format!("cannot start runtime: {e}"),
        })
}

pub fn main() -> ExitCode {
    // `COMPLETE=<shell> augur -- <words>`: a TAB asks for completions (see complete.rs).
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command)
        .var(complete::VAR)
        .complete();
    // The deployed stack's settings (infra/deploy.sh) are defaults under flags and
    // variables.
    if let Err(e) = config::apply() {
        eprintln!("augur: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("AUGUR_LOG").unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let ctx = backend::Backend {
        layout: Layout::new(cli.home.clone()),
        aws: cli.aws,
        sdk: Default::default(),
    };
    let result = runtime().and_then(|rt| rt.block_on(dispatch(cli.cmd, ctx)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("augur: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cmd: Cmd, ctx: backend::Backend) -> CmdResult {
    // Where a refused grant belongs in the stack: the tick's role, or the policy
    // of the people who run the CLI.
    augur_aws::denied::act_as(match cmd {
        Cmd::Tick(_) => "TickRole",
        _ => "CliPolicy",
    });
    match cmd {
        Cmd::Run(args) => run::run(args, &ctx).await,
        Cmd::Submit(args) => run::submit(args, &ctx).await,
        Cmd::Tick(args) => tick::command(&ctx, args).await,
        Cmd::Validate { study } => run::validate(&ctx, &study).await,
        Cmd::Init { agent } => run::init(&ctx, &agent).await,
        Cmd::Studies { json } => inspect::studies(&ctx, json).await,
        Cmd::Trials { study, json, csv } => inspect::trials(&ctx, &study, json, csv).await,
        Cmd::Show { target, json } => inspect::show(&ctx, &target, json).await,
        Cmd::Script(args) => script::script(&ctx, args).await,
        Cmd::Leaderboard {
            study,
            limit,
            json,
            csv,
            budget,
        } => {
            let view = inspect::LeaderboardView {
                limit,
                json,
                csv,
                budget,
            };
            inspect::leaderboard(&ctx, &study, view).await
        }
        Cmd::Export {
            study,
            format,
            output,
        } => inspect::export(&ctx, &study, format, output.as_deref()).await,
        Cmd::Completions { shell } => {
            complete::registration(shell, &mut std::io::stdout()).map_err(|e| AppError {
                code: 1,
                message: format!("cannot write the completion script: {e}"),
            })?;
            Ok(0)
        }
        Cmd::Logs(args) => logs::logs(&ctx, args).await,
        Cmd::Serve(args) => serve::command(ctx, args).await,
        Cmd::Stop { study } => run::stop(&ctx, &study).await,
        Cmd::Delete { study, force, yes } => inspect::delete(&ctx, &study, force, yes).await,
        Cmd::Gc(args) => gc::gc(&ctx, &args).await,
        Cmd::Doctor(args) => doctor::command(&ctx, args).await,
    }
}

/// `--budget`: dollars, a finite number of 0 or more.
fn usd_budget(s: &str) -> Result<f64, String> {
    match s.trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not an amount of dollars (like 0.50)")),
    }
}
