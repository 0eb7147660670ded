//! What a Prometheus scrape of `/metrics` (and every page poll) reads, at a team's
//! size: the status server lists studies and reads each study's trials through its
//! cache (`augur::app::trials::TrialCache`), as `App::studies` does, against the
//! counted store (read units as DynamoDB would charge them, see `counted`).
//!
//! Before issue 17 a scrape scanned the whole table to list studies and then read
//! every trial of every study: twice every item, consistently. Now it reads the
//! studies' index, each study's changes since the last scrape, and the beats of
//! its running trials: once warm, what changed, not how many trials there are.

use crate::counted::{record_bytes, Calls, Counted, Shared};
use augur::app::trials::TrialCache;
use augur_model::{
    Expect, MetricPoint, Params, Study, StudyRecord, StudyState, Trial, TrialState, TrialUpdate,
};
use augur_store::{SqliteStore, TrialStore};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// `STUDIESxTRIALS`, e.g. `100x1000`.
pub(crate) fn parse(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('x')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// One in this many trials still runs; the rest finished, each with a series.
const RUNNING_ONE_IN: u64 = 50;

/// A study of `name` as the status server lists it.
fn record(name: &str) -> Result<StudyRecord, String> {
    let spec = Study::parse(
        &format!("name='{name}'\nobjective={{metric='loss'}}\ntrials=1000\n[run]\nscript='true'\n"),
        "scrape.toml",
        std::path::Path::new("."),
    )
    .map_err(|e| e.to_string())?;
    Ok(StudyRecord {
        name: name.into(),
        spec,
        state: StudyState::Active,
        created_ms: 1,
        updated_ms: 1,
        drive: None,
        bounds: Default::default(),
        reason: None,
    })
}

/// Fills the store: `studies` studies of `trials` trials, most finished with a
/// series of 60 readings, some running.
async fn fill(
    store: &SqliteStore,
    counted: &Counted,
    studies: u64,
    trials: u64,
) -> Result<(), String> {
    let e = |e: augur_store::StoreError| e.to_string();
    let series: Vec<MetricPoint> = (1..=60)
        .map(|i| MetricPoint {
            t_ms: i * 5_000,
            values: [
                ("step".to_string(), i as f64),
                ("loss".to_string(), 1.0 / i as f64),
            ]
            .into(),
        })
        .collect();
    for s in 0..studies {
        let name = format!("study-{s:03}");
        store.create_study(&record(&name)?).await.map_err(e)?;
        for r in 0..trials {
            let (t, _) = store
                .create_trial(&Trial::new(&name, 0, r, 0, Params::new(), 0))
                .await
                .map_err(e)?;
            let starting = TrialUpdate {
                state: Some(TrialState::Starting),
                ..Default::default()
            };
            let mut steps = vec![
                (TrialState::Pending, starting),
                (
                    TrialState::Starting,
                    TrialUpdate::running("i-1", 1, 10, None),
                ),
            ];
            if t.id % RUNNING_ONE_IN != 0 {
                let end = augur_model::AttemptEnd {
                    exit_code: Some(0),
                    metrics: series.last().map(|p| p.values.clone()).unwrap_or_default(),
                    series: series.clone(),
                    ..Default::default()
                };
                steps.push((TrialState::Running, TrialUpdate::finished(20, &end)));
            }
            let mut last = t;
            for (from, up) in steps {
                let expect = Expect::state(from, 1);
                let w = store.update_trial(&name, last.id, &expect, &up).await;
                last = w.map_err(e)?.ok().ok_or("a write did not apply")?;
            }
            counted.note(&last);
        }
    }
    Ok(())
}

/// Measures a cold and a warm scrape of `studies` x `trials`, and prints them beside
/// what a scrape read before.
pub(crate) async fn measure(studies: u64, trials: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = Arc::new(SqliteStore::open(&dir.path().join("scrape.db")).map_err(|e| e.to_string())?);
    let now = Arc::new(AtomicI64::new(1_000_000));
    let shared = Arc::new(Shared {
        now: now.clone(),
        ..Default::default()
    });
    let counted = Counted::new(db.clone(), Arc::new(Calls::default()), shared);
    let started = std::time::Instant::now();
    fill(&db, &counted, studies, trials).await?;
    let filled = started.elapsed().as_secs_f64();
    // Before: a scan of the table for the studies, then every trial of each.
    let mut bytes = 0;
    for rec in db.list_studies().await.map_err(|e| e.to_string())? {
        let all = db.list_trials(&rec.name).await.map_err(|e| e.to_string())?;
        bytes += all.iter().map(record_bytes).sum::<usize>() + 1_000;
    }
    let before = 2.0 * bytes.div_ceil(4096) as f64;
    let cache = TrialCache::default();
    // `beats`: a page poll reads the running trials' beats, `/metrics` does not.
    let scrape = |at: i64, beats: bool| {
        now.store(at, Ordering::Relaxed);
        let (counted, cache) = (&counted, &cache);
        async move {
            let read = counted.units.reads();
            for rec in counted.list_studies().await.map_err(|e| e.to_string())? {
                let trials = cache.trials(counted, &rec, beats);
                trials.await.map_err(|e| e.to_string())?;
            }
            Ok::<f64, String>(counted.units.reads() - read)
        }
    };
    let cold = scrape(10_000_000, false).await?;
    // Every 15 s (a Prometheus scrape interval) for 10 minutes, with nothing
    // written meanwhile but the running trials' beats: each study is still read
    // whole every 5 minutes (the store's safety net under its eventually
    // consistent index).
    let mut warm = Vec::new();
    for k in 1..=40 {
        warm.push(scrape(10_000_000 + k * 15_000, false).await?);
    }
    let page = scrape(10_000_000 + 41 * 15_000, true).await?;
    let least = warm.iter().copied().fold(f64::MAX, f64::min);
    let mean = warm.iter().sum::<f64>() / warm.len() as f64;
    println!(
        "/metrics scrape at {studies} studies x {trials} trials ({} running): read units before {before:.0} every scrape; now cold {cold:.0}, then warm {least:.0} (mean {mean:.0} over 40 scrapes in 10 minutes, the whole reads every 5 minutes included); a page poll of every study, with the running trials' beats, {page:.0} (store filled in {filled:.0} s)",
        studies * (trials / RUNNING_ONE_IN)
    );
    Ok(())
}
