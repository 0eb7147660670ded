//! `augur run`, `augur validate`, `augur stop`.

use super::progress::Progress;
use super::{AppError, CmdResult};
use crate::app::backend::Backend;
use crate::app::study::{self, Prepared, Stopped};
use augur::{Finished, Mode, Runner, Scope};
use augur_model::{DriveSettings, Study, StudyState, TrialState};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The study a command runs, with the command line's overrides.
#[derive(clap::Args, Debug)]
pub struct StudyArgs {
    /// The study file (TOML).
    study: PathBuf,
    /// Trials run at once (overrides the study's `parallel`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    parallel: Option<u32>,
    /// Budget of trials (overrides the study's `trials`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    trials: Option<u64>,
    /// Also re-run the (point, replicate) pairs that failed, with fresh attempts.
    #[arg(long)]
    retry_failed: bool,
}

impl StudyArgs {
    /// Loads the study file with the overrides (exit 2 on a bad file).
    fn load(&self) -> Result<Study, AppError> {
        let mut study = augur_store::studyfile::load(&self.study)
            .map_err(|e| AppError::input(e.to_string()))?;
        if let Some(p) = self.parallel {
            study.parallel = p;
        }
        if let Some(n) = self.trials {
            study.trials = n;
        }
        Ok(study)
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Print the leaderboard at the end as JSON.
    #[arg(long)]
    json: bool,
    /// Serve the status pages, API and /metrics (with this run's counters) on this
    /// address while the study runs, e.g. 127.0.0.1:8080. Beyond loopback, clients
    /// need a token (AUGUR_TOKEN, or a new one printed with the address).
    #[arg(long, value_name = "ADDR")]
    serve: Option<std::net::SocketAddr>,
    /// Exit 0 even when trials failed or were lost (as long as one succeeded); by
    /// default such a study exits 4.
    #[arg(long)]
    allow_failures: bool,
    /// Print what the study would cost (its machines' price, and with --duration
    /// or --like the machine-hours, dollars and wall time, within its limits);
    /// launch and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: one trial's time, launch to end (e.g. 12m).
    #[arg(long, value_parser = crate::app::dur, requires = "dry_run")]
    duration: Option<Duration>,
    /// With --dry-run: one trial's time is the mean of this recorded study's
    /// finished trials.
    #[arg(
        long,
        value_name = "STUDY",
        requires = "dry_run",
        conflicts_with = "duration"
    )]
    like: Option<String>,
    #[command(flatten)]
    flags: DriveFlags,
}

/// `augur submit`: the study for the serverless tick to drive.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    study: StudyArgs,
    #[command(flatten)]
    flags: DriveFlags,
}

/// The flags of a study's [`DriveSettings`]: the backend's defaults where not given.
#[derive(clap::Args, Debug)]
pub struct DriveFlags {
    /// Agents heartbeat this often [default: 2s local, 20s aws: DynamoDB writes per
    /// trial are 5 + duration / heartbeat].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    heartbeat: Option<Duration>,
    /// A running trial with no heartbeat for this long is lost [default: 30s local, 90s aws]
    /// (`--lease`, its old name, is kept for one release).
    #[arg(long, alias = "lease", value_parser = crate::app::dur, help_heading = "Tuning")]
    heartbeat_timeout: Option<Duration>,
    /// A starting trial whose agent has not reported after this long is lost
    /// [default: 60s local, 10m aws: instances boot in minutes].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    boot_timeout: Option<Duration>,
    /// Base of the retry backoff (capped exponential, full jitter) [default: 1s].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    backoff_base: Option<Duration>,
    /// Cap of the retry backoff [default: 60s].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    backoff_cap: Option<Duration>,
    /// Stop (exit 3) when launches fail for want of capacity or quota this long; the
    /// study waits meanwhile, backing off [default: 30m].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    capacity_timeout: Option<Duration>,
    /// An agent that can record no heartbeat for this long ends its script: the
    /// store's bad minutes (throttling, an outage) end no running trial [default: 15m].
    #[arg(long, value_parser = crate::app::dur, help_heading = "Tuning")]
    give_up: Option<Duration>,
    /// Give up (exit 3) when the backend stays unavailable this long.
    #[arg(long, default_value = "2m", value_parser = crate::app::dur, help_heading = "Tuning")]
    backend_deadline: Duration,
}

impl DriveFlags {
    /// The backend's defaults with the flags given; range-checked (exit 2).
    fn drive(&self, ctx: &Backend) -> Result<DriveSettings, AppError> {
        let d = ctx.default_drive();
        let ms = |v: Option<Duration>, default: i64| {
            v.map_or(default, |v| v.as_millis().min(i64::MAX as u128) as i64)
        };
        let drive = DriveSettings {
            heartbeat_ms: ms(self.heartbeat, d.heartbeat_ms),
            heartbeat_timeout_ms: ms(self.heartbeat_timeout, d.heartbeat_timeout_ms),
            boot_timeout_ms: ms(self.boot_timeout, d.boot_timeout_ms),
            backoff_base_ms: ms(self.backoff_base, d.backoff_base_ms),
            backoff_cap_ms: ms(self.backoff_cap, d.backoff_cap_ms),
            capacity_timeout_ms: ms(self.capacity_timeout, d.capacity_timeout_ms),
            give_up_ms: ms(self.give_up, d.give_up_ms),
        };
        drive
            .check()
            .map_err(|(flag, why)| AppError::input(format!("--{flag}: {why}")))?;
        Ok(drive)
    }
}

/// `augur validate`: the file, then what `run` would check against the study
/// recorded under its name, if there is one.
pub async fn validate(ctx: &Backend, path: &std::path::Path) -> CmdResult {
    let s = augur_store::studyfile::load(path).map_err(|e| AppError::input(e.to_string()))?;
    let recorded = match ctx.existing_store().await {
        Ok(Some(store)) => store.get_study(&s.name).await.map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(e.message),
    };
    let against = match recorded {
        Ok(Some(rec)) => {
            if let Some(why) = s.conflict_with(&rec.spec) {
                return Err(AppError::input(format!("{}: {why}", path.display())));
            }
            format!("; continues the recorded study ({})", rec.state)
        }
        Ok(None) => "; not recorded yet".to_string(),
        Err(e) => format!("; not checked against a recorded study ({e})"),
    };
    let goals: Vec<String> = s
        .objectives()
        .iter()
        .map(|o| match o.goal {
            augur_model::Goal::Minimize => format!("minimize {}", o.metric),
            augur_model::Goal::Maximize => format!("maximize {}", o.metric),
        })
        .collect();
    let word = if s.is_multi() {
        "objectives"
    } else {
        "objective"
    };
    let constraints = match s.constraints.is_empty() {
        true => String::new(),
        false => format!(
            ", constraints {}",
            s.constraints
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "{}: ok: study `{}`, {} oracle, {} trial(s), {} parameter(s), parallel {}, replicates {}, {word} {}{constraints}{against}",
        path.display(),
        s.name,
        s.oracle.as_str(),
        s.trials,
        s.params.len(),
        s.parallel,
        s.replicates,
        goals.join(", ")
    );
    Ok(0)
}

/// What `run` and `submit` do first: the study file with the command line's
/// overrides and drive flags, made ready on the backend.
async fn prepare(
    args: &StudyArgs,
    flags: &DriveFlags,
    ctx: &Backend,
) -> Result<Prepared, AppError> {
    let prepared = Prepared::new(args.load()?, flags.drive(ctx)?, ctx).await?;
    if let Some(note) = &prepared.note {
        eprintln!("augur: {note}");
    }
    Ok(prepared)
}

pub async fn run(args: RunArgs, ctx: &Backend) -> CmdResult {
    if args.dry_run {
        let how_long = match (args.duration, args.like.clone()) {
            (Some(d), _) => Some(super::estimate::TrialTime::Given(d)),
            (None, Some(name)) => Some(super::estimate::TrialTime::Like(name)),
            (None, None) => None,
        };
        return super::estimate::dry_run(&args.study.load()?, how_long, ctx).await;
    }
    // Bind first: a busy address is bad input, found before anything runs.
    let listener = match args.serve {
        Some(addr) => Some(crate::app::serve::bind(addr).await?),
        None => None,
    };
    let prepared = prepare(&args.study, &args.flags, ctx).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = prepared
        .runner(ctx, args.flags.backend_deadline)
        .with_events(tx);
    let (study, store) = (&prepared.study, &prepared.store);
    let server = listener.map(|l| StatusServer::start(l, ctx, store, &runner, &study.name));
    prepared
        .record(&runner, ctx, args.study.retry_failed)
        .await?;
    let existing = store.list_trials(&study.name).await?;
    let progress = Progress::new(study, &existing);
    let printer = tokio::spawn(progress.run(rx));
    let (interrupts, control_rx) = on_ctrl_c(study.name.clone());
    let runner = Arc::new(runner);
    let result = runner
        .drive(study, Scope::Budget(study.trials), control_rx)
        .await;
    interrupts.abort();
    if let Some(server) = server {
        server.stop().await;
    }
    drop(runner);
    let _ = printer.await;
    let finished = result?;
    let rec = store
        .get_study(&study.name)
        .await?
        .ok_or_else(|| AppError::input("study vanished"))?;
    let trials = store.list_trials(&study.name).await?;
    let summary = augur::report::counts(&trials)
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    match finished {
        Finished::Done => {
            let spent = augur_model::cost::Spend::of(&trials, augur_store::now_ms());
            eprintln!("study `{}` {}: {summary}", study.name, rec.state);
            eprintln!("{}", spent.summary());
            if rec.state == StudyState::Spent {
                if let Some(why) = rec.spec.run.limits.spent(&trials, augur_store::now_ms()) {
                    eprintln!("augur: {why}; raise the limit and `augur run` again to go on");
                }
            }
            super::inspect::print_leaderboard(&rec, &trials, Some(10), args.json);
            let (code, why) = ended_code(&trials, args.allow_failures);
            if let Some(why) = why {
                eprintln!("augur: {why} (exit {code})");
            }
            Ok(code)
        }
        Finished::Interrupted => {
            eprintln!(
                "study `{}` interrupted ({summary}); `augur run {}` resumes it",
                study.name,
                args.study.study.display()
            );
            Ok(130)
        }
    }
}

/// The exit code of a study that ran to its end, and why it is not 0: no trial
/// succeeded (5), or some failed or were lost, datasets included (4, unless allowed).
fn ended_code(trials: &[augur_model::Trial], allow_failures: bool) -> (u8, Option<String>) {
    let count =
        |keep: &dyn Fn(&augur_model::Trial) -> bool| trials.iter().filter(|t| keep(t)).count();
    let succeeded = count(&|t| !t.is_dataset() && t.state == TrialState::Succeeded);
    let failed = count(&|t| t.state == TrialState::Failed);
    let lost = count(&|t| t.state == TrialState::Lost);
    if succeeded == 0 {
        return (
            super::EXIT_NONE_SUCCEEDED,
            Some("no trial succeeded".into()),
        );
    }
    if failed + lost > 0 && !allow_failures {
        let why = format!(
            "{failed} failed and {lost} lost (`augur trials` lists them; --allow-failures accepts them)"
        );
        return (super::EXIT_SOME_FAILED, Some(why));
    }
    (0, None)
}

/// `augur run --serve`: the status server beside the run, with its counters.
struct StatusServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    fn start(
        listener: tokio::net::TcpListener,
        ctx: &Backend,
        store: &Arc<dyn augur_store::TrialStore>,
        runner: &Runner,
        study: &str,
    ) -> StatusServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counters = runner.counter_handle();
        let addr = listener.local_addr().ok();
        let access = addr.map_or_else(
            || crate::app::access::Access::for_addr(([0, 0, 0, 0], 0).into(), None),
            |a| crate::app::access::Access::for_addr(a, std::env::var("AUGUR_TOKEN").ok()),
        );
        let query = access
            .token()
            .map(|t| format!("?token={t}"))
            .unwrap_or_default();
        let app = Arc::new(crate::app::serve::App {
            access,
            backend: Arc::new(ctx.fresh()),
            store: store.clone(),
            counters: Some(Box::new(move || counters.snapshot())),
            importance: Default::default(),
            trials: Default::default(),
        });
        if let Some(addr) = addr {
            eprintln!("augur: status pages on http://{addr}/studies/{study}{query}");
        }
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.await;
            };
            if let Err(e) = crate::app::serve::serve_on(app, listener, stop).await {
                eprintln!("augur: {}", e.message);
            }
        });
        StatusServer { stop, task }
    }

    /// Stops it; responses in flight (a log following a trial that just ended) get
    /// 3 s to finish.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

/// Ctrl-C once drains the study (launch nothing more), twice cancels its trials.
fn on_ctrl_c(name: String) -> (tokio::task::JoinHandle<()>, watch::Receiver<Mode>) {
    let (control, control_rx) = watch::channel(Mode::Run);
    let task = tokio::spawn(async move {
        let mut n = 0;
        while tokio::signal::ctrl_c().await.is_ok() {
            n += 1;
            if n == 1 {
                eprintln!("\naugur: Ctrl-C: launching nothing more and waiting for running trials of `{name}` (Ctrl-C again cancels them)");
                let _ = control.send(Mode::Drain);
            } else {
                eprintln!("\naugur: Ctrl-C again: cancelling the running trials of `{name}`");
                let _ = control.send(Mode::Cancel);
                break;
            }
        }
    });
    (task, control_rx)
}

/// `augur submit`: records the study (and uploads its files) for the serverless tick
/// to drive; returns at once.
pub async fn submit(args: SubmitArgs, ctx: &Backend) -> CmdResult {
    let prepared = prepare(&args.study, &args.flags, ctx).await?;
    let (name, budget) = (prepared.study.name.clone(), prepared.study.trials);
    let (_, done) = prepared.submit(ctx, args.study.retry_failed).await?;
    eprintln!(
        "submitted study `{name}` ({budget} trial(s) budgeted, {done} already finished): the serverless tick drives it.\n\
         Follow it with `augur trials {name}` or `augur logs {name}/<trial> --follow`; `augur stop {name}` stops it."
    );
    Ok(0)
}

pub async fn stop(ctx: &Backend, name: &str) -> CmdResult {
    match study::stop(ctx, name).await? {
        Stopped::AlreadyOver(state) => eprintln!("study `{name}` is already over ({state})"),
        Stopped::AlreadyStopped => eprintln!("study `{name}` is already stopped"),
        Stopped::Now { cancelled } => eprintln!(
            "stopped study `{name}` ({cancelled} trial(s) cancelled); `augur run` resumes it"
        ),
    }
    Ok(0)
}

pub async fn init(ctx: &Backend, agents: &[std::path::PathBuf]) -> CmdResult {
    ctx.init(agents).await?;
    Ok(0)
}
