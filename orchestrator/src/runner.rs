//! The executor: observes, decides ([`crate::reconcile::decide`]), acts, repeats.
//!
//! The API mirrors diviner's runner: [`Runner::run`] one trial, [`Runner::round`] a
//! round of points, [`Runner::stream`] a whole study with [`StreamHandle::stop`] and
//! [`StreamHandle::wait`], and [`Runner::counters`].

use crate::provider::{MachineProvider, ProviderError};
use crate::reconcile::{
    decide, pruned_in_grace, settled, Action, Machine, Mode, Scope, Timing, View,
};
use augur_model::trial::ERROR_DATASET;
use augur_model::{
    oracle_for, DriveSettings, Expect, Millis, Oracle, Params, Study, StudyRecord, StudyState,
    Trial, TrialState, TrialUpdate,
};
use augur_store::{now_ms, Lease, StoreError, TrialStore, Written};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request or the study conflicts with what is recorded (exit code 2).
    #[error("{0}")]
    BadInput(String),
    /// The store or the machine provider stayed unavailable past the deadline (exit 3).
    #[error("{0}")]
    Unavailable(String),
    /// A record could not be understood, or a transition was illegal: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                RunError::Unavailable(format!("database unavailable: {m}"))
            }
            StoreError::NoStudy(s) => RunError::BadInput(format!("no study named `{s}`")),
            other => RunError::Internal(other.to_string()),
        }
    }
}

impl From<ProviderError> for RunError {
    fn from(e: ProviderError) -> Self {
        RunError::Unavailable(e.to_string())
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
        attempt: u32,
        delay_ms: Millis,
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
    pub ticks: AtomicU64,
    /// Time spent in reconcile passes, in microseconds.
    pub tick_micros: AtomicU64,
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
    pub ticks: u64,
    pub tick_micros: u64,
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
            ticks: g(&self.ticks),
            tick_micros: g(&self.tick_micros),
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

/// Drives studies through a store and a machine provider.
pub struct Runner {
    store: Arc<dyn TrialStore>,
    provider: Arc<dyn MachineProvider>,
    pub timing: Timing,
    /// Longest wait between ticks when nothing wakes the loop.
    pub tick: Duration,
    /// How long store and provider failures are retried before giving up (exit 3).
    pub backend_deadline: Duration,
    counters: Arc<Counters>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Drive only while holding the study's lease (needed wherever another driver may
    /// run: the serverless tick). `None`: drive regardless (conditional writes still
    /// keep two drivers from launching a trial twice).
    pub lease: Option<LeaseSpec>,
    /// Where the runner reads the time of every record it writes and every decision
    /// (the system clock; a virtual one in the scale simulation).
    pub clock: Clock,
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
        self.join
            .await
            .map_err(|e| RunError::Internal(format!("stream task: {e}")))?
    }
}

/// Drivers' caches kept between serverless ticks in one process (a warm
/// augur-lambda), by study name and creation time.
#[derive(Default)]
pub struct WarmCaches(std::sync::Mutex<HashMap<(String, Millis), Cache>>);

impl WarmCaches {
    fn take(&self, key: &(String, Millis)) -> Cache {
        self.0
            .lock()
            .ok()
            .and_then(|mut m| m.remove(key))
            .unwrap_or_default()
    }
    fn put(&self, key: (String, Millis), cache: Cache) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, cache);
        }
    }
    /// How many studies have a cache kept.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The trials of one study as last read, kept in id order.
#[derive(Default)]
struct Cache {
    trials: Vec<Trial>,
    index: HashMap<u64, usize>,
    mark: u64,
}

impl Cache {
    /// The trials an oracle learns from (datasets are not results).
    fn history(&self) -> Vec<&Trial> {
        self.trials.iter().filter(|t| !t.is_dataset()).collect()
    }

    fn upsert(&mut self, t: Trial) -> Option<TrialState> {
        match self.index.get(&t.id) {
            Some(&i) => {
                let from = self.trials[i].state;
                self.trials[i] = t;
                Some(from)
            }
            None => {
                let pos = self.trials.partition_point(|x| x.id < t.id);
                self.trials.insert(pos, t);
                if pos + 1 != self.trials.len() {
                    self.index = self
                        .trials
                        .iter()
                        .enumerate()
                        .map(|(i, t)| (t.id, i))
                        .collect();
                } else {
                    self.index.insert(self.trials[pos].id, pos);
                }
                None
            }
        }
    }
}

impl Runner {
    pub fn new(store: Arc<dyn TrialStore>, provider: Arc<dyn MachineProvider>) -> Runner {
        Runner {
            store,
            provider,
            timing: Timing::default(),
            tick: Duration::from_secs(1),
            backend_deadline: Duration::from_secs(120),
            counters: Arc::new(Counters::default()),
            events: None,
            lease: None,
            clock: Arc::new(now_ms),
        }
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
        let now = (self.clock)();
        let fresh = StudyRecord {
            name: study.name.clone(),
            spec: study.clone(),
            state: StudyState::Active,
            created_ms: now,
            updated_ms: now,
            drive: None,
        };
        let mut rec = self.store.create_study(&fresh).await?;
        if rec.spec.fingerprint() != study.fingerprint() {
            let what = if rec.spec.params != study.params {
                "parameters"
            } else {
                "objective"
            };
            return Err(RunError::BadInput(format!(
                "study `{}` is already recorded with different {what}; its trials would not be comparable. \
                 To start afresh, give the study a new `name`, or delete the old one with `augur delete {}`",
                study.name, study.name
            )));
        }
        let drive = opts.drive.clone().or_else(|| rec.drive.clone());
        if rec.spec != fresh.spec || rec.state != fresh.state || rec.drive != drive {
            rec.spec = study.clone();
            rec.drive = drive;
            rec.state = StudyState::Active;
            rec.updated_ms = now;
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
                    if settled(study, &self.timing, &t)
                        && (t.is_dataset() || opts.retry_failed) =>
                {
                    Some(true)
                }
                _ => None,
            };
            if let Some(reset_runs) = reset {
                let up = TrialUpdate {
                    state: Some(TrialState::Pending),
                    attempt: Some(t.attempt + 1),
                    reset_runs,
                    not_before_ms: Some(None),
                    ..Default::default()
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
        let t = self.create(study, point, replicate, params).await?;
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
                ids.insert(self.create(study, point, r, params.clone()).await?.id);
            }
        }
        let (_tx, rx) = watch::channel(Mode::Run);
        self.drive(study, Scope::Trials(ids.clone()), rx).await?;
        let all = self.store.list_trials(&study.name).await?;
        Ok(all.into_iter().filter(|t| ids.contains(&t.id)).collect())
    }

    async fn load(&self, study: &Study) -> Result<Cache, RunError> {
        let (trials, mark) = self.store.changed_trials(&study.name, 0).await?;
        let mut cache = Cache {
            trials: Vec::new(),
            index: HashMap::new(),
            mark,
        };
        for t in trials {
            cache.upsert(t);
        }
        Ok(cache)
    }

    async fn create(
        &self,
        study: &Study,
        point: u64,
        replicate: u32,
        params: Params,
    ) -> Result<Trial, RunError> {
        let now = (self.clock)();
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
        let (t, created) = self.store.create_trial(&t).await?;
        if created {
            self.emit(Event::Trial {
                trial: Box::new(t.clone()),
                from: None,
            });
        }
        Ok(t)
    }

    /// Creates the next trial of the budget: the next replicate of the last point, or
    /// the oracle's next point. `None` when the oracle has no more points.
    async fn propose_one(
        &self,
        study: &Study,
        oracle: &dyn Oracle,
        cache: &mut Cache,
    ) -> Result<Option<Trial>, RunError> {
        let last = cache
            .trials
            .iter()
            .filter(|t| !t.is_dataset())
            .map(|t| t.point)
            .max();
        let (point, replicate, params) = match last {
            Some(p) => {
                let reps: BTreeSet<u32> = cache
                    .trials
                    .iter()
                    .filter(|t| !t.is_dataset() && t.point == p)
                    .map(|t| t.replicate)
                    .collect();
                match (0..study.replicates).find(|r| !reps.contains(r)) {
                    Some(r) => {
                        let params = cache
                            .trials
                            .iter()
                            .find(|t| !t.is_dataset() && t.point == p)
                            .map(|t| t.params.clone());
                        (p, r, params)
                    }
                    None => (p + 1, 0, None),
                }
            }
            None => (0, 0, None),
        };
        let params = match params {
            Some(p) => p,
            None => {
                let history = cache.history();
                match oracle.propose(point, &history) {
                    Some(p) => p,
                    None => return Ok(None),
                }
            }
        };
        let t = self.create(study, point, replicate, params).await?;
        cache.upsert(t.clone());
        Ok(Some(t))
    }

    /// A driver of `scope`, for a loop of one's own: [`Driver::pass`] as often as
    /// wanted, [`Driver::release`] at the end. [`drive`](Self::drive) is such a loop.
    pub fn driver<'a>(&'a self, study: &'a Study, scope: Scope) -> Driver<'a> {
        Driver {
            runner: self,
            study,
            scope,
            oracle: oracle_for(study),
            cache: Cache::default(),
            exhausted: false,
            lease: LeaseState::default(),
        }
    }

    /// The reconcile loop for `scope`, until it is done or interrupted.
    pub async fn drive(
        &self,
        study: &Study,
        scope: Scope,
        mut control: watch::Receiver<Mode>,
    ) -> Result<Finished, RunError> {
        let mut driver = self.driver(study, scope);
        let mut failing: Option<(Instant, u32)> = None;
        let mut control_open = true;
        let result = loop {
            // Marks the value seen: `changed()` below then waits for the next change.
            let mode = *control.borrow_and_update();
            let step = driver.pass(mode).await;
            let wait = match step {
                Ok(Step::Finished(f)) => break Ok(f),
                Ok(Step::Again) => {
                    failing = None;
                    continue;
                }
                Ok(Step::Wait(d)) => {
                    failing = None;
                    d
                }
                Err(RunError::Unavailable(e)) => {
                    Counters::bump(&self.counters.backend_errors);
                    self.emit(Event::Backend { error: e.clone() });
                    let (since, n) = failing.get_or_insert((Instant::now(), 0));
                    if since.elapsed() > self.backend_deadline {
                        break Err(RunError::Unavailable(format!(
                            "{e} (gave up after {} s; `augur run` again resumes the study)",
                            self.backend_deadline.as_secs()
                        )));
                    }
                    *n += 1;
                    let exp = Duration::from_millis(100u64 << (*n).min(6));
                    exp.min(Duration::from_secs(5))
                }
                Err(e) => break Err(e),
            };
            tokio::select! {
                _ = self.provider.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                r = control.changed(), if control_open => control_open = r.is_ok(),
            }
        };
        driver.release().await;
        result
    }

    /// Takes or renews the study's lease when due; whether this driver may act.
    async fn keep_lease(&self, study: &str, state: &mut LeaseState) -> Result<bool, RunError> {
        let Some(spec) = &self.lease else {
            return Ok(true);
        };
        let now = (self.clock)();
        let ttl = spec.ttl.as_millis() as Millis;
        if state.until - now > ttl * 2 / 3 {
            return Ok(true);
        }
        let got = self
            .store
            .take_lease(
                study,
                &spec.holder,
                now - self.timing.clock_skew_ms,
                now + ttl,
            )
            .await?;
        if got.held_by(&spec.holder) {
            if state.following.take().is_some() {
                self.emit(Event::Driving);
            }
            state.until = got.until;
            Ok(true)
        } else {
            state.until = 0;
            if state.following.as_deref() != Some(got.holder.as_str()) {
                tracing::info!(study, holder = %got.holder, "another driver holds the study's lease; following");
                state.following = Some(got.holder.clone());
                self.emit(Event::Held {
                    holder: got.holder,
                    until: got.until,
                });
            }
            Ok(false)
        }
    }

    /// One serverless tick of a study: takes the lease (until `deadline`), acts until
    /// nothing is left to do now or the deadline is near, and gives the lease back.
    /// Nothing is kept between ticks: each reads the study afresh.
    pub async fn tick(&self, study: &Study, deadline: Instant) -> Result<TickEnd, RunError> {
        self.tick_with(study, deadline, None).await
    }

    /// A tick that starts from the cache `warm` kept for this study (`created_ms`
    /// tells a study from a deleted one of the same name) and leaves its cache there
    /// for the next tick in this process: its first read is incremental too.
    pub async fn tick_warm(
        &self,
        study: &Study,
        created_ms: Millis,
        deadline: Instant,
        warm: &WarmCaches,
    ) -> Result<TickEnd, RunError> {
        self.tick_with(study, deadline, Some((created_ms, warm)))
            .await
    }

    async fn tick_with(
        &self,
        study: &Study,
        deadline: Instant,
        warm: Option<(Millis, &WarmCaches)>,
    ) -> Result<TickEnd, RunError> {
        let holder = self
            .lease
            .as_ref()
            .map(|l| l.holder.clone())
            .ok_or_else(|| RunError::Internal("a tick needs a lease holder".into()))?;
        let now = (self.clock)();
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self
            .store
            .take_lease(
                &study.name,
                &holder,
                now - self.timing.clock_skew_ms,
                now + left.as_millis() as Millis,
            )
            .await?;
        if !got.held_by(&holder) {
            return Ok(TickEnd::Held(got));
        }
        let oracle = oracle_for(study);
        let key = warm.map(|(created, _)| (study.name.clone(), created));
        let mut cache = match (&key, warm) {
            (Some(k), Some((_, w))) => w.take(k),
            _ => Cache::default(),
        };
        let mut exhausted = false;
        let scope = Scope::Budget(study.trials);
        let result = loop {
            if Instant::now() >= deadline {
                break Ok(TickEnd::Deadline);
            }
            let step = self
                .step(
                    study,
                    &scope,
                    Mode::Run,
                    oracle.as_ref(),
                    &mut cache,
                    &mut exhausted,
                    true,
                    Some(deadline),
                )
                .await;
            match step {
                Ok(Step::Again) => continue,
                Ok(Step::Wait(_)) => break Ok(TickEnd::Waiting),
                Ok(Step::Finished(f)) => break Ok(TickEnd::Finished(f)),
                Err(e) => break Err(e),
            }
        };
        // Kept only after a tick that ended normally with work left.
        if let (Some(k), Some((_, w)), Ok(TickEnd::Waiting | TickEnd::Deadline)) =
            (key, warm, &result)
        {
            w.put(k, cache);
        }
        let _ = self.store.release_lease(&study.name, &holder).await;
        result
    }

    /// One observe-decide-act pass. With `act` false (another driver holds the lease)
    /// it only observes. With a `deadline` it stops acting there (the rest is decided
    /// again next time: every action is level-triggered).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        study: &Study,
        scope: &Scope,
        mode: Mode,
        oracle: &dyn Oracle,
        cache: &mut Cache,
        exhausted: &mut bool,
        act: bool,
        deadline: Option<Instant>,
    ) -> Result<Step, RunError> {
        Counters::bump(&self.counters.ticks);
        let started = Instant::now();
        let out = self
            .pass(study, scope, mode, oracle, cache, exhausted, act, deadline)
            .await;
        self.counters
            .tick_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn pass(
        &self,
        study: &Study,
        scope: &Scope,
        mut mode: Mode,
        oracle: &dyn Oracle,
        cache: &mut Cache,
        exhausted: &mut bool,
        act: bool,
        deadline: Option<Instant>,
    ) -> Result<Step, RunError> {
        let state = self
            .store
            .study_state(&study.name)
            .await?
            .ok_or_else(|| RunError::BadInput(format!("study `{}` was deleted", study.name)))?;
        // `augur stop` (here or in another process) cancels whatever this loop does.
        if matches!(state, StudyState::Stopping | StudyState::Stopped) {
            mode = Mode::Cancel;
        }
        // Machines first, then trials: an agent writes its final state before it
        // exits, so a trial still running whose machine was already gone is lost.
        let machines = self.provider.list(&study.name).await?;
        let (changed, mark) = self.store.changed_trials(&study.name, cache.mark).await?;
        cache.mark = mark;
        for t in changed {
            let copy = self.events.as_ref().map(|_| t.clone());
            let (state, from) = (t.state, cache.upsert(t));
            if from != Some(state) {
                match state {
                    TrialState::Succeeded => Counters::bump(&self.counters.succeeded),
                    TrialState::Failed => Counters::bump(&self.counters.failed),
                    TrialState::Lost => Counters::bump(&self.counters.lost),
                    TrialState::Cancelled => Counters::bump(&self.counters.cancelled),
                    TrialState::Pruned => Counters::bump(&self.counters.pruned),
                    _ => {}
                }
                if let Some(t) = copy {
                    self.emit(Event::Trial {
                        trial: Box::new(t),
                        from,
                    });
                }
            }
        }
        if !act {
            // Following another driver: end with it.
            return Ok(match state {
                StudyState::Done => Step::Finished(Finished::Done),
                StudyState::Stopped => Step::Finished(Finished::Interrupted),
                _ if mode != Mode::Run => Step::Finished(Finished::Interrupted),
                _ => Step::Wait(self.tick),
            });
        }
        let now = (self.clock)();
        let actions = decide(&View {
            study,
            trials: &cache.trials,
            machines: &machines,
            scope,
            mode,
            exhausted: *exhausted,
            sees_all: self.provider.sees_all(),
            timing: &self.timing,
            now,
        });
        let mut again = false;
        for a in actions {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                again = true;
                break;
            }
            match a {
                Action::Finish => {
                    // A cached listing may miss a machine (one that never booted, say):
                    // look afresh, and end every machine whose trial is settled.
                    if !self.provider.sees_all() {
                        self.provider.invalidate(&study.name);
                        let mut stopping = false;
                        for m in self.provider.list(&study.name).await? {
                            let trial = cache.index.get(&m.trial).map(|&i| &cache.trials[i]);
                            // A pruned trial's agent gets its grace to end the script
                            // and send its last lines: decide again with this listing.
                            if trial.is_some_and(|t| {
                                t.attempt == m.attempt
                                    && pruned_in_grace(study, &self.timing, t, now)
                            }) {
                                stopping = true;
                                continue;
                            }
                            let done = trial.is_none_or(|t| {
                                settled(study, &self.timing, t) || t.attempt != m.attempt
                            });
                            if done {
                                tracing::info!(study = %study.name, trial = m.trial, machine = %m.id, "ending a machine left at the end");
                                self.provider.terminate(&m).await?;
                                Counters::bump(&self.counters.terminated);
                            }
                        }
                        if stopping {
                            return Ok(Step::Wait(self.tick));
                        }
                    }
                    if let Scope::Budget(_) = scope {
                        let to = if mode == Mode::Run {
                            StudyState::Done
                        } else {
                            StudyState::Stopped
                        };
                        self.store
                            .set_study_state(
                                &study.name,
                                &[StudyState::Active, StudyState::Stopping],
                                to,
                                now,
                            )
                            .await?;
                    }
                    return Ok(Step::Finished(if mode == Mode::Run {
                        Finished::Done
                    } else {
                        Finished::Interrupted
                    }));
                }
                Action::Propose { count } => {
                    for _ in 0..count {
                        if self.propose_one(study, oracle, cache).await?.is_none() {
                            *exhausted = true;
                            break;
                        }
                    }
                    again = true;
                }
                Action::Launch { trial, attempt } => {
                    let up = TrialUpdate {
                        state: Some(TrialState::Starting),
                        launched_ms: Some(now),
                        machine: Some(None),
                        ..Default::default()
                    };
                    if let Written::Done(t) = self
                        .store
                        .update_trial(
                            &study.name,
                            trial,
                            &Expect::state(TrialState::Pending, attempt),
                            &up,
                        )
                        .await?
                    {
                        Counters::bump(&self.counters.launched);
                        if let Err(e) = self.provider.launch(study, &t).await {
                            let reason = e.to_string();
                            self.mark(
                                study,
                                trial,
                                attempt,
                                TrialState::Starting,
                                TrialState::Lost,
                                Some(reason.clone()),
                            )
                            .await?;
                            self.emit(Event::Lost { trial, reason });
                            if let ProviderError::Unavailable(_) = e {
                                return Err(e.into());
                            }
                            again = true;
                        }
                    }
                }
                Action::MarkLost {
                    trial,
                    attempt,
                    from,
                    reason,
                    preempted,
                } => {
                    let up = TrialUpdate {
                        preempted,
                        ..self.ending(TrialState::Lost, Some(reason.clone()))
                    };
                    let done = self.write(study, trial, attempt, from, &up).await?;
                    if done && preempted {
                        Counters::bump(&self.counters.preempted);
                    }
                    self.emit(Event::Lost { trial, reason });
                    again = true;
                }
                Action::Retry {
                    trial,
                    attempt,
                    from,
                    not_before,
                } => {
                    let up = TrialUpdate {
                        state: Some(TrialState::Pending),
                        attempt: Some(attempt + 1),
                        not_before_ms: Some(Some(not_before)),
                        ..Default::default()
                    };
                    if self.write(study, trial, attempt, from, &up).await? {
                        Counters::bump(&self.counters.retried);
                        self.emit(Event::Retry {
                            trial,
                            attempt: attempt + 1,
                            delay_ms: not_before - now,
                        });
                    }
                    again = true;
                }
                Action::Cancel {
                    trial,
                    attempt,
                    from,
                } => {
                    self.mark(
                        study,
                        trial,
                        attempt,
                        from,
                        TrialState::Cancelled,
                        Some("cancelled".into()),
                    )
                    .await?;
                    again = true;
                }
                Action::Prune {
                    trial,
                    attempt,
                    reason,
                } => {
                    self.mark(
                        study,
                        trial,
                        attempt,
                        TrialState::Running,
                        TrialState::Pruned,
                        Some(reason),
                    )
                    .await?;
                    again = true;
                }
                Action::FailForDataset {
                    trial,
                    attempt,
                    dataset,
                } => {
                    let why = format!(
                        "{ERROR_DATASET}{dataset} (see `augur trials {}`)",
                        study.name
                    );
                    self.mark(
                        study,
                        trial,
                        attempt,
                        TrialState::Pending,
                        TrialState::Failed,
                        Some(why),
                    )
                    .await?;
                    again = true;
                }
                Action::Terminate {
                    machine,
                    trial,
                    reason,
                } => {
                    tracing::info!(study = %study.name, trial, machine = %machine, %reason, "terminating machine");
                    let attempt = machines
                        .iter()
                        .find(|m| m.id == machine)
                        .map_or(0, |m| m.attempt);
                    self.provider
                        .terminate(&Machine {
                            id: machine,
                            trial,
                            attempt,
                            gone: None,
                        })
                        .await?;
                    Counters::bump(&self.counters.terminated);
                }
            }
        }
        if mode == Mode::Drain {
            let busy = cache.trials.iter().any(|t| t.state.is_active());
            if !busy && !again {
                return Ok(Step::Finished(Finished::Interrupted));
            }
        }
        if again {
            return Ok(Step::Again);
        }
        // Sleep until the next retry is due, at most one tick.
        let next = cache
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Pending)
            .filter_map(|t| t.not_before_ms)
            .filter(|nb| *nb > now)
            .min();
        // A study that prunes looks at the curves as often as agents record them.
        let tick = if study.prune.is_some() {
            self.tick.min(Duration::from_millis(
                self.timing.heartbeat_ms.max(100) as u64
            ))
        } else {
            self.tick
        };
        let wait = next.map_or(tick, |nb| {
            Duration::from_millis((nb - now) as u64 + 1).min(tick)
        });
        Ok(Step::Wait(wait))
    }

    async fn mark(
        &self,
        study: &Study,
        trial: u64,
        attempt: u32,
        from: TrialState,
        to: TrialState,
        error: Option<String>,
    ) -> Result<bool, RunError> {
        self.write(study, trial, attempt, from, &self.ending(to, error))
            .await
    }

    /// The write that ends an attempt (in `to`, with `error`) now.
    fn ending(&self, to: TrialState, error: Option<String>) -> TrialUpdate {
        TrialUpdate {
            state: Some(to),
            error: Some(error),
            finished_ms: Some(Some((self.clock)())),
            ..Default::default()
        }
    }

    /// `up` if the trial is still `from` at `attempt`; whether it was written.
    async fn write(
        &self,
        study: &Study,
        trial: u64,
        attempt: u32,
        from: TrialState,
        up: &TrialUpdate,
    ) -> Result<bool, RunError> {
        Ok(self
            .store
            .update_trial(&study.name, trial, &Expect::state(from, attempt), up)
            .await?
            .ok()
            .is_some())
    }
}

/// What one pass of a driver left to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The scope reached its end (or was interrupted).
    Finished(Finished),
    /// The pass acted: pass again at once.
    Again,
    /// Nothing to do until something changes, or this long.
    Wait(Duration),
}

/// One driver's memory of a study between passes: its cache of the trials (read
/// incrementally from the store), its oracle, and its lease.
pub struct Driver<'a> {
    runner: &'a Runner,
    study: &'a Study,
    scope: Scope,
    oracle: Box<dyn Oracle>,
    cache: Cache,
    exhausted: bool,
    lease: LeaseState,
}

impl Driver<'_> {
    /// One reconcile pass: renews the lease when due, reads what changed, decides,
    /// acts. Without the lease it only follows the driver that has it.
    pub async fn pass(&mut self, mode: Mode) -> Result<Step, RunError> {
        let act = self
            .runner
            .keep_lease(&self.study.name, &mut self.lease)
            .await?;
        self.runner
            .step(
                self.study,
                &self.scope,
                mode,
                self.oracle.as_ref(),
                &mut self.cache,
                &mut self.exhausted,
                act,
                None,
            )
            .await
    }

    /// Gives the lease back, if held (best effort: an unreleased lease expires).
    pub async fn release(self) {
        if self.lease.until > 0 {
            if let Some(spec) = &self.runner.lease {
                let _ = self
                    .runner
                    .store
                    .release_lease(&self.study.name, &spec.holder)
                    .await;
            }
        }
    }
}

/// This driver's view of its lease.
#[derive(Default)]
struct LeaseState {
    /// Held until then (0: not held).
    until: Millis,
    /// The other holder being followed.
    following: Option<String>,
}
