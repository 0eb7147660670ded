//! The store suite's heartbeats (see [`crate::TrialStore::heartbeat`]).

use super::record;
use crate::{Beaten, TrialStore};
use augur_model::{Expect, MetricPoint, Params, Set, Trial, TrialState, TrialUpdate};

/// Heartbeats: every reader sees the newest (records read whole, or a cache of
/// changes with the trials' `beats` laid over); an attempt ended by another writer
/// learns it at its next beat, and the record keeps its last metrics; an earlier
/// attempt's beats never land on a later one.
pub async fn heartbeats(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    for id in 1..=2 {
        s.create_trial(&Trial::new(name, 0, 0, id as u32, Params::new(), 0))
            .await
            .expect("trial");
        walk(s, name, id, 1).await;
    }
    every_reader_sees_the_newest_beat(s, name).await;
    an_ended_attempt_learns_it_at_its_next_beat(s, name).await;
    an_earlier_attempts_beats_are_refused(s, name).await;
}

/// Walks trial `id` from pending to running at `attempt`.
async fn walk(s: &dyn TrialStore, name: &str, id: u64, attempt: u32) {
    let starting = TrialUpdate {
        state: Some(TrialState::Starting),
        ..Default::default()
    };
    let running = TrialUpdate::running("host:1", 1, 10, None);
    for (from, up) in [
        (TrialState::Pending, starting),
        (TrialState::Starting, running),
    ] {
        s.update_trial(name, id, &Expect::state(from, attempt), &up)
            .await
            .expect("write")
            .ok()
            .expect("applied");
    }
}

/// What a reader sees of a heartbeat: its time, the metric's last value, the status.
fn seen(t: &Trial) -> (Option<i64>, Option<f64>, Option<String>) {
    (
        t.heartbeat_ms,
        t.metrics.get("m").copied(),
        t.status.clone(),
    )
}

async fn every_reader_sees_the_newest_beat(s: &dyn TrialStore, name: &str) {
    let (_, mark) = s
        .changed_trials(name, 0, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    let point = |t: i64| MetricPoint {
        t_ms: t,
        values: [("m".to_string(), t as f64)].into(),
    };
    for beat in 1..=3 {
        let series: Vec<MetricPoint> = (1..=beat * 10).map(point).collect();
        let up = TrialUpdate {
            heartbeat_ms: Some(100 + beat),
            metrics: series.last().map(|p| p.values.clone()),
            series: Some(series),
            status: Set::To(format!("beat {beat}")),
            ..Default::default()
        };
        let out = s.heartbeat(name, 1, 1, &up).await.expect("beat");
        assert_eq!(out, Beaten::Recorded);
    }
    let want = (Some(103), Some(30.0), Some("beat 3".to_string()));
    let one = s.get_trial(name, 1).await.expect("get").expect("trial");
    assert_eq!(seen(&one), want, "get_trial");
    assert_eq!(one.series.last().map(|p| p.t_ms), Some(30));
    let listed = s.list_trials(name).await.expect("list");
    assert_eq!(seen(&listed[0]), want, "list_trials");
    // A cache of changes, with the running trials' beats laid over.
    let (mut changed, _) = s
        .changed_trials(name, mark, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    let beats = s.beats(name, &[1, 2]).await.expect("beats");
    for t in changed.iter_mut() {
        let id = t.id;
        for b in beats.iter().filter(|b| b.id == id) {
            t.absorb(b);
        }
    }
    if let Some(t) = changed.iter().find(|t| t.id == 1) {
        assert_eq!(seen(t), want, "changed trials with their beats");
    }
}

async fn an_ended_attempt_learns_it_at_its_next_beat(s: &dyn TrialStore, name: &str) {
    let lost = TrialUpdate {
        state: Some(TrialState::Lost),
        error: Set::To("no heartbeat".into()),
        ..Default::default()
    };
    let ended = s
        .update_trial(name, 1, &Expect::state(TrialState::Running, 1), &lost)
        .await
        .expect("lose")
        .ok()
        .expect("lost");
    let kept = ended.metrics.get("m");
    assert_eq!(kept, Some(&30.0), "the record keeps the last beat");
    let late = TrialUpdate {
        heartbeat_ms: Some(200),
        ..Default::default()
    };
    match s.heartbeat(name, 1, 1, &late).await.expect("late beat") {
        Beaten::Moved(Some(t)) => assert_eq!(t.state, TrialState::Lost),
        other => panic!("a beat of an ended attempt must be refused: {other:?}"),
    }
}

async fn an_earlier_attempts_beats_are_refused(s: &dyn TrialStore, name: &str) {
    let lost = TrialUpdate {
        state: Some(TrialState::Lost),
        ..Default::default()
    };
    s.update_trial(name, 2, &Expect::state(TrialState::Running, 1), &lost)
        .await
        .expect("lose 2");
    let next = TrialUpdate::next_attempt(2, None);
    s.update_trial(name, 2, &Expect::state(TrialState::Lost, 1), &next)
        .await
        .expect("next attempt");
    walk(s, name, 2, 2).await;
    let beat = |at: i64| TrialUpdate {
        heartbeat_ms: Some(at),
        ..Default::default()
    };
    let old = s.heartbeat(name, 2, 1, &beat(400)).await.expect("old beat");
    assert!(matches!(old, Beaten::Moved(Some(_))), "{old:?}");
    let new = s.heartbeat(name, 2, 2, &beat(401)).await.expect("new beat");
    assert_eq!(new, Beaten::Recorded);
    let two = s.get_trial(name, 2).await.expect("get").expect("trial");
    assert_eq!((two.attempt, two.heartbeat_ms), (2, Some(401)));
}
