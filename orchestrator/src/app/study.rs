//! What `augur run`, `augur submit` and `augur stop` do to a study, apart from
//! parsing their arguments and printing: the study made ready on a backend, the runner
//! that drives it, its record, and a stop.

use super::backend::Backend;
use super::AppError;
use augur::{LeaseSpec, Mode, RegisterOptions, Runner, RunnerConfig, Scope};
use augur_model::{DriveSettings, Study, StudyRecord, StudyState, TrialState};
use augur_store::{now_ms, TrialStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A study made ready to run or submit: its image pinned, its driver's settings, its
/// machines (their settings checked before anything is recorded), the store, and its
/// files uploaded where instances fetch them.
pub struct Prepared {
    pub study: Study,
    pub drive: DriveSettings,
    pub provider: Arc<dyn augur::MachineProvider>,
    pub store: Arc<dyn TrialStore>,
    /// What preparing changed that the user should hear (a `parallel` lowered to
    /// the trials the machine's GPUs fit).
    pub note: Option<String>,
}

impl Prepared {
    /// Makes `study` ready on the backend, to be driven with `drive`.
    pub async fn new(
        mut study: Study,
        drive: DriveSettings,
        ctx: &Backend,
    ) -> Result<Prepared, AppError> {
        ctx.pin_image(&mut study);
        let mut note = None;
        if let Some(gpus) = ctx.local_gpus(&study)? {
            let fit = gpus.fit() as u32;
            if study.parallel > fit {
                note = Some(format!(
                    "parallel {} lowered to {fit}: this machine's {} GPU(s) ({}) fit {fit} trial(s) of {} GPU(s) at once",
                    study.parallel,
                    gpus.all.len(),
                    gpus.all.join(","),
                    gpus.each
                ));
                study.parallel = fit;
            }
        }
        let provider = ctx
            .provider(&study, Duration::from_millis(drive.heartbeat_ms as u64))
            .await?;
        // The GPUs a trial asks for, against its machines' (an instance type's):
        // refused before anything is recorded.
        provider
            .slots(&study)
            .await
            .map_err(|e| AppError::of(e.kind(), e))?;
        let store = ctx.store().await?;
        ctx.upload_study_files(&study).await?;
        Ok(Prepared {
            study,
            drive,
            provider,
            store,
            note,
        })
    }

    /// The runner of a foreground `augur run`: the study's settings, the backend's
    /// retention, and, where the serverless tick may drive the study too, a lease
    /// (whoever holds it acts).
    pub fn runner(&self, ctx: &Backend, backend_deadline: Duration) -> Runner {
        let lease = ctx
            .drivers_share_studies()
            .then(|| LeaseSpec::for_process("augur-run", Duration::from_secs(30)));
        let config = RunnerConfig {
            drive: self.drive.clone(),
            backend_deadline,
            lease,
            keep_days: ctx.keep_days(&self.study),
            ..RunnerConfig::default()
        };
        Runner::with_config(self.store.clone(), self.provider.clone(), config)
    }

    /// Records the study (or checks it against its record) with its settings, then
    /// its log group with its retention.
    pub async fn record(
        &self,
        runner: &Runner,
        ctx: &Backend,
        retry_failed: bool,
    ) -> Result<StudyRecord, AppError> {
        let options = RegisterOptions {
            retry_failed,
            drive: Some(self.drive.clone()),
        };
        let rec = runner.register(&self.study, &options).await?;
        ctx.prepare_logs(&self.study).await?;
        Ok(rec)
    }

    /// `augur submit`: records the study for the serverless tick to drive. Returns
    /// its record and how many of its trials are already finished.
    pub async fn submit(
        self,
        ctx: &Backend,
        retry_failed: bool,
    ) -> Result<(StudyRecord, u64), AppError> {
        let runner = Runner::new(self.store.clone(), self.provider.clone());
        let rec = self.record(&runner, ctx, retry_failed).await?;
        self.store.set_submitted(&self.study.name, true).await?;
        let trials = self.store.list_trials(&self.study.name).await?;
        Ok((rec.clone(), augur::report::finished(&rec, &trials)))
    }
}

/// What `augur stop` found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The study was already over (done, or its budget spent).
    AlreadyOver(StudyState),
    /// The study was already stopped.
    AlreadyStopped,
    /// The study is stopped now, with this many trials cancelled.
    Now { cancelled: usize },
}

/// `augur stop`: marks the study stopping and cancels what runs, racing safely
/// (conditional writes) with an orchestrator still running it: cancelling is
/// level-triggered like everything else.
pub async fn stop(ctx: &Backend, name: &str) -> Result<Stopped, AppError> {
    let no = || AppError::input(format!("no study named `{name}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(name).await?.ok_or_else(no)?;
    match rec.state {
        StudyState::Done | StudyState::Spent => return Ok(Stopped::AlreadyOver(rec.state)),
        StudyState::Stopped => return Ok(Stopped::AlreadyStopped),
        _ => {}
    }
    store
        .set_study_state(name, &[StudyState::Active], StudyState::Stopping, now_ms())
        .await?;
    let config = RunnerConfig {
        drive: rec.drive.clone().unwrap_or_else(|| ctx.default_drive()),
        ..RunnerConfig::default()
    };
    let runner = Runner::with_config(store.clone(), ctx.sweeper().await, config);
    let (_tx, rx) = watch::channel(Mode::Cancel);
    runner
        .drive(&rec.spec, Scope::Budget(rec.spec.trials), rx)
        .await?;
    let cancelled = store
        .list_trials(name)
        .await?
        .iter()
        .filter(|t| t.state == TrialState::Cancelled)
        .count();
    Ok(Stopped::Now { cancelled })
}
