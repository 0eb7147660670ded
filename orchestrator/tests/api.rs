//! The library API (diviner's runner: Run, Round, Stream with Stop/Wait, Counters)
//! with an in-process objective and the real SQLite store.

use augur::{Finished, InProcessProvider, Runner, TrialContext};
use augur_model::{Params, Study, TrialState, Value};
use augur_store::{SqliteStore, TrialStore};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn study(extra: &str) -> Study {
    Study::parse(
        &format!(
            "name='api'\nobjective={{metric='loss'}}\ntrials=12\nparallel=3\nseed=5\n{extra}\n[params]\nx={{range=[-2.0,2.0]}}\n[run]\nscript='unused'\n"
        ),
        "api.toml",
        Path::new("."),
    )
    .expect("study")
}

type Obj = dyn Fn(&Params, &TrialContext) -> Result<BTreeMap<String, f64>, String> + Send + Sync;

fn quadratic(calls: Arc<AtomicU64>) -> Arc<Obj> {
    Arc::new(move |p: &Params, _cx: &TrialContext| {
        calls.fetch_add(1, Ordering::SeqCst);
        let x = p["x"].as_f64().ok_or("x")?;
        Ok([("loss".to_string(), (x - 1.0) * (x - 1.0))].into())
    })
}

fn runner(dir: &Path, objective: Arc<Obj>) -> (Arc<Runner>, Arc<dyn TrialStore>) {
    leased_runner(dir, objective, None)
}

/// A runner that drives only while it holds the study's lease as `holder`.
fn leased_runner(
    dir: &Path,
    objective: Arc<Obj>,
    holder: Option<&str>,
) -> (Arc<Runner>, Arc<dyn TrialStore>) {
    let store: Arc<dyn TrialStore> =
        Arc::new(SqliteStore::open(&dir.join("augur.db")).expect("store"));
    let provider = Arc::new(InProcessProvider::new(store.clone(), objective));
    let mut config = augur::RunnerConfig::default();
    config.drive.backoff_base_ms = 10;
    config.lease = holder.map(|h| augur::LeaseSpec {
        holder: h.into(),
        ttl: std::time::Duration::from_secs(30),
    });
    (
        Arc::new(Runner::with_config(store.clone(), provider, config)),
        store,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_runs_the_budget_and_counts() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicU64::new(0));
    let (r, store) = runner(dir.path(), quadratic(calls.clone()));
    let s = study("");
    let handle = r.stream(s.clone());
    assert_eq!(handle.wait().await.expect("stream"), Finished::Done);
    let trials = store.list_trials("api").await.expect("list");
    assert_eq!(trials.len(), 12);
    assert!(trials.iter().all(|t| t.state == TrialState::Succeeded));
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    let c = r.counters();
    assert_eq!((c.launched, c.succeeded, c.failed, c.lost), (12, 12, 0, 0));
    let lb = augur_model::leaderboard(&s, &trials);
    assert!(lb[0].value <= lb[11].value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stop_drains_and_a_new_stream_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicU64::new(0));
    let slow_calls = calls.clone();
    let slow: Arc<Obj> = Arc::new(move |p: &Params, _: &TrialContext| {
        slow_calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok([("loss".to_string(), p["x"].as_f64().unwrap_or(0.0))].into())
    });
    let (r, store) = runner(dir.path(), slow);
    let s = study("");
    let handle = r.stream(s.clone());
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    handle.stop();
    assert_eq!(handle.wait().await.expect("wait"), Finished::Interrupted);
    let partial = store.list_trials("api").await.expect("list");
    assert!(
        partial.iter().all(|t| !t.state.is_active()),
        "drained: nothing left running"
    );
    let done_then = partial
        .iter()
        .filter(|t| t.state == TrialState::Succeeded)
        .count();
    assert!(done_then < 12, "stopped early ({done_then})");
    assert_eq!(r.stream(s).wait().await.expect("resume"), Finished::Done);
    let all = store.list_trials("api").await.expect("list");
    assert_eq!(all.len(), 12);
    assert_eq!(calls.load(Ordering::SeqCst), 12, "nothing ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_round() {
    let dir = tempfile::tempdir().expect("tmp");
    let (r, _store) = runner(dir.path(), quadratic(Arc::new(AtomicU64::new(0))));
    let s = study("replicates=2");
    let t = r
        .run(&s, [("x".to_string(), Value::Float(3.0))].into(), 1)
        .await
        .expect("run");
    assert_eq!(t.state, TrialState::Succeeded);
    assert_eq!(t.replicate, 1);
    assert_eq!(t.metrics["loss"], 4.0);
    let round = r.round(&s, 3).await.expect("round");
    assert_eq!(round.len(), 6, "3 points x 2 replicates");
    assert!(round.iter().all(|t| t.state == TrialState::Succeeded));
    let points: std::collections::BTreeSet<u64> = round.iter().map(|t| t.point).collect();
    assert_eq!(points.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objective_errors_fail_trials_and_retry_on_failure_retries_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let attempts = Arc::new(AtomicU64::new(0));
    let a2 = attempts.clone();
    let flaky: Arc<Obj> = Arc::new(move |_: &Params, cx: &TrialContext| {
        a2.fetch_add(1, Ordering::SeqCst);
        if cx.attempt == 1 {
            Err("first attempts fail".into())
        } else {
            Ok([("loss".to_string(), cx.attempt as f64)].into())
        }
    });
    let (r, store) = runner(dir.path(), flaky);
    let mut s = study("");
    s.trials = 4;
    s.run.retry_on_failure = true;
    assert_eq!(r.stream(s).wait().await.expect("stream"), Finished::Done);
    let trials = store.list_trials("api").await.expect("list");
    assert!(
        trials
            .iter()
            .all(|t| t.state == TrialState::Succeeded && t.attempt == 2),
        "{trials:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 8);
    assert_eq!(r.counters().retried, 4);
}

/// A driver's lease written by a machine whose clock is behind is not taken over
/// while it may still be live: only `clock_skew_ms` after it expired by the taker's
/// clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_over_only_past_the_clock_skew_margin() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicU64::new(0));
    let (r, store) = leased_runner(dir.path(), quadratic(calls.clone()), Some("me"));
    assert_eq!(augur::reconcile::CLOCK_SKEW_MS, 5_000);
    let s = study("");
    r.register(&s, &Default::default()).await.expect("register");
    let now = augur_store::now_ms();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Expired 2 s ago by our clock: the holder's clock may be 2 s behind.
    store
        .take_lease("api", "other", now, now - 2_000, 0)
        .await
        .expect("lease");
    match r.tick(&s, deadline).await.expect("tick") {
        augur::TickEnd::Held(l) => assert_eq!(l.holder, "other"),
        other => panic!("took a lease that may be live: {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Expired beyond the margin: taken over.
    store
        .take_lease("api", "other", now - 20_000, now - 6_000, 0)
        .await
        .expect("lease");
    let end = r.tick(&s, deadline).await.expect("tick");
    assert!(!matches!(end, augur::TickEnd::Held(_)), "{end:?}");
}

/// Serverless ticks in one process keep each study's cache (an augur-lambda environment AWS reuses):
/// ticks carry a study to its end and the cache is dropped there; a study deleted
/// and made again under the same name starts cold (a stale cache would count the old
/// study's trials and stop short of the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_ticks_keep_the_cache_and_a_remade_study_starts_cold() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicU64::new(0));
    let (r, store) = leased_runner(dir.path(), quadratic(calls.clone()), Some("lambda"));
    let caches = augur::TickCaches::default();
    let s = study("");
    let ticks = |rec: augur_model::StudyRecord, stop_at: usize| {
        let (r, caches, store, s) = (&r, &caches, store.clone(), s.clone());
        async move {
            let mut kept = 0;
            for _ in 0..400 {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                match r
                    .tick_cached(&s, rec.created_ms, deadline, caches)
                    .await
                    .expect("tick")
                {
                    augur::TickEnd::Finished(_) => return kept,
                    _ => kept = kept.max(caches.len()),
                }
                if store.list_trials("api").await.expect("list").len() >= stop_at {
                    return kept;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the study did not finish");
        }
    };
    // The first study, part way: 9 of its 12 trials made, its cache kept.
    let rec = r.register(&s, &Default::default()).await.expect("register");
    assert_eq!(
        ticks(rec.clone(), 9).await,
        1,
        "a tick with work left keeps its cache"
    );
    assert_eq!(caches.len(), 1);
    // Deleted and made again: a new creation time, a cold start, the whole budget.
    assert!(store.delete_study("api").await.expect("delete"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let rec2 = r.register(&s, &Default::default()).await.expect("again");
    assert_ne!(rec2.created_ms, rec.created_ms);
    ticks(rec2, usize::MAX).await;
    let again = store.list_trials("api").await.expect("list");
    assert_eq!(again.len(), 12, "the re-made study runs its whole budget");
    assert!(again.iter().all(|t| t.state == TrialState::Succeeded));
    assert_eq!(
        caches.len(),
        1,
        "only the old study's cache is left: the end dropped the new one's"
    );
}
