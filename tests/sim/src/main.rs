//! `augur-sim`: augur's reconciler at scale, on a virtual clock.
//!
//! The real `decide()` and the real runner (`Runner::tick`, the serverless driver's
//! loop) against the real SQLite store, with a simulated cloud in place of EC2:
//! instances that take 20–90 s to boot, 1 % that never boot, 3 % reclaimed (spot)
//! while they run, scripts of 3–12 minutes of which 2 % fail, and 5 % of API calls
//! throttled once (the SDK's retry, counted as another call). Simulated agents
//! heartbeat every 20 s and write their results as the real agent does.
//!
//! For each size it prints the CPU time of a reconcile tick (process CPU, the store
//! included) and the calls made per trial, and checks the run: every trial final, no
//! attempt launched twice, nothing lost. A tick is every 5 virtual seconds: the passes
//! of one long-lived `Driver` (as in `augur run`) until it has nothing to do.
//!
//! `augur-sim [TRIALS...] [--parallel N] [--seed S] [--serverless]` (default: 1000 10000,
//! parallel 500; `--serverless` drives with `Runner::tick_warm`, a tick per 5 s that
//! starts from the cache the last tick left, as a warm augur-lambda does).

use async_trait::async_trait;
use augur::provider::{MachineProvider, ProviderError};
use augur::{Machine, Mode, Next, Runner, Scope, TickEnd};
use augur_model::{
    AttemptEnd, Beat, Expect, MetricPoint, Millis, Study, StudyRecord, StudyState, Trial,
    TrialState, TrialUpdate,
};
use augur_store::{Beaten, Launched, Lease, SqliteStore, TrialStore, Written};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TICK_MS: Millis = 5_000;
const HEARTBEAT_MS: Millis = 20_000;
const THROTTLED: f64 = 0.05;

/// Process CPU time in microseconds.
fn cpu_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Calls by name, with the throttled retries the SDK would make.
#[derive(Default)]
struct Calls {
    by: Mutex<BTreeMap<&'static str, u64>>,
    rng: Mutex<Option<ChaCha8Rng>>,
}

impl Calls {
    fn seeded(seed: u64) -> Calls {
        Calls {
            by: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Some(ChaCha8Rng::seed_from_u64(seed))),
        }
    }
    /// One call of `name`; a throttled first attempt is retried (one more call).
    fn count(&self, name: &'static str) {
        let throttled = self
            .rng
            .lock()
            .ok()
            .and_then(|mut r| r.as_mut().map(|r| r.gen_bool(THROTTLED)))
            .unwrap_or(false);
        if let Ok(mut by) = self.by.lock() {
            *by.entry(name).or_default() += 1 + throttled as u64;
            if throttled {
                *by.entry("throttled").or_default() += 1;
            }
        }
    }
    fn get(&self, name: &str) -> u64 {
        self.by
            .lock()
            .map(|b| b.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn total(&self) -> u64 {
        self.by
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|(k, _)| **k != "throttled")
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The real SQLite store, with every call counted (the orchestrator's and the
/// agents' through separate wrappers), and the items a DynamoDB `changed_trials`
/// would read.
struct Counted {
    inner: Arc<SqliteStore>,
    calls: Arc<Calls>,
    /// Trials returned by `changed_trials`.
    changed_read: AtomicU64,
    /// What reading the whole study at every pass would read.
    whole_study_read: AtomicU64,
    /// What DynamoDB's `changed_trials` reads: the trials written within the
    /// lookback (120 s) before its last read, from the changes index, and the whole
    /// study every 5 minutes.
    index_read: AtomicU64,
    /// Beat items read (`beats`): DynamoDB keeps heartbeats apart from the records,
    /// out of the index, and drivers read those of the running trials.
    beats_read: AtomicU64,
    trials: Arc<AtomicU64>,
    /// When each trial was last written (virtual ms), shared by both wrappers.
    written: Arc<Mutex<HashMap<u64, Millis>>>,
    now: Arc<AtomicI64>,
    /// (last read, last whole read) of this wrapper's `changed_trials`.
    reads: Mutex<(Millis, Millis)>,
}

impl Counted {
    fn wrote(&self, id: u64) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(id, self.now.load(Ordering::Relaxed));
        }
    }
}

#[async_trait]
impl TrialStore for Counted {
    async fn create_study(&self, rec: &StudyRecord) -> augur_store::Result<StudyRecord> {
        self.calls.count("create_study");
        self.inner.create_study(rec).await
    }
    async fn put_study(&self, rec: &StudyRecord) -> augur_store::Result<()> {
        self.calls.count("put_study");
        self.inner.put_study(rec).await
    }
    async fn get_study(&self, name: &str) -> augur_store::Result<Option<StudyRecord>> {
        self.calls.count("get_study");
        self.inner.get_study(name).await
    }
    async fn list_studies(&self) -> augur_store::Result<Vec<StudyRecord>> {
        self.calls.count("list_studies");
        self.inner.list_studies().await
    }
    async fn study_state(&self, name: &str) -> augur_store::Result<Option<StudyState>> {
        self.calls.count("study_state");
        self.inner.study_state(name).await
    }
    async fn set_study_state(
        &self,
        name: &str,
        from: &[StudyState],
        to: StudyState,
        now: Millis,
    ) -> augur_store::Result<bool> {
        self.calls.count("set_study_state");
        self.inner.set_study_state(name, from, to, now).await
    }
    async fn delete_study(&self, name: &str) -> augur_store::Result<bool> {
        self.calls.count("delete_study");
        self.inner.delete_study(name).await
    }
    async fn create_trial(&self, trial: &Trial) -> augur_store::Result<(Trial, bool)> {
        self.calls.count("create_trial");
        let out = self.inner.create_trial(trial).await?;
        if out.1 {
            self.trials.fetch_add(1, Ordering::Relaxed);
            self.wrote(out.0.id);
        }
        Ok(out)
    }
    async fn get_trial(&self, study: &str, id: u64) -> augur_store::Result<Option<Trial>> {
        self.calls.count("get_trial");
        self.inner.get_trial(study, id).await
    }
    async fn list_trials(&self, study: &str) -> augur_store::Result<Vec<Trial>> {
        self.calls.count("list_trials");
        self.inner.list_trials(study).await
    }
    async fn changed_trials(
        &self,
        study: &str,
        since: u64,
    ) -> augur_store::Result<(Vec<Trial>, u64)> {
        self.calls.count("changed_trials");
        let out = self.inner.changed_trials(study, since).await?;
        self.changed_read
            .fetch_add(out.0.len() as u64, Ordering::Relaxed);
        let all = self.trials.load(Ordering::Relaxed);
        self.whole_study_read.fetch_add(all, Ordering::Relaxed);
        let now = self.now.load(Ordering::Relaxed);
        if let Ok(mut reads) = self.reads.lock() {
            let (last, full) = *reads;
            let items = if since == 0 || now - full >= 300_000 {
                reads.1 = now;
                all
            } else {
                self.written
                    .lock()
                    .map(|w| w.values().filter(|t| **t >= last - 120_000).count() as u64)
                    .unwrap_or(0)
            };
            reads.0 = now;
            self.index_read.fetch_add(items, Ordering::Relaxed);
        }
        Ok(out)
    }
    async fn update_trial(
        &self,
        study: &str,
        id: u64,
        expect: &Expect,
        update: &TrialUpdate,
    ) -> augur_store::Result<Written> {
        self.calls.count("update_trial");
        let out = self.inner.update_trial(study, id, expect, update).await?;
        if matches!(out, Written::Done(_)) {
            self.wrote(id);
        }
        Ok(out)
    }
    /// DynamoDB writes a heartbeat to the trial's beat item, out of the changes
    /// index, and to the record (in the index) every 5 minutes.
    async fn heartbeat(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        up: &TrialUpdate,
    ) -> augur_store::Result<Beaten> {
        self.calls.count("heartbeat");
        let out = self.inner.heartbeat(study, id, attempt, up).await?;
        let now = self.now.load(Ordering::Relaxed);
        let last = self.written.lock().ok().and_then(|w| w.get(&id).copied());
        if out == Beaten::Recorded && last.is_some_and(|l| now - l >= 300_000) {
            self.wrote(id);
        }
        Ok(out)
    }
    async fn beats(&self, study: &str, ids: &[u64]) -> augur_store::Result<Vec<Beat>> {
        for _ in ids.chunks(100) {
            self.calls.count("beats");
        }
        self.beats_read
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        self.inner.beats(study, ids).await
    }
    async fn take_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> augur_store::Result<Lease> {
        self.calls.count("take_lease");
        self.inner.take_lease(study, holder, now, until).await
    }
    async fn release_lease(&self, study: &str, holder: &str) -> augur_store::Result<()> {
        self.calls.count("release_lease");
        self.inner.release_lease(study, holder).await
    }
    async fn leases(&self) -> augur_store::Result<Vec<(String, Lease)>> {
        self.calls.count("leases");
        self.inner.leases().await
    }
    async fn expire_lease(&self, study: &str, lease: &Lease) -> augur_store::Result<bool> {
        self.calls.count("expire_lease");
        self.inner.expire_lease(study, lease).await
    }
    async fn set_submitted(&self, study: &str, on: bool) -> augur_store::Result<()> {
        self.calls.count("set_submitted");
        self.inner.set_submitted(study, on).await
    }
    async fn submitted(&self) -> augur_store::Result<Vec<String>> {
        self.calls.count("submitted");
        self.inner.submitted().await
    }
}

#[derive(Clone, Debug, PartialEq)]
enum InstState {
    Booting,
    Running,
    Gone(&'static str),
}

#[derive(Clone, Debug)]
struct Inst {
    study: String,
    trial: u64,
    attempt: u32,
    /// `None`: never boots.
    boot_at: Option<Millis>,
    run_ms: Millis,
    fails: bool,
    /// Reclaimed this long after its agent started.
    reclaim_after: Option<Millis>,
    state: InstState,
    started: Millis,
    beat: Millis,
    gone_at: Millis,
}

/// EC2 as the reconciler sees it: instances that boot late or never, are reclaimed,
/// and stay listed for an hour after they end (with their state reason).
struct SimCloud {
    now: Arc<AtomicI64>,
    insts: Mutex<BTreeMap<String, Inst>>,
    rng: Mutex<ChaCha8Rng>,
    calls: Arc<Calls>,
    next: AtomicU64,
    /// RunInstances per (trial, attempt): a duplicate launch would show here.
    launches: Mutex<HashMap<(u64, u32), u32>>,
}

#[async_trait]
impl MachineProvider for SimCloud {
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        self.calls.count("RunInstances");
        let now = self.now.load(Ordering::Relaxed);
        let id = format!("i-{:08x}", self.next.fetch_add(1, Ordering::Relaxed));
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| ProviderError::Unavailable("rng".into()))?;
        let inst = Inst {
            study: study.name.clone(),
            trial: trial.id,
            attempt: trial.attempt,
            boot_at: (!rng.gen_bool(0.01)).then(|| now + rng.gen_range(20_000..90_000)),
            run_ms: rng.gen_range(180_000..720_000),
            fails: rng.gen_bool(0.02),
            reclaim_after: rng.gen_bool(0.03).then(|| rng.gen_range(10_000..300_000)),
            state: InstState::Booting,
            started: 0,
            beat: 0,
            gone_at: 0,
        };
        if let Ok(mut l) = self.launches.lock() {
            *l.entry((trial.id, trial.attempt)).or_default() += 1;
        }
        if let Ok(mut i) = self.insts.lock() {
            i.insert(id.clone(), inst);
        }
        Ok(Launched::free(id))
    }

    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        let all = self.list_all().await?;
        Ok(all
            .into_iter()
            .filter(|(s, _)| s == study)
            .map(|(_, m)| m)
            .collect())
    }

    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        let insts = self
            .insts
            .lock()
            .map_err(|_| ProviderError::Unavailable("lock".into()))?;
        // DescribeInstances pages of 1000 (ended instances are listed for an hour).
        for _ in 0..insts.len().div_ceil(1000).max(1) {
            self.calls.count("DescribeInstances");
        }
        Ok(insts
            .iter()
            .map(|(id, i)| {
                (
                    i.study.clone(),
                    Machine {
                        id: id.clone(),
                        trial: i.trial,
                        attempt: i.attempt,
                        gone: match &i.state {
                            InstState::Gone(why) => Some(why.to_string()),
                            _ => None,
                        },
                        incarnation: None,
                    },
                )
            })
            .collect())
    }

    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError> {
        self.calls.count("TerminateInstances");
        let now = self.now.load(Ordering::Relaxed);
        if let Ok(mut insts) = self.insts.lock() {
            if let Some(i) = insts.get_mut(&machine.id) {
                if !matches!(i.state, InstState::Gone(_)) {
                    i.state = InstState::Gone("Client.UserInitiatedShutdown");
                    i.gone_at = now;
                }
            }
        }
        Ok(())
    }

    fn sees_all(&self) -> bool {
        false
    }
}

impl SimCloud {
    /// Moves every instance and its agent on to `now`: boots, heartbeats, results,
    /// reclaims, and the end of listings an hour after an instance ended.
    async fn advance(&self, now: Millis, agents: &dyn TrialStore) {
        self.now.store(now, Ordering::Relaxed);
        // Only the instances with something to do now (most wait for their next
        // heartbeat), and the end of listings an hour after an instance ended.
        let snapshot: Vec<(String, Inst)> = match self.insts.lock() {
            Ok(mut i) => {
                i.retain(|_, v| {
                    !matches!(v.state, InstState::Gone(_)) || now - v.gone_at <= 3_600_000
                });
                i.iter()
                    .filter(|(_, v)| match v.state {
                        InstState::Booting => v.boot_at.is_some_and(|at| at <= now),
                        InstState::Running => {
                            now - v.beat >= HEARTBEAT_MS
                                || now - v.started >= v.run_ms
                                || v.reclaim_after.is_some_and(|r| now - v.started >= r)
                        }
                        InstState::Gone(_) => false,
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
            Err(_) => return,
        };
        for (id, inst) in snapshot {
            let mut next = inst.clone();
            match inst.state {
                InstState::Booting => match inst.boot_at {
                    Some(at) if at <= now => {
                        let up = TrialUpdate::running(&id, now, None);
                        let ok = agents
                            .update_trial(
                                &inst.study,
                                inst.trial,
                                &Expect::state(TrialState::Starting, inst.attempt),
                                &up,
                            )
                            .await;
                        if matches!(ok, Ok(Written::Done(_))) {
                            next.state = InstState::Running;
                            next.started = now;
                            next.beat = now;
                        } else {
                            // Its attempt moved on: the agent powers the instance off.
                            next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                            next.gone_at = now;
                        }
                    }
                    _ => {}
                },
                InstState::Running => {
                    if inst.reclaim_after.is_some_and(|r| now - inst.started >= r) {
                        next.state = InstState::Gone("Server.SpotInstanceTermination");
                        next.gone_at = now;
                    } else if now - inst.started >= inst.run_ms {
                        let outcome = AttemptEnd {
                            exit_code: Some(if inst.fails { 1 } else { 0 }),
                            metrics: [("v".to_string(), inst.trial as f64)].into(),
                            series: vec![MetricPoint {
                                t_ms: now,
                                values: [("v".to_string(), inst.trial as f64)].into(),
                            }],
                            ..Default::default()
                        };
                        let _ = agents
                            .update_trial(
                                &inst.study,
                                inst.trial,
                                &Expect::state(TrialState::Running, inst.attempt),
                                &TrialUpdate::finished(now, &outcome),
                            )
                            .await;
                        next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                        next.gone_at = now;
                    } else if now - inst.beat >= HEARTBEAT_MS {
                        let up = TrialUpdate {
                            heartbeat_ms: Some(now),
                            ..Default::default()
                        };
                        let ok = agents
                            .heartbeat(&inst.study, inst.trial, inst.attempt, &up)
                            .await;
                        if matches!(ok, Ok(Beaten::Recorded)) {
                            next.beat = now;
                        } else {
                            next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                            next.gone_at = now;
                        }
                    }
                }
                InstState::Gone(_) => {}
            }
            if let Ok(mut insts) = self.insts.lock() {
                insts.insert(id, next);
            }
        }
    }
}

/// What one simulated study measured.
struct Report {
    trials: u64,
    parallel: u32,
    ticks: u64,
    passes: u64,
    cpu_ms: Vec<f64>,
    /// CPU per tick over the last fifth of the run, when the study is at its size.
    cpu_late_ms: Vec<f64>,
    ec2: Arc<Calls>,
    orch: Arc<Counted>,
    agents: Arc<Counted>,
    virtual_h: f64,
    wall_s: f64,
    succeeded: usize,
    failed: usize,
    lost: usize,
    preemptions: u64,
    retried: u64,
    duplicates: usize,
}

async fn simulate(
    trials: u64,
    parallel: u32,
    seed: u64,
    serverless: bool,
) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = Arc::new(SqliteStore::open(&dir.path().join("sim.db")).map_err(|e| e.to_string())?);
    let now = Arc::new(AtomicI64::new(1_000_000));
    let written = Arc::new(Mutex::new(HashMap::new()));
    let created = Arc::new(AtomicU64::new(0));
    let counted = |calls: Arc<Calls>| {
        Arc::new(Counted {
            inner: db.clone(),
            calls,
            changed_read: AtomicU64::new(0),
            whole_study_read: AtomicU64::new(0),
            index_read: AtomicU64::new(0),
            beats_read: AtomicU64::new(0),
            trials: created.clone(),
            written: written.clone(),
            now: now.clone(),
            reads: Mutex::new((0, 0)),
        })
    };
    let orch = counted(Arc::new(Calls::seeded(seed ^ 1)));
    let agents = counted(Arc::new(Calls::seeded(seed ^ 2)));
    let ec2 = Arc::new(Calls::seeded(seed ^ 3));
    let cloud = Arc::new(SimCloud {
        now: now.clone(),
        insts: Mutex::new(BTreeMap::new()),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        calls: ec2.clone(),
        next: AtomicU64::new(1),
        launches: Mutex::new(HashMap::new()),
    });
    let study = Study::parse(
        &format!(
            "name='sim'\nobjective={{metric='v'}}\noracle='random'\ntrials={trials}\nparallel={parallel}\nseed={seed}\n[params]\nx={{range=[0.0,1.0]}}\n[run]\nscript='true'\nmax_attempts=3\n"
        ),
        "sim.toml",
        std::path::Path::new("."),
    )
    .map_err(|e| e.to_string())?;
    let mut runner = Runner::new(orch.clone(), cloud.clone());
    let clock = now.clone();
    runner.clock = Arc::new(move || clock.load(Ordering::Relaxed));
    runner.timing.heartbeat_ms = HEARTBEAT_MS;
    runner.timing.lease_ms = 90_000;
    runner.timing.boot_timeout_ms = 600_000;
    runner.lease = Some(augur::LeaseSpec {
        holder: "sim".into(),
        ttl: Duration::from_secs(60),
    });
    let rec = runner
        .register(&study, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let warm = augur::WarmCaches::default();
    let started = Instant::now();
    let mut cpu_ms = Vec::new();
    let mut t: Millis = 1_000_000;
    let limit = t + 48 * 3_600_000;
    let mut driver = runner.driver(&study, Scope::Budget(study.trials));
    'ticks: loop {
        t += TICK_MS;
        if t > limit {
            return Err("the study did not finish within 48 virtual hours".into());
        }
        cloud.advance(t, agents.as_ref()).await;
        now.store(t, Ordering::Relaxed);
        let before = cpu_micros();
        let finished = if serverless {
            // A serverless tick, as a warm augur-lambda runs it: the cache its last
            // tick in this process left.
            match runner
                .tick_warm(
                    &study,
                    rec.created_ms,
                    Instant::now() + Duration::from_secs(600),
                    &warm,
                )
                .await
                .map_err(|e| e.to_string())?
            {
                TickEnd::Finished(_) => true,
                TickEnd::Held(l) => return Err(format!("lease held by {}", l.holder)),
                TickEnd::Waiting | TickEnd::Deadline => false,
            }
        } else {
            // `augur run`: one long-lived driver, its cache read incrementally.
            loop {
                match driver.pass(Mode::Run).await.map_err(|e| e.to_string())? {
                    Next::Again => continue,
                    Next::Wait(_) => break false,
                    Next::Finished(_) => break true,
                }
            }
        };
        cpu_ms.push((cpu_micros() - before) as f64 / 1000.0);
        if finished {
            break 'ticks;
        }
    }
    driver.release().await;
    let all = db.list_trials("sim").await.map_err(|e| e.to_string())?;
    let count = |s: TrialState| all.iter().filter(|x| x.state == s).count();
    let duplicates = cloud
        .launches
        .lock()
        .map(|l| l.values().filter(|n| **n > 1).count())
        .unwrap_or(usize::MAX);
    let late = cpu_ms.len() * 4 / 5;
    let c = runner.counters();
    Ok(Report {
        trials,
        parallel,
        ticks: cpu_ms.len() as u64,
        passes: c.ticks,
        cpu_late_ms: cpu_ms[late..].to_vec(),
        cpu_ms,
        ec2,
        orch,
        agents,
        virtual_h: (t - 1_000_000) as f64 / 3_600_000.0,
        wall_s: started.elapsed().as_secs_f64(),
        succeeded: count(TrialState::Succeeded),
        failed: count(TrialState::Failed),
        lost: count(TrialState::Lost)
            + count(TrialState::Pending)
            + count(TrialState::Starting)
            + count(TrialState::Running),
        preemptions: all.iter().map(|x| x.preemptions as u64).sum(),
        retried: c.retried,
        duplicates,
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn main() -> std::process::ExitCode {
    let mut sizes: Vec<u64> = Vec::new();
    let mut parallel = 500u32;
    let mut seed = 7u64;
    let mut serverless = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--parallel" => parallel = args.next().and_then(|v| v.parse().ok()).unwrap_or(500),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(7),
            "--serverless" => serverless = true,
            n => match n.parse() {
                Ok(n) => sizes.push(n),
                Err(_) => {
                    eprintln!(
                        "usage: augur-sim [TRIALS...] [--parallel N] [--seed S] [--serverless]"
                    );
                    return std::process::ExitCode::from(2);
                }
            },
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-sim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let mut reports = Vec::new();
    for n in sizes {
        match rt.block_on(simulate(n, parallel, seed, serverless)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("augur-sim: {n} trials: {e}");
                return std::process::ExitCode::from(1);
            }
        }
    }
    println!(
        "| trials | parallel | virtual h | ticks | passes | CPU/tick mean ms | p99 ms | max ms | at size: mean ms | EC2 calls/trial | store calls/trial (orchestrator + agents) | trials read/pass | DynamoDB items read/trial: index + beats (whole study each pass) | succeeded | failed | lost | preemptions | retried | duplicate launches | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for r in &reports {
        let n = r.trials as f64;
        let ec2 = r.ec2.total() as f64 / n;
        println!(
            "| {} | {} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} (run {:.2}, describe {:.2}, terminate {:.2}) | {:.2} + {:.2} | {:.1} | {:.0} + {:.0} ({:.0}) | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.trials,
            r.parallel,
            r.virtual_h,
            r.ticks,
            r.passes,
            mean(&r.cpu_ms),
            pct(&r.cpu_ms, 0.99),
            pct(&r.cpu_ms, 1.0),
            mean(&r.cpu_late_ms),
            ec2,
            r.ec2.get("RunInstances") as f64 / n,
            r.ec2.get("DescribeInstances") as f64 / n,
            r.ec2.get("TerminateInstances") as f64 / n,
            r.orch.calls.total() as f64 / n,
            r.agents.calls.total() as f64 / n,
            r.orch.changed_read.load(Ordering::Relaxed) as f64 / r.passes.max(1) as f64,
            r.orch.index_read.load(Ordering::Relaxed) as f64 / n,
            r.orch.beats_read.load(Ordering::Relaxed) as f64 / n,
            r.orch.whole_study_read.load(Ordering::Relaxed) as f64 / n,
            r.succeeded,
            r.failed,
            r.lost,
            r.preemptions,
            r.retried,
            r.duplicates,
            r.wall_s,
        );
        if r.lost > 0 || r.duplicates > 0 || r.succeeded + r.failed != r.trials as usize {
            ok = false;
        }
    }
    if let [first, .., last] = &reports[..] {
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
        println!(
            "\n{}x the trials: CPU per tick x{:.2} (at size x{:.2}); EC2 calls per trial x{:.2}; orchestrator store calls per trial x{:.2}; DynamoDB items read per trial x{:.2} (whole study each pass: x{:.2})",
            last.trials / first.trials.max(1),
            ratio(mean(&first.cpu_ms), mean(&last.cpu_ms)),
            ratio(mean(&first.cpu_late_ms), mean(&last.cpu_late_ms)),
            ratio(
                first.ec2.total() as f64 / first.trials as f64,
                last.ec2.total() as f64 / last.trials as f64
            ),
            ratio(
                first.orch.calls.total() as f64 / first.trials as f64,
                last.orch.calls.total() as f64 / last.trials as f64
            ),
            ratio(
                first.orch.index_read.load(Ordering::Relaxed) as f64 / first.trials as f64,
                last.orch.index_read.load(Ordering::Relaxed) as f64 / last.trials as f64
            ),
            ratio(
                first.orch.whole_study_read.load(Ordering::Relaxed) as f64 / first.trials as f64,
                last.orch.whole_study_read.load(Ordering::Relaxed) as f64 / last.trials as f64
            ),
        );
    }
    if let Some(big) = reports.iter().max_by_key(|r| r.trials) {
        let p99 = pct(&big.cpu_ms, 0.99);
        println!(
            "target: CPU per tick <= 50 ms at {} trials: p99 {:.2} ms, mean {:.2} ms: {} ({} build)",
            big.trials,
            p99,
            mean(&big.cpu_ms),
            if p99 <= 50.0 { "met" } else { "NOT met" },
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("augur-sim: a trial was lost or launched twice");
        std::process::ExitCode::from(1)
    }
}
