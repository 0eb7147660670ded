//! Running an attempt's script: its set-up (the preflight checks, the checkpoint
//! and working directories, bash started in a process group of its own), then the
//! loop that logs its lines, heart-beats, and ends it at its timeout, its keepalive,
//! a reclaim notice or a signal; what it ended with.

use crate::lines::{self, Chunk, Stream};
use crate::log::Log;
use crate::output::ScriptOutput;
use crate::watch::{self, Beats};
use crate::{checkpoints, process, secrets, spare, AgentConfig, AgentError, AwsAgent};
use augur_model::{duration, AttemptEnd, Study, Trial};
use augur_store::logfile::Source;
use augur_store::now_ms;
use std::process::Stdio;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// How long to wait for output after the script exits (a background process may hold
/// the pipes open).
const DRAIN: Duration = Duration::from_secs(3);

pub(crate) fn failure_text(status: &std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(137), _) => {
            Some("exit code 137 (a process was killed with SIGKILL: out of memory, or killed outside augur)".into())
        }
        (Some(c), _) => Some(format!("exit code {c}")),
        (None, Some(libc::SIGKILL)) => {
            Some("killed by signal 9 (SIGKILL: out of memory, or killed outside augur)".into())
        }
        (None, Some(s)) => Some(format!("killed by signal {s}")),
        (None, None) => Some("ended abnormally".into()),
    }
}

pub(crate) fn killed_from_outside(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL) || status.code() == Some(137)
}

/// A fresh working directory holding the study's files from S3.
async fn fetch_files(aws: &AwsAgent, study: &Study, cwd: &std::path::Path) -> std::io::Result<()> {
    if cwd.exists() {
        std::fs::remove_dir_all(cwd)?;
    }
    std::fs::create_dir_all(cwd)?;
    augur_aws::s3::download(
        &aws.s3,
        &aws.bucket,
        &augur_aws::s3::files_prefix(&study.name),
        cwd,
    )
    .await
    .map(|_| ())
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Runs the script; `None` when the attempt was superseded (or its agent gave up on
/// the store). Everything slow (a restore, the study's files, secrets, checkpoint
/// syncs) runs beside the heartbeat.
pub(crate) async fn run_script(
    cfg: &AgentConfig,
    study: &Study,
    beats: &mut Beats<'_>,
    trial: &Trial,
    log: &Log,
) -> Result<Option<AttemptEnd>, AgentError> {
    let mut seen = ScriptOutput::default();
    let (script, mut ckpt, secrets) = match beats
        .beside(&mut seen, log, set_up(cfg, study, trial, log))
        .await
    {
        Ok(Ok(ready)) => ready,
        Ok(Err(end)) => return Ok(Some(*end)),
        Err(why) => {
            log.write(Source::Augur, &format!("{why}; the script was not started"));
            return Ok(None);
        }
    };
    seen.masked = secrets.into_iter().map(|(_, v)| v).collect();
    // One of the record's metric names is held for the objective, whenever it comes.
    seen.names = augur_model::bounded::MetricNames::keeping(&study.objective.metric);
    let cwd = script.cwd.clone();
    let mut run = Run::new(script, study, trial)?;
    let watched = run.watch(cfg, beats, &mut seen, ckpt.as_mut(), log).await;
    if let Err(why) = watched {
        if run.status.is_none() {
            log.write(Source::Augur, &format!("{why}; ending the script"));
            process::terminate(&mut run.child, run.pgid, run.grace).await;
        }
        return Ok(None);
    }
    // What the script saved last, a reclaim's SIGTERM included, before the record says
    // the attempt is over; heart-beating meanwhile, however long it takes.
    match ckpt.as_mut() {
        Some(c) if beats.heard() => {
            if let Err(why) = beats.beside(&mut seen, log, c.finish(log)).await {
                log.write(Source::Augur, &format!("{why}; the last checkpoint sync is left"));
                return Ok(None);
            }
        }
        Some(_) => log.write(
            Source::Augur,
            "checkpoint: no last sync (no heartbeat recorded for a lease: another attempt may own the trial's checkpoint)",
        ),
        None => {}
    }
    // What the attempt left empty makes the next attempt's (a warm agent).
    if !trial.is_dataset() {
        spare::SPARES.keep(spare::Kind::Work, &cwd);
    }
    if let Some(note) = seen.names.note() {
        log.write(Source::Augur, &note);
    }
    let mut end = seen.outcome(run.status, run.ended);
    end.checkpoint = ckpt.as_ref().and_then(|c| c.kept());
    end.preempted = run.preempted;
    end.script_ended_ms = run.script_ended_ms;
    Ok(Some(end))
}

/// A script running, and what the agent knows of how it ends.
struct Run {
    child: tokio::process::Child,
    pgid: u32,
    rx: mpsc::Receiver<Chunk>,
    cwd: std::path::PathBuf,
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    started: Instant,
    timeout_ms: Option<u64>,
    deadline: Option<Instant>,
    grace: Duration,
    status: Option<std::process::ExitStatus>,
    /// Why the agent ended the script itself, and that it may be retried.
    ended: Option<(String, bool)>,
    preempted: bool,
    script_ended_ms: Option<i64>,
}

impl Run {
    fn new(script: Script, study: &Study, trial: &Trial) -> Result<Run, AgentError> {
        let started = Instant::now();
        let timeout_ms = study.attempt_timeout_ms(trial);
        Ok(Run {
            child: script.child,
            pgid: script.pgid,
            rx: script.rx,
            cwd: script.cwd,
            sigterm: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            sigint: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
            started,
            timeout_ms,
            deadline: timeout_ms.map(|ms| started + Duration::from_millis(ms)),
            grace: Duration::from_millis(study.run.grace_ms),
            status: None,
            ended: None,
            preempted: false,
            script_ended_ms: None,
        })
    }

    /// Logs the script's lines, heart-beats, takes in checkpoint syncs, and ends the
    /// script at its timeout, its keepalive, a reclaim notice or a signal, until it
    /// has exited and its output is drained; why the attempt must end at once, if a
    /// beat found it must.
    async fn watch(
        &mut self,
        cfg: &AgentConfig,
        beats: &mut Beats<'_>,
        seen: &mut ScriptOutput,
        mut ckpt: Option<&mut checkpoints::Checkpoints>,
        log: &Log,
    ) -> Result<(), String> {
        let far = self.started + Duration::from_secs(86_400 * 365);
        let every = cfg.heartbeat.min(Duration::from_secs(5));
        let notice = async {
            match cfg.spot {
                true => augur_aws::spot_notice(every).await,
                false => std::future::pending().await,
            }
        };
        tokio::pin!(notice);
        let (mut open, mut drain_until, mut last_output) = (true, None, self.started);
        while self.status.is_none() || open {
            let watchdog = seen.keepalive.map(|k| last_output + k);
            let expiry = [self.deadline, watchdog].into_iter().flatten().min();
            let running = self.status.is_none();
            // Set when the agent ends the script itself: why, and what it logs.
            let mut stop: Option<(String, String)> = None;
            tokio::select! {
                chunk = self.rx.recv(), if open => match chunk {
                    Some(c) => seen.take(c, log, &mut last_output),
                    None => open = false,
                },
                s = self.child.wait(), if running => {
                    self.status = Some(s.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(255 << 8)));
                    self.script_ended_ms = Some(now_ms());
                    // Whatever the script left behind in its group ends with it.
                    process::signal_group(self.pgid, libc::SIGKILL);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                _ = sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && open => open = false,
                _ = sleep_until(expiry.unwrap_or(far)), if expiry.is_some() && running => {
                    let timed_out = self.deadline.is_some_and(|d| d <= Instant::now());
                    stop = Some(expired(timed_out, self.timeout_ms, seen.keepalive, self.grace));
                }
                doc = &mut notice, if running && !self.preempted => {
                    self.preempted = true;
                    stop = Some(watch::reclaimed(&self.cwd, &doc));
                }
                _ = self.sigterm.recv(), if running => {
                    stop = Some(("agent terminated".into(), "agent received SIGTERM; ending the script".into()));
                }
                _ = self.sigint.recv(), if running => {
                    stop = Some(("agent interrupted".into(), "agent received SIGINT; ending the script".into()));
                }
                p = beats.pulse() => {
                    let tick = matches!(p, watch::Pulse::Tick);
                    if let Some(why) = beats.on(p, seen, log) {
                        return Err(why);
                    }
                    if let (true, Some(c)) = (tick && beats.heard(), ckpt.as_deref_mut()) {
                        if let Some(kept) = c.beat(log).await {
                            seen.checkpoint = Some(kept);
                            seen.dirty = true;
                        }
                    }
                }
            }
            if let Some((why, said)) = stop {
                log.write(Source::Augur, &said);
                self.status = process::terminate(&mut self.child, self.pgid, self.grace).await;
                drain_until = Some(Instant::now() + DRAIN);
                self.ended = Some((why, true));
            }
        }
        Ok(())
    }
}

/// Everything before the script runs: the preflight checks, the checkpoint directory
/// (restored on AWS), the working directory and the script started; how the attempt
/// ended, if it could not start (logged).
async fn set_up(
    cfg: &AgentConfig,
    study: &Study,
    trial: &Trial,
    log: &Log,
) -> Result<
    (
        Script,
        Option<checkpoints::Checkpoints>,
        Vec<(String, String)>,
    ),
    Box<AttemptEnd>,
> {
    fn failed(log: &Log, msg: String, retryable: bool) -> Box<AttemptEnd> {
        log.write(Source::Augur, &msg);
        Box::new(AttemptEnd {
            error: Some(msg),
            retryable,
            ..Default::default()
        })
    }
    // Not retried: a tampered record or a missing secret does not mend itself.
    let secrets = preflight(cfg, study, trial)
        .await
        .map_err(|msg| failed(log, msg, false))?;
    // The machine could not set the attempt up (checkpoints or files not fetched,
    // bash not started): not the script's failure, so it may be retried.
    let ckpt = checkpoints::Checkpoints::prepare(cfg, &cfg.layout, study, trial)
        .await
        .map_err(|msg| failed(log, msg, true))?;
    if let Some(n) = ckpt.as_ref().map(|c| c.restored()).filter(|n| *n > 0) {
        log.write(
            Source::Augur,
            &format!("checkpoint: restored {n} file(s) from the last attempts"),
        );
    }
    let dir = ckpt.as_ref().map(|c| c.dir.clone());
    let script = start_script(cfg, study, trial, &secrets, dir.as_deref())
        .await
        .map_err(|msg| failed(log, msg, true))?;
    Ok((script, ckpt, secrets))
}

/// Why a script is ended at its timeout or keepalive, as recorded and as logged.
fn expired(
    timed_out: bool,
    timeout_ms: Option<u64>,
    keepalive: Option<Duration>,
    grace: Duration,
) -> (String, String) {
    let why = if timed_out {
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(0));
        format!("timed out after {}", duration::format(timeout))
    } else {
        let quiet = keepalive.unwrap_or_default();
        format!(
            "keepalive expired: no output for {}",
            duration::format(quiet)
        )
    };
    let said = format!(
        "{why}; ending the script (SIGTERM, then SIGKILL after {})",
        duration::format(grace)
    );
    (why, said)
}

/// A started script: its process, its group, and its output lines.
struct Script {
    child: tokio::process::Child,
    pgid: u32,
    rx: mpsc::Receiver<Chunk>,
    /// Its working directory.
    cwd: std::path::PathBuf,
}

/// What must hold before anything is set up: the record names plain datasets, and
/// the study's secrets can be read (their variables and values).
async fn preflight(
    cfg: &AgentConfig,
    study: &Study,
    trial: &Trial,
) -> Result<Vec<(String, String)>, String> {
    let names = trial.dataset.iter().chain(&trial.needs);
    if let Some(bad) = names
        .into_iter()
        .find(|d| !augur_model::agent::plain_name(d))
    {
        return Err(format!(
            "refused: dataset `{bad}` is not a plain name (a tampered record?)"
        ));
    }
    secrets::resolve(study, cfg.aws.as_ref().map(|a| &a.secrets)).await
}

/// Prepares the attempt's working directory (or a dataset's) and starts its script
/// under bash in a process group of its own, with its secrets in its environment;
/// why not, if it could not.
async fn start_script(
    cfg: &AgentConfig,
    study: &Study,
    trial: &Trial,
    secrets: &[(String, String)],
    checkpoint_dir: Option<&std::path::Path>,
) -> Result<Script, String> {
    let script = augur_model::agent::script_of(study, trial);
    let cwd = match &trial.dataset {
        Some(name) => cfg.layout.dataset_dir(&cfg.study, name),
        None => cfg.layout.work_dir(&cfg.study, trial.id, cfg.attempt),
    };
    let prepared = match (&cfg.aws, trial.is_dataset()) {
        (_, true) => std::fs::create_dir_all(&cwd),
        // A fresh directory: the last attempt's, left empty, under a new name.
        (None, false) if spare::SPARES.rename_to(spare::Kind::Work, &cwd) => {
            augur_store::workdir::fill(study, &cwd)
        }
        (None, false) => augur_store::workdir::prepare(study, &cwd),
        (Some(aws), false) => fetch_files(aws, study, &cwd).await,
    };
    if let Err(e) = prepared {
        return Err(format!(
            "cannot prepare working directory {}: {e}",
            cwd.display()
        ));
    }
    let mut env =
        augur_model::agent::script_env(study, trial, |d| cfg.layout.dataset_dir(&cfg.study, d));
    if let Some(package) = crate::python::package_dir(&cfg.layout.root) {
        let prior = env
            .get("PYTHONPATH")
            .cloned()
            .or_else(|| std::env::var("PYTHONPATH").ok());
        let path = crate::python::python_path(prior.as_deref(), &package);
        env.insert("PYTHONPATH".into(), path);
    }
    if let Some(dir) = checkpoint_dir {
        env.insert(
            augur_model::agent::env::CHECKPOINT_DIR.into(),
            dir.display().to_string(),
        );
    }
    let mut cmd = tokio::process::Command::new(process::bash());
    cmd.arg("-c")
        .arg(format!("{}{}", study.run.preamble, script))
        .current_dir(&cwd)
        .envs(&env)
        .envs(secrets.iter().map(|(k, v)| (k, v)))
        .env(augur_model::agent::env::WORKDIR, &cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start bash: {e}"))?;
    let pgid = child.id().unwrap_or(0);
    let (tx, rx) = mpsc::channel::<Chunk>(1024);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(lines::split(out, Stream::Out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(lines::split(err, Stream::Err, tx));
    }
    Ok(Script {
        child,
        pgid,
        rx,
        cwd,
    })
}
