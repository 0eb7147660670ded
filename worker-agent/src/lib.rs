//! The worker agent: runs one attempt of one trial on its machine.
//!
//! It marks the trial running (conditional on its attempt, the fencing token), runs
//! the script under `bash -c` in its own process group with the parameters in the
//! environment, logs every line with a timestamp, parses metrics as they come,
//! heart-beats, enforces the timeout and the keepalive watchdog, and writes the final
//! state. A write that finds the record moved on (cancelled, lost and retried) means
//! another attempt owns the trial: the agent ends its script and leaves quietly.

mod checkpoints;
pub mod lines;
mod log;
mod output;
pub mod process;
mod python;
pub mod reuse;
mod script;
mod secrets;
pub mod spare;
mod watch;

use log::Log;

use augur_model::{AttemptEnd, Expect, Study, Trial, TrialState, TrialUpdate};
use augur_store::logfile::Source;
use augur_store::{now_ms, Layout, StoreError, TrialStore, Written};
use std::time::Duration;
use tokio::time::Instant;

/// What the agent is asked to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The state directory, its path absolute with no symbolic link in it (what
    /// scripts are told, and how a local provider knows their processes).
    pub layout: Layout,
    pub study: String,
    pub trial: u64,
    pub attempt: u32,
    pub heartbeat: Duration,
    /// How this machine is named in the record (`host:pid` by default).
    pub machine: String,
    /// Which attempt of this machine this one is (1 for its first; more when it is
    /// kept warm).
    pub turn: u32,
    /// On AWS: logs to CloudWatch Logs and study files from S3 (local otherwise).
    pub aws: Option<AwsAgent>,
    /// Watch the instance's metadata for a spot reclaim notice (on EC2).
    pub spot: bool,
}

/// The AWS services an agent on EC2 uses besides the store.
#[derive(Clone, Debug)]
pub struct AwsAgent {
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Log groups are `<prefix>/<study>`.
    pub log_prefix: String,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    /// Where `run.secrets` are read from.
    pub secrets: augur_aws::secrets::Secrets,
}

/// Why the agent could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no trial {study}/{trial} in the store")]
    NoTrial { study: String, trial: u64 },
    #[error(
        "attempt {attempt} of {key} is not current (the record is {state} at attempt {current})"
    )]
    Stale {
        key: String,
        attempt: u32,
        state: TrialState,
        current: u32,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl AgentError {
    /// A write of this agent's attempt found the trial moved on (`now`: as it is;
    /// `None`: deleted, reported as cancelled).
    fn superseded(cfg: &AgentConfig, now: Option<Trial>) -> AgentError {
        let (state, current) = now
            .map(|t| (t.state, t.attempt))
            .unwrap_or((TrialState::Cancelled, 0));
        AgentError::Stale {
            key: format!("{}/{}", cfg.study, cfg.trial),
            attempt: cfg.attempt,
            state,
            current,
        }
    }
}

/// How the attempt ended for this agent.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// The final state was written.
    Finished(TrialState),
    /// The final state was written, and the script had been ended by force (a
    /// signal, its timeout, the keepalive watchdog, a reclaim notice) or never ran:
    /// its machine takes no further attempt ([`AttemptEnd::forced`]).
    Forced(TrialState),
    /// Another attempt (or a cancellation) took the trial over.
    Superseded,
}

/// Runs one attempt to its end. See the crate docs.
pub async fn run_attempt(store: &dyn TrialStore, cfg: &AgentConfig) -> Result<Ended, AgentError> {
    let rec = match study_record(store, cfg).await? {
        Ok(rec) => rec,
        Err(why) => return refuse(store, cfg, why).await,
    };
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    // Past this without a heartbeat recorded, a driver counts the attempt lost.
    let heartbeat_timeout = rec.drive.as_ref().map(|d| ms(d.heartbeat_timeout_ms));
    // The agent itself gives up on a store it cannot reach only after this.
    let give_up = rec
        .drive
        .as_ref()
        .map_or(DEFAULT_GIVE_UP, |d| ms(d.give_up_ms));
    // How long a record that does not name this attempt yet is waited for.
    let patience = rec
        .drive
        .as_ref()
        .map_or(DEFAULT_PATIENCE, |d| ms(d.boot_timeout_ms));
    let study = rec.spec;
    let log = open_log(cfg);
    // The write that takes the attempt (conditional on it) reads the trial too.
    let trial = mark_running(store, cfg, patience, &log).await?;
    // The record says what to run: only what a driver proposed (where others may
    // write trial records, a guard they cannot write vouches for it).
    if !store.proposed(&trial).await? {
        return refuse_unproposed(store, cfg, &log).await;
    }
    log_start(cfg, &trial, &log);
    let mut beats = watch::Beats::new(store, cfg, heartbeat_timeout, give_up);
    let outcome = script::run_script(cfg, &study, &mut beats, &trial, &log).await?;
    // An attempt ended from outside (SIGTERM: `augur stop`, a pruner) is usually one
    // whose trial has moved on already: say so, not "failed".
    let outcome = match outcome {
        Some(o) if o.retryable => match moved_on(store, cfg).await {
            Some(now) => Err(Some(now)),
            None => Ok(o),
        },
        Some(o) => Ok(o),
        None => Err(moved_on(store, cfg).await),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(now) => {
            let what = match now {
                Some(t) if t.attempt == cfg.attempt => format!("the trial is {}", t.state),
                Some(t) => format!("the trial moved on to attempt {} ({})", t.attempt, t.state),
                None => "the trial moved on".to_string(),
            };
            log.write(
                Source::Augur,
                &format!("{what}: this attempt ends without a final write"),
            );
            log.finish().await;
            return Ok(Ended::Superseded);
        }
    };
    // Shipping the last lines may take minutes (CloudWatch Logs slow or down):
    // heart-beating meanwhile, as the result is not recorded yet.
    let closing = close_log(&log, judged(&study, &trial, outcome));
    let quiet = &mut output::ScriptOutput::default();
    let outcome = beats.alongside(quiet, &log, closing).await;
    let ended = final_write(store, cfg, &outcome, give_up).await?;
    // A trial that succeeded needs its checkpoint directory no more: left empty, it
    // makes the next trial's (a warm agent). Not sooner: a retry of the trial, on
    // another agent, would be using it.
    if ended == Ended::Finished(TrialState::Succeeded) && !trial.is_dataset() && cfg.aws.is_none() {
        let dir = cfg.layout.checkpoint_dir(&cfg.study, trial.id);
        spare::SPARES.keep(spare::Kind::Checkpoint, &dir);
    }
    Ok(ended)
}

/// The study's record; why not to run the attempt, if the record does not pass its
/// check (the store is not trusted as much as a study file).
async fn study_record(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
) -> Result<Result<augur_model::StudyRecord, String>, AgentError> {
    let rec = store
        .get_study(&cfg.study)
        .await?
        .ok_or_else(|| AgentError::NoTrial {
            study: cfg.study.clone(),
            trial: cfg.trial,
        })?;
    Ok(rec.check().map(|()| rec))
}

/// Ends a starting attempt as failed, not to be retried, without running anything:
/// its study record was refused.
async fn refuse(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    why: String,
) -> Result<Ended, AgentError> {
    let up = TrialUpdate::refused(&why, now_ms());
    let expect = Expect::state(TrialState::Starting, cfg.attempt);
    match store
        .update_trial(&cfg.study, cfg.trial, &expect, &up)
        .await?
    {
        Written::Done(_) => Ok(Ended::Forced(TrialState::Failed)),
        Written::Conflict(now) => Err(AgentError::superseded(cfg, now)),
    }
}

/// Ends a running attempt whose record no proposal vouches for, without running
/// anything: failed, not retried, with the reason.
async fn refuse_unproposed(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    log: &Log,
) -> Result<Ended, AgentError> {
    let why = "refused: no proposal of augur's vouches for this trial record (written by something else); nothing ran";
    log.write(Source::Augur, why);
    log.finish().await;
    let expect = Expect::state(TrialState::Running, cfg.attempt);
    match store
        .update_trial(
            &cfg.study,
            cfg.trial,
            &expect,
            &TrialUpdate::refused(why, now_ms()),
        )
        .await?
    {
        Written::Done(_) => Ok(Ended::Forced(TrialState::Failed)),
        Written::Conflict(now) => Err(AgentError::superseded(cfg, now)),
    }
}

/// The attempt's log: a file, or CloudWatch on AWS.
fn open_log(cfg: &AgentConfig) -> Log {
    match &cfg.aws {
        Some(aws) => Log::cloud(
            augur_aws::cwlogs::CloudWatchSink::new(
                aws.logs.clone(),
                augur_aws::cwlogs::group(&aws.log_prefix, &cfg.study),
                augur_aws::cwlogs::stream(cfg.trial, cfg.attempt),
            ),
            cfg.heartbeat,
        ),
        None => Log::open(cfg.layout.log_file(&cfg.study, cfg.trial, cfg.attempt)),
    }
}

/// The log's first line: what runs where.
fn log_start(cfg: &AgentConfig, trial: &Trial, log: &Log) {
    let what = match &trial.dataset {
        Some(d) => format!("dataset {d}"),
        None => format!("trial {} replicate {}", trial.id, trial.replicate),
    };
    log.write(
        Source::Augur,
        &format!(
            "attempt {} of {what} (study {}) on {} at {}; params {}",
            cfg.attempt,
            cfg.study,
            cfg.machine,
            augur_store::logfile::rfc3339(now_ms()),
            serde_json::to_string(&trial.params).unwrap_or_default()
        ),
    );
}

/// How long an agent waits for a record that does not name its attempt yet, when
/// the study records no boot timeout.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(600);

/// How long an agent goes on without recording a heartbeat, when the study records
/// no give-up horizon.
const DEFAULT_GIVE_UP: Duration = Duration::from_secs(900);

/// `starting → running` at this agent's attempt (the fencing token), on a record
/// that names no machine or this one; stale if the trial moved on first.
///
/// A record that does not name this attempt yet (an earlier attempt, or this one
/// still `pending`) may be one whose driver has not recorded its launch yet: a
/// machine can boot before the launch's answer is written. Its agent reads again
/// every heartbeat for up to `patience` (the study's boot timeout, after which a
/// driver counts the attempt lost anyway) rather than power off a launch its driver
/// may still record.
async fn mark_running(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    patience: Duration,
    log: &Log,
) -> Result<Trial, AgentError> {
    let until = Instant::now() + patience;
    let expect = Expect::state(TrialState::Starting, cfg.attempt).on(&cfg.machine);
    let mut said = false;
    loop {
        let up = TrialUpdate::running(&cfg.machine, cfg.turn, now_ms(), Some(log.location.clone()));
        let now = match store
            .update_trial(&cfg.study, cfg.trial, &expect, &up)
            .await?
        {
            Written::Done(t) => return Ok(t),
            Written::Conflict(None) => {
                return Err(AgentError::NoTrial {
                    study: cfg.study.clone(),
                    trial: cfg.trial,
                })
            }
            Written::Conflict(Some(now)) => now,
        };
        let to_come = now.attempt < cfg.attempt
            || (now.attempt == cfg.attempt && now.state == TrialState::Pending);
        if !to_come || Instant::now() >= until {
            log.write(
                Source::Augur,
                "attempt superseded before it started; leaving",
            );
            log.finish().await;
            return Err(AgentError::superseded(cfg, Some(now)));
        }
        if !std::mem::replace(&mut said, true) {
            tracing::info!(record = %format!("{} at attempt {}", now.state, now.attempt), "the record does not name this attempt yet; waiting for its driver");
        }
        tokio::time::sleep(cfg.heartbeat.min(Duration::from_secs(5))).await;
    }
}

/// The trial as it is now, if it is no longer running at this agent's attempt (`None`
/// also when it cannot be read: the final write then finds out).
async fn moved_on(store: &dyn TrialStore, cfg: &AgentConfig) -> Option<Trial> {
    let now = store.get_trial(&cfg.study, cfg.trial).await.ok()??;
    let current = now.state == TrialState::Running && now.attempt == cfg.attempt;
    (!current).then_some(now)
}

/// The outcome held to the study's objective: a trial (not a dataset) whose script
/// exited 0 without reporting a required objective metric failed, not retried (a typo
/// does not mend itself).
fn judged(study: &Study, trial: &Trial, mut outcome: AttemptEnd) -> AttemptEnd {
    if trial.dataset.is_none() {
        if let Some(why) = study.unreported(&outcome) {
            outcome.error = Some(why);
            outcome.retryable = false;
        }
    }
    outcome
}

/// Writes how the attempt ended to its log and sends the rest. A log that could not
/// be written is said in the outcome, but never fails a script that succeeded.
async fn close_log(log: &Log, mut outcome: AttemptEnd) -> AttemptEnd {
    let state = if outcome.exit_code == Some(0) && outcome.error.is_none() {
        TrialState::Succeeded
    } else {
        TrialState::Failed
    };
    log.write(
        Source::Augur,
        &format!(
            "{state}: {}",
            outcome
                .error
                .clone()
                .unwrap_or_else(|| "exit code 0".into())
        ),
    );
    log.finish().await;
    if let Some(b) = &log.broken() {
        match outcome.error.take() {
            Some(e) => outcome.error = Some(format!("{e}; {b}")),
            // The script succeeded; a log problem alone must not fail the trial. It
            // is said where the lines are kept: the record's last lines.
            None if outcome.exit_code == Some(0) => outcome.log_tail.push(format!(
                "augur warning: {b}; the log is incomplete (its last lines are kept here)"
            )),
            None => outcome.error = Some(b.clone()),
        }
    }
    outcome
}

/// The final write, retried while the database is unavailable, for as long as the
/// agent would go on without a heartbeat (`give_up`).
/// The wait after the `failed`-th failed try of a write the agent must make (its
/// final record, its last log lines): 100 ms doubling, at most 5 s.
pub(crate) fn retry_wait(failed: u32) -> Duration {
    augur_model::backoff::ceiling(Duration::from_millis(100), Duration::from_secs(5), failed)
}

async fn final_write(
    store: &dyn TrialStore,
    cfg: &AgentConfig,
    outcome: &AttemptEnd,
    give_up: Duration,
) -> Result<Ended, AgentError> {
    let up = TrialUpdate::finished(now_ms(), outcome);
    let mut cond = Expect::state(TrialState::Running, cfg.attempt);
    let mut failed = 0;
    let give_up = Instant::now() + give_up;
    loop {
        match store.update_trial(&cfg.study, cfg.trial, &cond, &up).await {
            Ok(Written::Done(t)) if outcome.forced() => return Ok(Ended::Forced(t.state)),
            Ok(Written::Done(t)) => return Ok(Ended::Finished(t.state)),
            // Pruned after the script had ended: the pruner saw a curve that was
            // already complete, and what the script did is the truth.
            Ok(Written::Conflict(Some(now)))
                if cond.states == [TrialState::Running] && outcome.overrules(&now, cfg.attempt) =>
            {
                cond = Expect::state(TrialState::Pruned, cfg.attempt);
            }
            Ok(Written::Conflict(_)) => return Ok(Ended::Superseded),
            Err(e) if e.is_retryable() && Instant::now() < give_up => {
                tracing::warn!(error = %e, "final write failed; retrying");
                failed += 1;
                tokio::time::sleep(retry_wait(failed)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{Params, Set};
    use augur_store::SqliteStore;

    /// A store under `dir` holding `rec` and trial `t` starting at attempt 1, and the
    /// configuration of that attempt's agent.
    async fn starting_attempt(
        dir: &std::path::Path,
        rec: &augur_model::StudyRecord,
        t: Trial,
    ) -> (SqliteStore, AgentConfig) {
        let layout = Layout::new(dir.join(".augur"));
        let store = SqliteStore::open(&layout.db()).expect("store");
        store.create_study(rec).await.expect("study");
        let (t, _) = store.create_trial(&t).await.expect("trial");
        let starting = TrialUpdate {
            state: Some(TrialState::Starting),
            ..Default::default()
        };
        store
            .update_trial(
                &rec.name,
                t.id,
                &Expect::state(TrialState::Pending, 1),
                &starting,
            )
            .await
            .expect("starting");
        let cfg = AgentConfig {
            layout,
            study: rec.name.clone(),
            trial: t.id,
            attempt: 1,
            heartbeat: Duration::from_millis(100),
            machine: "test".into(),
            turn: 1,
            aws: None,
            spot: false,
        };
        (store, cfg)
    }

    /// A record whose dataset names a path outside the state directory (written by
    /// hand, or by anything with the worker's write access) is refused: the attempt
    /// fails with the reason, not retried, and nothing is made outside `.augur/data`.
    #[tokio::test]
    async fn a_tampered_dataset_name_is_refused_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut t = Trial::new("s", 0, 0, 0, Params::new(), 1);
        t.dataset = Some("../../escaped".into());
        let rec = augur_store::conformance::record("s");
        let (store, cfg) = starting_attempt(dir.path(), &rec, t).await;
        let layout = cfg.layout.clone();
        let ended = run_attempt(&store, &cfg).await.expect("attempt");
        assert_eq!(ended, Ended::Forced(TrialState::Failed));
        let rec = store
            .get_trial("s", cfg.trial)
            .await
            .expect("read")
            .expect("trial");
        assert!(
            rec.error
                .as_deref()
                .is_some_and(|e| e.contains("not a plain name")),
            "{:?}",
            rec.error
        );
        assert!(!rec.retryable, "a tampered record is not retried");
        assert!(!dir.path().join("escaped").exists());
        assert!(!layout.root.join("escaped").exists());
    }

    /// A study record rewritten in the store (an `AUGUR_*` variable that would mask
    /// the contract's) is refused before anything runs.
    #[tokio::test]
    async fn a_tampered_study_record_runs_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut rec = augur_store::conformance::record("s");
        rec.spec.run.script = format!("touch {}", dir.path().join("ran").display());
        rec.spec.run.env.insert("AUGUR_TRIAL".into(), "7".into());
        let t = Trial::new("s", 0, 0, 0, Params::new(), 1);
        let (store, cfg) = starting_attempt(dir.path(), &rec, t).await;
        let ended = run_attempt(&store, &cfg).await.expect("attempt");
        assert_eq!(ended, Ended::Forced(TrialState::Failed));
        let got = store
            .get_trial("s", cfg.trial)
            .await
            .expect("read")
            .expect("trial");
        assert!(
            got.error
                .as_deref()
                .is_some_and(|e| e.contains("refused") && e.contains("AUGUR_TRIAL")),
            "{:?}",
            got.error
        );
        assert!(!got.retryable);
        assert!(!dir.path().join("ran").exists(), "the script never ran");
    }

    /// A prune recorded after the script had ended (the pruner saw its last readings
    /// while it was saving and exiting) yields to the script's outcome; a prune
    /// recorded while the script still ran stands.
    #[tokio::test]
    async fn a_prune_recorded_after_the_script_ended_yields_to_its_outcome() {
        for (ended_before_prune, want) in [
            (true, Ok(Ended::Finished(TrialState::Succeeded))),
            (false, Ok(Ended::Superseded)),
        ] {
            let dir = tempfile::tempdir().expect("tmp");
            let rec = augur_store::conformance::record("s");
            let t = Trial::new("s", 0, 0, 0, Params::new(), 1);
            let (store, cfg) = starting_attempt(dir.path(), &rec, t).await;
            let log = Log::open(dir.path().join("log"));
            mark_running(&store, &cfg, DEFAULT_PATIENCE, &log)
                .await
                .expect("running");
            let pruned_at = 1_000_000;
            let prune = TrialUpdate {
                state: Some(TrialState::Pruned),
                error: Set::To("asha: …".into()),
                finished_ms: Set::To(pruned_at),
                ..Default::default()
            };
            let expect = Expect::state(TrialState::Running, 1);
            let w = store.update_trial("s", cfg.trial, &expect, &prune).await;
            assert!(matches!(w, Ok(Written::Done(_))));
            let outcome = AttemptEnd {
                exit_code: Some(0),
                metrics: [("m".to_string(), 1.0)].into(),
                script_ended_ms: Some(pruned_at + if ended_before_prune { -5 } else { 5 }),
                ..Default::default()
            };
            let got = final_write(&store, &cfg, &outcome, DEFAULT_GIVE_UP)
                .await
                .map_err(|e| e.to_string());
            assert_eq!(got, want);
            let now = store
                .get_trial("s", cfg.trial)
                .await
                .expect("read")
                .expect("trial");
            match ended_before_prune {
                true => assert_eq!((now.state, now.error), (TrialState::Succeeded, None)),
                false => assert_eq!(now.state, TrialState::Pruned),
            }
        }
    }
}
