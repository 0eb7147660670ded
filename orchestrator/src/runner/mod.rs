//! The executor: observes, decides ([`crate::reconcile::decide`]), acts, repeats.
//!
//! The API mirrors diviner's runner: [`Runner::run`] one trial, [`Runner::round`] a
//! round of points, [`Runner::stream`] a whole study with [`StreamHandle::stop`] and
//! [`StreamHandle::wait`], and [`Runner::counters`].

mod cache;
mod driver;
#[cfg(test)]
mod tests;

pub use cache::TickCaches;
pub use driver::Driver;

use crate::provider::{MachineProvider, ProviderError};
use crate::reconcile::{settled, Mode, Scope};
use augur_model::trial::ERROR_DATASET;
use augur_model::{
    oracle_for, DriveSettings, Expect, LaunchBounds, Millis, Params, Study, StudyRecord,
    StudyState, Trial, TrialState, TrialUpdate,
};
use augur_store::{now_ms, Kind, Lease, StoreError, TrialStore};
use cache::Cache;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Why a run could not go on. What each failure asks for (retry, exit code) is said
/// once, in [`RunError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request or the study conflicts with what is recorded (exit code 2).
    #[error("{0}")]
    BadInput(String),
    /// The store failed (its kind says how).
    #[error(transparent)]
    Store(StoreError),
    /// The machine provider failed (its kind says how).
    #[error(transparent)]
    Provider(ProviderError),
    /// IAM refused a request, of the store or the provider: a grant is missing
    /// (exit code 2). Nothing is retried and no attempt is used up; the message
    /// names the grant.
    #[error("{0}")]
    Denied(Box<augur_store::Denied>),
    /// The store or the provider stayed unavailable past the deadline (exit 3).
    #[error("{last} (gave up after {secs} s; `augur run` again resumes the study)")]
    GaveUp {
        secs: u64,
        #[source]
        last: Box<RunError>,
    },
    /// The machines cannot run the agent: the drive's first launches all ended
    /// before their agent reported (exit 3).
    #[error("{0}")]
    Machines(String),
    /// The task driving a stream ended without an answer (a panic: a bug).
    #[error("stream task: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A state the runner cannot be in: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// What this failure asks of whoever meets it.
    pub fn kind(&self) -> Kind {
        match self {
            RunError::BadInput(_) | RunError::Denied(_) => Kind::Input,
            RunError::Store(e) => e.kind(),
            RunError::Provider(e) => e.kind(),
            RunError::GaveUp { .. } | RunError::Machines(_) => Kind::GaveUp,
            RunError::Task(_) | RunError::Internal(_) => Kind::Bug,
        }
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Denied(d) => RunError::Denied(d),
            other => RunError::Store(other),
        }
    }
}

impl From<ProviderError> for RunError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Denied(d) => RunError::Denied(d),
            other => RunError::Provider(other),
        }
    }
}

/// How a drive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Every trial in scope is final.
    Done,
    /// Stopped by a drain or cancel request (or `augur stop`); resumable.
    Interrupted,
}

/// What happened, for progress displays.
#[derive(Clone, Debug)]
pub enum Event {
    /// A trial was created or changed state (`from` is `None` for a new trial).
    Trial {
        trial: Box<Trial>,
        from: Option<TrialState>,
    },
    /// The executor decided a trial is lost, and why.
    Lost { trial: u64, reason: String },
    /// A retry was scheduled.
    Retry {
        trial: u64,
        /// The attempt to come.
        attempt: u32,
        delay_ms: Millis,
        /// The trial's attempts so far that ran its script, and that were preempted
        /// (the others were launch failures).
        runs: u32,
        preemptions: u32,
    },
    /// A launch found no room (capacity, quota): the study waits `wait_ms` before
    /// launching again; it has waited `waited_ms` so far.
    NoRoom {
        what: String,
        wait_ms: Millis,
        waited_ms: Millis,
    },
    /// A try of a trial's launch failed (`tries` so far); it is asked again, under
    /// the same `ClientToken`, in `retry_in_ms`.
    LaunchFailed {
        trial: u64,
        tries: u32,
        error: String,
        retry_in_ms: Millis,
    },
    /// The backend failed; retrying.
    Backend { error: String },
    /// Another driver holds the study's lease (a serverless tick, another `augur
    /// run`): this one follows the study without acting until the lease is free.
    Held { holder: String, until: Millis },
    /// This driver holds the study's lease (again).
    Driving,
}

/// A driver's claim on a study: its name in the lease, and how long a lease lasts
/// (renewed when a third of it is left).
#[derive(Clone, Debug)]
pub struct LeaseSpec {
    pub holder: String,
    pub ttl: Duration,
}

impl LeaseSpec {
    /// A holder name unique to this process: `what@host:pid`.
    pub fn for_process(what: &str, ttl: Duration) -> LeaseSpec {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        LeaseSpec {
            holder: format!("{what}@{host}:{}", std::process::id()),
            ttl,
        }
    }
}

/// How one serverless tick of a study ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickEnd {
    /// The study reached its end in this tick.
    Finished(Finished),
    /// Nothing more to do until something changes (trials running, a retry not due).
    Waiting,
    /// Stopped acting at the deadline, with work left for the next tick.
    Deadline,
    /// Another driver holds the lease.
    Held(Lease),
}

/// Counters of this runner (diviner's `Counters()`).
#[derive(Default, Debug)]
pub struct Counters {
    pub launched: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub lost: AtomicU64,
    pub retried: AtomicU64,
    pub cancelled: AtomicU64,
    pub pruned: AtomicU64,
    /// Attempts whose machine was taken away (spot reclaims).
    pub preempted: AtomicU64,
    pub terminated: AtomicU64,
    pub backend_errors: AtomicU64,
    /// Reconcile passes (a tick, `augur run`'s loop: one or many each).
    pub passes: AtomicU64,
    /// Time spent in reconcile passes, in microseconds.
    pub pass_micros: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterValues {
    pub launched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub lost: u64,
    pub retried: u64,
    pub cancelled: u64,
    pub pruned: u64,
    pub preempted: u64,
    pub terminated: u64,
    pub backend_errors: u64,
    pub passes: u64,
    pub pass_micros: u64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> CounterValues {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            launched: g(&self.launched),
            succeeded: g(&self.succeeded),
            failed: g(&self.failed),
            lost: g(&self.lost),
            retried: g(&self.retried),
            cancelled: g(&self.cancelled),
            pruned: g(&self.pruned),
            preempted: g(&self.preempted),
            terminated: g(&self.terminated),
            backend_errors: g(&self.backend_errors),
            passes: g(&self.passes),
            pass_micros: g(&self.pass_micros),
        }
    }
}

/// Options of [`Runner::register`].
#[derive(Clone, Debug, Default)]
pub struct RegisterOptions {
    /// Re-run the failed (point, replicate) pairs with a fresh attempt budget.
    pub retry_failed: bool,
    /// The driver's timings, recorded with the study (kept as they are when `None`).
    pub drive: Option<DriveSettings>,
}

/// How a runner drives: the study's settings and the runner's own, given whole to
/// [`Runner::with_config`] (as kube-runtime's controllers take their `Config`).
#[derive(Clone)]
pub struct RunnerConfig {
    /// The study's drive settings, as recorded with it.
    pub drive: DriveSettings,
    /// Longest wait between passes when nothing wakes the loop.
    pub idle: Duration,
    /// How long store and provider failures are retried before giving up (exit 3).
    pub backend_deadline: Duration,
    /// Drive only while holding the study's lease (needed wherever another driver may
    /// run: the serverless tick). `None`: drive regardless (conditional writes still
    /// keep two drivers from launching a trial twice).
    pub lease: Option<LeaseSpec>,
    /// Where the runner reads the time of every record it writes and every decision
    /// (the system clock; a virtual one in the scale simulation).
    pub clock: Clock,
    /// Days a study's records are kept once it is done, where the store can expire
    /// them (DynamoDB; `[aws] keep_days`, else the stack's retention). `None`: kept.
    pub keep_days: Option<u32>,
}

impl Default for RunnerConfig {
    /// The embedded default's settings, a second's idle wait, two minutes of
    /// backend failures, no lease, the system clock, records kept.
    fn default() -> RunnerConfig {
        RunnerConfig {
            drive: DriveSettings::default(),
            idle: Duration::from_secs(1),
            backend_deadline: Duration::from_secs(120),
            lease: None,
            clock: Arc::new(now_ms),
            keep_days: None,
        }
    }
}

/// Drives studies through a store and a machine provider.
pub struct Runner {
    store: Arc<dyn TrialStore>,
    provider: Arc<dyn MachineProvider>,
    config: RunnerConfig,
    counters: Arc<Counters>,
    events: Option<mpsc::UnboundedSender<Event>>,
}

/// Milliseconds since the epoch, as the runner sees them.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// A study streaming in the background (diviner's `Stream`).
pub struct StreamHandle {
    control: watch::Sender<Mode>,
    join: tokio::task::JoinHandle<Result<Finished, RunError>>,
}

impl StreamHandle {
    /// Launch nothing more; let running trials finish.
    pub fn stop(&self) {
        let _ = self.control.send(Mode::Drain);
    }
    /// Cancel running trials too.
    pub fn cancel(&self) {
        let _ = self.control.send(Mode::Cancel);
    }
    /// Waits for the stream to end.
    pub async fn wait(self) -> Result<Finished, RunError> {
        self.join.await.map_err(RunError::Task)?
    }
}

impl Runner {
    /// A runner with the default [`RunnerConfig`].
    pub fn new(store: Arc<dyn TrialStore>, provider: Arc<dyn MachineProvider>) -> Runner {
        Runner::with_config(store, provider, RunnerConfig::default())
    }

    pub fn with_config(
        store: Arc<dyn TrialStore>,
        provider: Arc<dyn MachineProvider>,
        config: RunnerConfig,
    ) -> Runner {
        Runner {
            store,
            provider,
            config,
            counters: Arc::new(Counters::default()),
            events: None,
        }
    }

    /// How this runner drives.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Sends [`Event`]s to `tx` as they happen.
    pub fn with_events(mut self, tx: mpsc::UnboundedSender<Event>) -> Runner {
        self.events = Some(tx);
        self
    }

    pub fn store(&self) -> &Arc<dyn TrialStore> {
        &self.store
    }

    pub fn counters(&self) -> CounterValues {
        self.counters.snapshot()
    }

    /// The live counters, for a reader in another task (`augur run --serve`).
    pub fn counter_handle(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    /// Records the study, or checks that a recorded one is compatible, and prepares it
    /// to be (re)run: cancelled trials, trials that failed only because a dataset
    /// failed, and failed datasets go back to pending; with `retry_failed`, failed
    /// trials too.
    pub async fn register(
        &self,
        study: &Study,
        opts: &RegisterOptions,
    ) -> Result<StudyRecord, RunError> {
        let now = (self.config.clock)();
        let fresh = StudyRecord {
            name: study.name.clone(),
            spec: study.clone(),
            state: StudyState::Active,
            created_ms: now,
            updated_ms: now,
            drive: None,
            bounds: Default::default(),
            reason: None,
        };
        let mut rec = self.store.create_study(&fresh).await?;
        if let Some(why) = study.conflict_with(&rec.spec) {
            return Err(RunError::BadInput(why));
        }
        // A finished study run again is kept again (its records were to expire).
        if matches!(rec.state, StudyState::Done | StudyState::Spent) {
            self.store.expire_study(&study.name, None).await?;
        }
        let drive = opts.drive.clone().or_else(|| rec.drive.clone());
        // A person runs it again: the bounds on its launches start afresh.
        let afresh = !rec.bounds.is_clear() || rec.reason.is_some();
        if rec.spec != fresh.spec || rec.state != fresh.state || rec.drive != drive || afresh {
            rec.spec = study.clone();
            rec.drive = drive;
            rec.state = StudyState::Active;
            rec.updated_ms = now;
            rec.bounds = LaunchBounds::fresh(now);
            rec.reason = None;
            self.store.put_study(&rec).await?;
        }
        for t in self.store.list_trials(&study.name).await? {
            let reset = match t.state {
                TrialState::Cancelled => Some(false),
                TrialState::Failed
                    if t.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with(ERROR_DATASET)) =>
                {
                    Some(false)
                }
                TrialState::Failed | TrialState::Lost
                    if settled(study, &t) && (t.is_dataset() || opts.retry_failed) =>
                {
                    Some(true)
                }
                _ => None,
            };
            if let Some(reset_runs) = reset {
                let up = TrialUpdate {
                    reset_runs,
                    ..TrialUpdate::next_attempt(t.attempt + 1, None)
                };
                self.store
                    .update_trial(&study.name, t.id, &Expect::state(t.state, t.attempt), &up)
                    .await?;
            }
        }
        Ok(rec)
    }

    /// Streams a study until its budget is spent or its oracle runs out.
    pub fn stream(self: &Arc<Self>, study: Study) -> StreamHandle {
        let (control, rx) = watch::channel(Mode::Run);
        let me = self.clone();
        let join = tokio::spawn(async move {
            me.register(&study, &RegisterOptions::default()).await?;
            let budget = study.trials;
            me.drive(&study, Scope::Budget(budget), rx).await
        });
        StreamHandle { control, join }
    }

    /// Runs one trial with the given values and replicate, and returns it when final.
    pub async fn run(
        &self,
        study: &Study,
        params: Params,
        replicate: u32,
    ) -> Result<Trial, RunError> {
        self.register(study, &RegisterOptions::default()).await?;
        let trials = self.store.list_trials(&study.name).await?;
        let point = trials
            .iter()
            .filter(|t| !t.is_dataset())
            .map(|t| t.point + 1)
            .max()
            .unwrap_or(0);
        let (t, _) = self.create(study, point, replicate, params, None).await?;
        let (_tx, rx) = watch::channel(Mode::Run);
        self.drive(study, Scope::Trials([t.id].into()), rx).await?;
        self.store
            .get_trial(&study.name, t.id)
            .await?
            .ok_or_else(|| RunError::Internal("trial vanished".into()))
    }

    /// Runs `n` more points from the oracle (each with the study's replicates) and
    /// returns their trials when all are final.
    pub async fn round(&self, study: &Study, n: u64) -> Result<Vec<Trial>, RunError> {
        self.register(study, &RegisterOptions::default()).await?;
        let oracle = oracle_for(study);
        let cache = self.load(study).await?;
        let history = cache.history();
        let first = history.iter().map(|t| t.point + 1).max().unwrap_or(0);
        let mut ids = BTreeSet::new();
        for point in first..first + n {
            let Some(params) = oracle.propose(point, &history) else {
                break;
            };
            for r in 0..study.replicates {
                let (t, _) = self.create(study, point, r, params.clone(), None).await?;
                ids.insert(t.id);
            }
        }
        let (_tx, rx) = watch::channel(Mode::Run);
        self.drive(study, Scope::Trials(ids.clone()), rx).await?;
        let all = self.store.list_trials(&study.name).await?;
        Ok(all.into_iter().filter(|t| ids.contains(&t.id)).collect())
    }

    async fn load(&self, study: &Study) -> Result<Cache, RunError> {
        let keep = augur_model::SeriesKeep::for_driver(study);
        let (trials, mark) = self.store.changed_trials(&study.name, 0, &keep).await?;
        let mut cache = Cache::default();
        cache.mark = mark;
        for t in trials {
            cache.upsert(t);
        }
        Ok(cache)
    }

    /// Creates a trial (and the datasets it needs); with `launched`, one that needs
    /// none is created starting, launched at that time (its launch is asked next).
    /// The trial, and whether this call created it (else its slot had one).
    async fn create(
        &self,
        study: &Study,
        point: u64,
        replicate: u32,
        params: Params,
        launched: Option<Millis>,
    ) -> Result<(Trial, bool), RunError> {
        let now = (self.config.clock)();
        let needs = study.datasets_for(&params);
        for d in &needs {
            let spec = study.dataset_spec(d, &params);
            let sub: Params = params
                .iter()
                .filter(|(k, _)| spec.is_some_and(|s| s.placeholders().contains(k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut ds = Trial::new(&study.name, 0, 0, 0, sub, now);
            ds.dataset = Some(d.clone());
            let (ds, created) = self.store.create_trial(&ds).await?;
            if created {
                self.emit(Event::Trial {
                    trial: Box::new(ds),
                    from: None,
                });
            }
        }
        let mut t = Trial::new(&study.name, 0, point, replicate, params, now);
        t.needs = needs;
        if let (Some(at), true) = (launched, t.needs.is_empty()) {
            (t.state, t.launched_ms) = (TrialState::Starting, Some(at));
        }
        let (t, created) = self.store.create_trial(&t).await?;
        if created {
            self.emit(Event::Trial {
                trial: Box::new(t.clone()),
                from: None,
            });
        }
        Ok((t, created))
    }

    /// A driver of `scope`, for a loop of one's own: [`Driver::pass`] as often as
    /// wanted, [`Driver::release`] at the end. [`drive`](Self::drive) is such a loop.
    pub fn driver<'a>(&'a self, study: &'a Study, scope: Scope) -> Driver<'a> {
        Driver::new(self, study, scope)
    }

    /// The reconcile loop for `scope`, until it is done or interrupted.
    pub async fn drive(
        &self,
        study: &Study,
        scope: Scope,
        mut control: watch::Receiver<Mode>,
    ) -> Result<Finished, RunError> {
        let mut driver = self.driver(study, scope);
        let end = driver.drive(&mut control).await;
        driver.release().await;
        match end? {
            TickEnd::Finished(f) => Ok(f),
            other => Err(RunError::Internal(format!(
                "a drive without a deadline ended {other:?}"
            ))),
        }
    }

    /// One serverless tick of a study: takes the lease (until `deadline`), acts until
    /// nothing is left to do now or the deadline is near, and gives the lease back.
    /// Nothing is kept between ticks: each reads the study afresh.
    pub async fn tick(&self, study: &Study, deadline: Instant) -> Result<TickEnd, RunError> {
        let budget = Scope::Budget(study.trials);
        self.tick_with(study, budget, Mode::Run, deadline, None)
            .await
    }

    /// A tick that winds `trials` down for a study nobody drives (a foreground
    /// `augur run` that died, its lease lapsed): it launches nothing, ends the
    /// machines of lost or final attempts (recording the loss first), and lets
    /// running trials finish. It never writes the study's state: `augur run` resumes
    /// the study as it was.
    pub async fn wind_down(
        &self,
        study: &Study,
        trials: BTreeSet<u64>,
        deadline: Instant,
    ) -> Result<TickEnd, RunError> {
        self.tick_with(study, Scope::Trials(trials), Mode::Drain, deadline, None)
            .await
    }

    /// A tick that starts from the cache `caches` kept for this study (`created_ms`
    /// tells a study from a deleted one of the same name) and leaves its cache there
    /// for the next tick in this process: its first read is incremental too.
    pub async fn tick_cached(
        &self,
        study: &Study,
        created_ms: Millis,
        deadline: Instant,
        caches: &TickCaches,
    ) -> Result<TickEnd, RunError> {
        let budget = Scope::Budget(study.trials);
        self.tick_with(
            study,
            budget,
            Mode::Run,
            deadline,
            Some((created_ms, caches)),
        )
        .await
    }

    /// The tick: the same driver as [`drive`](Self::drive), with a deadline and a
    /// lease taken once until then (a tick that dies leaves a lease that expires at
    /// its deadline).
    async fn tick_with(
        &self,
        study: &Study,
        scope: Scope,
        mode: Mode,
        deadline: Instant,
        caches: Option<(Millis, &TickCaches)>,
    ) -> Result<TickEnd, RunError> {
        let mut driver = self.driver(study, scope);
        if let Some(held) = driver.lease_until(deadline).await? {
            return Ok(TickEnd::Held(held));
        }
        let key = caches.map(|(created, w)| ((study.name.clone(), created), w));
        if let Some((k, w)) = &key {
            driver.cache = w.take(k);
        }
        let (_tx, mut control) = watch::channel(mode);
        let end = driver.drive(&mut control).await;
        // Kept only after a tick that ended normally with work left.
        if let (Some((k, w)), Ok(TickEnd::Waiting | TickEnd::Deadline)) = (key, &end) {
            w.put(k, std::mem::take(&mut driver.cache));
        }
        driver.release().await;
        end
    }
}

/// What one pass of a driver left to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// The scope reached its end (or was interrupted).
    Finished(Finished),
    /// The pass acted: pass again at once.
    Again,
    /// Nothing to do until something changes, or this long.
    Wait(Duration),
}
