//! Running an attempt's script: its set-up (the preflight checks, the checkpoint
//! and working directories, bash started in a process group of its own), then the
//! loop that logs its lines, heart-beats, and ends it at its timeout, its keepalive,
//! a reclaim notice or a signal; what it ended with.

use crate::lines::{self, Chunk, Stream};
use crate::log::Log;
use crate::output::ScriptOutput;
use crate::{checkpoints, process, secrets, spare, watch, AgentConfig, AgentError, AwsAgent};
use augur_model::{duration, AttemptEnd, Study, Trial};
use augur_store::logfile::Source;
use augur_store::{now_ms, TrialStore};
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

/// Runs the script; `None` when the attempt was superseded.
pub(crate) async fn run_script(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    (study, lease): (&Study, Option<Duration>),
    trial: &Trial,
    log: &mut Log,
) -> Result<Option<AttemptEnd>, AgentError> {
    let (script, mut ckpt, secrets) = match set_up(cfg, study, trial, log).await {
        Ok(ready) => ready,
        Err(end) => return Ok(Some(*end)),
    };
    let Script {
        mut child,
        pgid,
        mut rx,
        cwd,
    } = script;
    let timeout_ms = study.attempt_timeout_ms(trial);
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let started = Instant::now();
    let deadline = timeout_ms.map(|ms| started + Duration::from_millis(ms));
    let grace = Duration::from_millis(study.run.grace_ms);
    let mut heartbeat = tokio::time::interval_at(started + cfg.heartbeat, cfg.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = ScriptOutput {
        masked: secrets.into_iter().map(|(_, v)| v).collect(),
        ..Default::default()
    };
    let mut last_output = started;
    let mut status: Option<std::process::ExitStatus> = None;
    let mut open = true;
    let mut drain_until = None;
    let mut ended: Option<(String, bool)> = None;
    let far = started + Duration::from_secs(86_400 * 365);
    let every = cfg.heartbeat.min(Duration::from_secs(5));
    let notice = async {
        match cfg.spot {
            true => augur_aws::spot_notice(every).await,
            false => std::future::pending().await,
        }
    };
    tokio::pin!(notice);
    let mut preempted = false;
    let mut last_beat = started;
    let mut script_ended_ms = None;

    while status.is_none() || open {
        let watchdog = seen.keepalive.map(|k| last_output + k);
        let expiry = [deadline, watchdog].into_iter().flatten().min();
        // Set when the agent ends the script itself: why, and that it may be retried.
        let mut stop: Option<(String, String)> = None;
        tokio::select! {
            chunk = rx.recv(), if open => match chunk {
                Some(c) => seen.take(c, log, &mut last_output),
                None => open = false,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(255 << 8)));
                script_ended_ms = Some(now_ms());
                // Whatever the script left behind in its group ends with it.
                process::signal_group(pgid, libc::SIGKILL);
                drain_until = Some(Instant::now() + DRAIN);
            }
            _ = sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && open => open = false,
            _ = sleep_until(expiry.unwrap_or(far)), if expiry.is_some() && status.is_none() => {
                let timed_out = deadline.is_some_and(|d| d <= Instant::now());
                stop = Some(expired(timed_out, timeout_ms, seen.keepalive, grace));
            }
            doc = &mut notice, if status.is_none() && !preempted => {
                preempted = true;
                stop = Some(watch::reclaimed(&cwd, &doc));
            }
            _ = sigterm.recv(), if status.is_none() => {
                stop = Some(("agent terminated".into(), "agent received SIGTERM; ending the script".into()));
            }
            _ = sigint.recv(), if status.is_none() => {
                stop = Some(("agent interrupted".into(), "agent received SIGINT; ending the script".into()));
            }
            _ = heartbeat.tick() => {
                log.flush().await;
                let end = watch::heartbeat(store, cfg, &mut seen, log, lease, &mut last_beat).await;
                if let (None, Some(c)) = (&end, ckpt.as_mut()) {
                    if let Some(kept) = c.beat(log).await {
                        seen.checkpoint = Some(kept);
                        seen.dirty = true;
                    }
                }
                if let Some(why) = end {
                    if status.is_none() {
                        log.write(Source::Augur, &format!("{why}; ending the script"));
                        process::terminate(&mut child, pgid, grace).await;
                        log.flush().await;
                    }
                    return Ok(None);
                }
            }
        }
        if let Some((why, said)) = stop {
            log.write(Source::Augur, &said);
            status = process::terminate(&mut child, pgid, grace).await;
            drain_until = Some(Instant::now() + DRAIN);
            ended = Some((why, true));
        }
    }
    // What the script saved last, a reclaim's SIGTERM included, before the record says
    // the attempt is over.
    if let Some(c) = ckpt.as_mut() {
        c.sync(log).await;
    }
    // What the attempt left empty makes the next attempt's (a warm agent).
    if !trial.is_dataset() {
        spare::SPARES.keep(spare::Kind::Work, &cwd);
    }
    let mut end = seen.outcome(status, ended);
    end.checkpoint = ckpt.as_ref().and_then(|c| c.kept());
    end.preempted = preempted;
    end.script_ended_ms = script_ended_ms;
    Ok(Some(end))
}

/// Everything before the script runs: the preflight checks, the checkpoint directory
/// (restored on AWS), the working directory and the script started; how the attempt
/// ended, if it could not start (logged).
async fn set_up(
    cfg: &AgentConfig,
    study: &Study,
    trial: &Trial,
    log: &mut Log,
) -> Result<
    (
        Script,
        Option<checkpoints::Checkpoints>,
        Vec<(String, String)>,
    ),
    Box<AttemptEnd>,
> {
    fn failed(log: &mut Log, msg: String, retryable: bool) -> Box<AttemptEnd> {
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
