//! What the driver still decides on its own: when a pass ends, how long it waits,
//! when it gives up on the backend, and that it asks for a fresh listing before a
//! study ends. On the real SQLite store with a virtual clock; the machines are a
//! cloud whose listing is cached until invalidated, as the EC2 provider's is.

use super::*;
use crate::provider::{Launched, MachineProvider};
use crate::reconcile::Machine;
use async_trait::async_trait;
use augur_model::Params;
use augur_store::SqliteStore;
use std::path::Path;
use std::sync::Mutex;

/// Machines listed from a cache that only [`invalidate`](MachineProvider::invalidate)
/// refreshes (EC2's listing is reused for a few seconds), or not at all.
#[derive(Default)]
struct CachedCloud {
    machines: Mutex<Vec<Machine>>,
    cached: Mutex<Option<Vec<Machine>>>,
    terminated: Mutex<Vec<String>>,
    unavailable: bool,
}

#[async_trait]
impl MachineProvider for CachedCloud {
    async fn launch(&self, _study: &Study, _trial: &Trial) -> Result<Launched, ProviderError> {
        Err(ProviderError::Launch(augur_store::Failure::said(
            "no launches in these tests",
        )))
    }
    async fn list(&self, _study: &str) -> Result<Vec<Machine>, ProviderError> {
        if self.unavailable {
            return Err(ProviderError::unavailable("the cloud is down"));
        }
        let live = self.machines.lock().expect("lock").clone();
        Ok(self
            .cached
            .lock()
            .expect("lock")
            .get_or_insert(live)
            .clone())
    }
    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        Ok(Vec::new())
    }
    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError> {
        self.machines
            .lock()
            .expect("lock")
            .retain(|m| m.id != machine.id);
        self.terminated
            .lock()
            .expect("lock")
            .push(machine.id.clone());
        Ok(())
    }
    fn sees_all(&self) -> bool {
        false
    }
    fn invalidate(&self, _study: &str) {
        *self.cached.lock().expect("lock") = None;
    }
}

fn study() -> Study {
    Study::parse(
        "name='s'\nobjective={metric='m'}\ntrials=2\nparallel=2\n[run]\nscript='true'\nmax_attempts=1\n",
        "s.toml",
        Path::new("."),
    )
    .expect("study")
}

const NOW: Millis = 1_000_000;

/// A runner at a fixed time over a fresh store, with the study registered.
async fn runner(dir: &Path, cloud: Arc<CachedCloud>) -> Runner {
    let store: Arc<dyn TrialStore> =
        Arc::new(SqliteStore::open(&dir.join("augur.db")).expect("store"));
    let mut r = Runner::new(store, cloud);
    r.config.clock = Arc::new(|| NOW);
    r.register(&study(), &RegisterOptions::default())
        .await
        .expect("register");
    r
}

/// Records trial `id` as pending, then walks it to `to` as the orchestrator and an
/// agent would.
async fn trial_in(r: &Runner, id: u64, to: TrialState) {
    let (t, _) = r
        .store
        .create_trial(&Trial::new("s", 0, id - 1, 0, Params::new(), NOW))
        .await
        .expect("create");
    let path: &[TrialState] = match to {
        TrialState::Pending => &[],
        TrialState::Running => &[TrialState::Starting, TrialState::Running],
        _ => &[TrialState::Starting, TrialState::Running, to],
    };
    let mut from = TrialState::Pending;
    for &state in path {
        let up = TrialUpdate {
            state: Some(state),
            heartbeat_ms: Some(NOW),
            ..Default::default()
        };
        r.store
            .update_trial("s", t.id, &Expect::state(from, t.attempt), &up)
            .await
            .expect("write");
        from = state;
    }
}

#[tokio::test]
async fn a_study_ends_only_after_a_fresh_listing_ends_what_the_cache_missed() {
    let dir = tempfile::tempdir().expect("tmp");
    let cloud = Arc::new(CachedCloud::default());
    let r = runner(dir.path(), cloud.clone()).await;
    trial_in(&r, 1, TrialState::Succeeded).await;
    trial_in(&r, 2, TrialState::Succeeded).await;
    let s = study();
    let mut d = r.driver(&s, Scope::Budget(2));
    // A listing is cached before a machine shows up in the cloud.
    assert!(cloud.list("s").await.expect("list").is_empty());
    cloud.machines.lock().expect("lock").push(Machine {
        id: "i-late".into(),
        trial: 2,
        attempt: 1,
        gone: None,
        incarnation: None,
        billing: None,
    });
    // Everything is settled: the driver asks for a fresh listing instead of ending.
    assert_eq!(d.pass(Mode::Run).await.expect("pass"), Next::Again);
    assert_eq!(
        r.store.study_state("s").await.expect("state"),
        Some(StudyState::Active)
    );
    assert!(cloud.terminated.lock().expect("lock").is_empty());
    // On it, the machine the cache missed is ended, then the study.
    assert_eq!(
        d.pass(Mode::Run).await.expect("pass"),
        Next::Finished(Finished::Done)
    );
    assert_eq!(*cloud.terminated.lock().expect("lock"), vec!["i-late"]);
    assert_eq!(
        r.store.study_state("s").await.expect("state"),
        Some(StudyState::Done)
    );
}

#[tokio::test]
async fn a_pass_waits_until_the_next_retry_is_due_at_most_a_tick() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = runner(dir.path(), Arc::default()).await;
    trial_in(&r, 1, TrialState::Running).await;
    let s = study();
    let mut d = r.driver(&s, Scope::Budget(1));
    // Nothing due: a tick.
    assert_eq!(
        d.pass(Mode::Run).await.expect("pass"),
        Next::Wait(r.config.idle)
    );
    // A retry due in 300 ms: wait just past it.
    d.cache.upsert(Trial {
        id: 9,
        not_before_ms: Some(NOW + 300),
        ..Trial::new("s", 9, 8, 0, Params::new(), NOW)
    });
    assert_eq!(
        d.next_step(Mode::Run, false, NOW),
        Next::Wait(Duration::from_millis(301))
    );
    // A drain with a trial running goes on; without one it ends.
    assert_eq!(
        d.next_step(Mode::Drain, false, NOW),
        Next::Wait(Duration::from_millis(301))
    );
    let mut ended = d.cache.get(1).cloned().expect("trial 1");
    ended.state = TrialState::Succeeded;
    d.cache.upsert(ended);
    assert_eq!(
        d.next_step(Mode::Drain, false, NOW),
        Next::Finished(Finished::Interrupted)
    );
    assert_eq!(d.next_step(Mode::Drain, true, NOW), Next::Again);
}

#[tokio::test]
async fn an_unavailable_backend_is_retried_then_given_up_with_the_study_resumable() {
    let dir = tempfile::tempdir().expect("tmp");
    let cloud = Arc::new(CachedCloud {
        unavailable: true,
        ..CachedCloud::default()
    });
    let mut r = runner(dir.path(), cloud).await;
    r.config.backend_deadline = Duration::from_millis(400);
    let (_tx, rx) = watch::channel(Mode::Run);
    let err = r
        .drive(&study(), Scope::Budget(2), rx)
        .await
        .expect_err("gives up");
    let m = err.to_string();
    assert!(
        matches!(&err, RunError::GaveUp { last, .. } if matches!(**last, RunError::Provider(ProviderError::Unavailable(_))))
            && m.contains("the cloud is down")
            && m.contains("resumes the study"),
        "{err}"
    );
    assert_eq!(err.kind().exit_code(), 3);
    // 200, 400 ms... between passes: at least the first two failures were retried.
    assert!(r.counters().backend_errors >= 2, "{:?}", r.counters());
    // A tick does not retry: it leaves the failure to the next tick.
    r.config.lease = Some(LeaseSpec {
        holder: "tick".into(),
        ttl: Duration::from_secs(5),
    });
    let before = r.counters().backend_errors;
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(matches!(
        r.tick(&study(), deadline).await,
        Err(RunError::Provider(ProviderError::Unavailable(_)))
    ));
    assert_eq!(r.counters().backend_errors, before);
}

#[test]
fn backend_backoff_doubles_from_200_ms_to_at_most_5_s() {
    let ms: Vec<u128> = (1..=8)
        .map(|n| driver::backend_backoff(n).as_millis())
        .collect();
    assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
}

/// A cloud whose launches take `launch_takes` to answer; it counts the most in
/// flight at once.
#[derive(Default)]
struct SlowCloud {
    launch_takes: Duration,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    /// (trial, attempt) of each launch asked.
    asked: Mutex<Vec<(u64, u32)>>,
}

impl SlowCloud {
    fn taking(launch_takes: Duration) -> SlowCloud {
        SlowCloud {
            launch_takes,
            ..Default::default()
        }
    }
}

#[async_trait]
impl MachineProvider for SlowCloud {
    async fn launch(&self, _study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Ok(mut a) = self.asked.lock() {
            a.push((trial.id, trial.attempt));
        }
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(self.launch_takes).await;
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(Launched::free(format!("i-{}", trial.id)))
    }
    async fn list(&self, _study: &str) -> Result<Vec<Machine>, ProviderError> {
        Ok(Vec::new())
    }
    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        Ok(Vec::new())
    }
    async fn terminate(&self, _machine: &Machine) -> Result<(), ProviderError> {
        Ok(())
    }
    fn sees_all(&self) -> bool {
        false
    }
}

/// A tick returns at its deadline even when a launch has not answered, instead of
/// the invocation being killed mid-call. The attempt stays `starting` with no
/// machine named (a try counted and said), and the next tick asks again for the
/// same attempt (the same ClientToken, on EC2), then names the machine in the record.
#[tokio::test]
async fn a_launch_still_unanswered_at_the_ticks_deadline_is_asked_again_next_tick() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn TrialStore> =
        Arc::new(SqliteStore::open(&dir.path().join("augur.db")).expect("store"));
    let slow = Arc::new(SlowCloud::taking(Duration::from_secs(30)));
    let lease = || {
        Some(LeaseSpec {
            holder: "tick".into(),
            ttl: Duration::from_secs(1),
        })
    };
    let mut r = Runner::new(store.clone(), slow.clone());
    r.config.clock = Arc::new(|| NOW);
    r.config.lease = lease();
    let s = study();
    r.register(&s, &RegisterOptions::default())
        .await
        .expect("register");
    let started = Instant::now();
    let end = r
        .tick(&s, Instant::now() + Duration::from_millis(300))
        .await
        .expect("tick");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!matches!(end, TickEnd::Finished(_)), "{end:?}");
    let trials = store.list_trials("s").await.expect("trials");
    let first = trials.first().expect("a trial was proposed");
    assert_eq!(
        (
            first.state,
            first.attempt,
            &first.machine,
            first.launch_tries
        ),
        (TrialState::Starting, 1, &None, 1),
        "{first:?}"
    );
    assert!(
        first
            .status
            .as_deref()
            .is_some_and(|s| s.contains("no answer before the tick's deadline")),
        "{first:?}"
    );
    // The next tick, with time enough, asks again for the same attempt and records
    // its machine.
    let fast = Arc::new(SlowCloud::taking(Duration::from_millis(1)));
    let mut r = Runner::new(store.clone(), fast.clone());
    r.config.clock = Arc::new(|| NOW);
    r.config.lease = lease();
    r.tick(&s, Instant::now() + Duration::from_secs(5))
        .await
        .expect("tick");
    let t = store
        .get_trial("s", first.id)
        .await
        .expect("read")
        .expect("trial");
    assert_eq!(
        (t.state, t.attempt, t.machine.as_deref()),
        (
            TrialState::Starting,
            1,
            Some(format!("i-{}", t.id).as_str())
        ),
        "{t:?}"
    );
    assert_eq!(t.status, None, "the try's note goes with its answer: {t:?}");
    let asked = |c: &SlowCloud| c.asked.lock().expect("lock").clone();
    assert!(asked(&slow).contains(&(first.id, 1)));
    assert!(asked(&fast).contains(&(first.id, 1)), "{:?}", asked(&fast));
}

/// The launches of a pass are asked side by side, a few at a time (a tick has a
/// deadline, and each RunInstances takes a while), and each is settled.
#[tokio::test]
async fn a_passs_launches_run_at_once_a_few_at_a_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn TrialStore> =
        Arc::new(SqliteStore::open(&dir.path().join("augur.db")).expect("store"));
    let cloud = Arc::new(SlowCloud::taking(Duration::from_millis(50)));
    let mut r = Runner::new(store.clone(), cloud.clone());
    r.config.clock = Arc::new(|| NOW);
    let s = Study::parse(
        "name='s'\nobjective={metric='m'}\ntrials=20\nparallel=20\n[run]\nscript='true'\n",
        "s.toml",
        Path::new("."),
    )
    .expect("study");
    r.register(&s, &RegisterOptions::default())
        .await
        .expect("register");
    let mut driver = r.driver(&s, Scope::Budget(s.trials));
    for _ in 0..5 {
        if let Next::Wait(_) = driver.pass(Mode::Run).await.expect("pass") {
            break;
        }
    }
    let trials = store.list_trials("s").await.expect("trials");
    let starting = trials
        .iter()
        .filter(|t| t.state == TrialState::Starting)
        .count();
    assert_eq!(starting, 20, "{trials:?}");
    // Each was created starting (Action::Propose { launch }): one write a trial, not
    // a creation and then a launch, and one to record its launch's answer (a cloud's
    // listing may miss a machine); the store's change mark counts trial writes.
    let (_, writes) = store
        .changed_trials("s", 0, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    assert_eq!(writes, 40);
    assert!(trials.iter().all(|t| t.machine.is_some()), "{trials:?}");
    let most = cloud.most.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, driver::LAUNCHES_AT_ONCE, "launches in flight at once");
}
