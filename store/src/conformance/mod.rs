//! The behaviour every [`TrialStore`] must have, as one suite run against each
//! implementation (SQLite here, DynamoDB in `augur-aws`), so they cannot drift apart.
//!
//! Each check panics with a message on failure. `prefix` keeps the suite's studies
//! apart from anything else in the store.

use crate::{StoreError, TrialStore, Written};
use augur_model::{
    Expect, Params, Set, Study, StudyRecord, StudyState, Trial, TrialState, TrialUpdate, Value,
};
use std::path::Path;
use std::sync::Arc;

mod beats;
mod records;
pub use beats::heartbeats;
pub use records::{leases, racing_study_changes, studies, submissions};

/// A small active study named `name`, for store tests.
pub fn record(name: &str) -> StudyRecord {
    let spec = Study::parse(
        &format!("name='{name}'\nobjective={{metric='m'}}\ntrials=5\n[run]\nscript='true'\n"),
        "conformance.toml",
        Path::new("."),
    )
    .expect("conformance study");
    StudyRecord {
        name: name.into(),
        spec,
        state: StudyState::Active,
        created_ms: 1,
        updated_ms: 1,
        drive: None,
        bounds: Default::default(),
        reason: None,
    }
}

/// Runs every check.
pub async fn run_all(store: Arc<dyn TrialStore>, prefix: &str) {
    studies(store.as_ref(), &format!("{prefix}-studies")).await;
    ids_and_slots(store.as_ref(), &format!("{prefix}-ids")).await;
    conditional_writes(store.as_ref(), &format!("{prefix}-cas")).await;
    changes(store.as_ref(), &format!("{prefix}-changes")).await;
    heartbeats(store.as_ref(), &format!("{prefix}-beats")).await;
    racing_launches(store.clone(), &format!("{prefix}-race")).await;
    racing_study_changes(store.clone(), &format!("{prefix}-bounds")).await;
    listing_many(store.as_ref(), &format!("{prefix}-many")).await;
    deletion(store.as_ref(), &format!("{prefix}-delete")).await;
    leases(store.as_ref(), &format!("{prefix}-lease")).await;
    submissions(store.as_ref(), &format!("{prefix}-submit")).await;
}

/// Trial ids are a per-study sequence from 1; one record per slot.
pub async fn ids_and_slots(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    let mut p = Params::new();
    p.insert("x".into(), Value::Int(3));
    p.insert("act".into(), Value::Str("relu".into()));
    let (a, created) = s
        .create_trial(&Trial::new(name, 0, 0, 0, p.clone(), 10))
        .await
        .expect("a");
    assert!(created);
    let (b, _) = s
        .create_trial(&Trial::new(name, 0, 0, 1, p.clone(), 10))
        .await
        .expect("b");
    let mut ds = Trial::new(name, 0, 0, 0, Params::new(), 10);
    ds.dataset = Some("data-3".into());
    let (d, _) = s.create_trial(&ds).await.expect("dataset");
    assert_eq!((a.id, b.id, d.id), (1, 2, 3));
    let (again, created) = s
        .create_trial(&Trial::new(name, 0, 0, 0, Params::new(), 99))
        .await
        .expect("again");
    assert!(!created, "a slot holds one trial");
    assert_eq!(
        (again.id, again.created_ms, &again.params),
        (1, 10, &p),
        "the stored trial comes back intact"
    );
    let (ds2, created) = s.create_trial(&ds).await.expect("dataset again");
    assert!(!created && ds2.id == 3);
    let got = s.get_trial(name, 1).await.expect("get").expect("trial");
    assert_eq!(got.params["x"], Value::Int(3), "integers stay integers");
    assert_eq!(s.get_trial(name, 42).await.expect("get"), None);
    assert!(matches!(
        s.create_trial(&Trial::new(
            &format!("{name}-absent"),
            0,
            0,
            0,
            Params::new(),
            0
        ))
        .await,
        Err(StoreError::NoStudy { .. })
    ));
}

/// Writes are conditional on state and attempt (the fencing token).
pub async fn conditional_writes(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    s.create_trial(&Trial::new(name, 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    let start = TrialUpdate {
        state: Some(TrialState::Starting),
        launched_ms: Set::To(7),
        ..Default::default()
    };
    let t = s
        .update_trial(name, 1, &Expect::state(TrialState::Pending, 1), &start)
        .await
        .expect("start")
        .ok()
        .expect("applied");
    assert_eq!((t.state, t.launched_ms), (TrialState::Starting, Some(7)));
    match s
        .update_trial(name, 1, &Expect::state(TrialState::Pending, 1), &start)
        .await
        .expect("again")
    {
        Written::Conflict(Some(now)) => assert_eq!(
            now.state,
            TrialState::Starting,
            "a conflict returns the record as it is"
        ),
        other => panic!("second launch must conflict: {other:?}"),
    }
    let run = TrialUpdate::running("host:1", 3, 8, Some("log".into()));
    assert!(
        s.update_trial(name, 1, &Expect::state(TrialState::Starting, 2), &run)
            .await
            .expect("stale")
            .ok()
            .is_none(),
        "another attempt is fenced off"
    );
    let t = s
        .update_trial(name, 1, &Expect::state(TrialState::Starting, 1), &run)
        .await
        .expect("run")
        .ok()
        .expect("applied");
    assert_eq!(
        (t.runs, t.machine.as_deref(), t.turn),
        (1, Some("host:1"), 3)
    );
    let mut m = std::collections::BTreeMap::new();
    m.insert("loss".to_string(), 0.5);
    let beat = TrialUpdate {
        heartbeat_ms: Some(9),
        metrics: Some(m),
        ..Default::default()
    };
    let t = s
        .update_trial(name, 1, &Expect::state(TrialState::Running, 1), &beat)
        .await
        .expect("beat")
        .ok()
        .expect("applied");
    assert_eq!((t.heartbeat_ms, t.metrics["loss"]), (Some(9), 0.5));
    let back = TrialUpdate {
        state: Some(TrialState::Pending),
        ..Default::default()
    };
    assert!(matches!(
        s.update_trial(name, 1, &Expect::state(TrialState::Running, 1), &back)
            .await,
        Err(StoreError::IllegalTransition { .. })
    ));
    assert!(matches!(
        s.update_trial(name, 77, &Expect::state(TrialState::Pending, 1), &start)
            .await
            .expect("absent"),
        Written::Conflict(None)
    ));
    let any = Expect::any_of(&[TrialState::Starting, TrialState::Running], 1);
    let lost = TrialUpdate {
        state: Some(TrialState::Lost),
        error: Set::To("gone".into()),
        ..Default::default()
    };
    let t = s
        .update_trial(name, 1, &any, &lost)
        .await
        .expect("lost")
        .ok()
        .expect("applied");
    assert_eq!(
        (t.state, t.error.as_deref()),
        (TrialState::Lost, Some("gone"))
    );

    // Pruning: the orchestrator ends a running attempt; the agent's next heartbeat
    // conflicts and sees why; a pruned trial is final.
    s.create_trial(&Trial::new(name, 0, 1, 0, Params::new(), 0))
        .await
        .expect("trial 2");
    for (from, up) in [
        (TrialState::Pending, start.clone()),
        (TrialState::Starting, run.clone()),
    ] {
        s.update_trial(name, 2, &Expect::state(from, 1), &up)
            .await
            .expect("advance")
            .ok()
            .expect("applied");
    }
    let prune = TrialUpdate {
        state: Some(TrialState::Pruned),
        finished_ms: Set::To(10),
        error: Set::To("asha: not in the best third".into()),
        ..Default::default()
    };
    s.update_trial(name, 2, &Expect::state(TrialState::Running, 1), &prune)
        .await
        .expect("prune")
        .ok()
        .expect("applied");
    match s
        .update_trial(name, 2, &Expect::state(TrialState::Running, 1), &beat)
        .await
        .expect("late beat")
    {
        Written::Conflict(Some(now)) => assert_eq!(
            (now.state, now.error.as_deref()),
            (TrialState::Pruned, Some("asha: not in the best third"))
        ),
        other => panic!("a heartbeat after pruning must conflict: {other:?}"),
    }
    assert!(matches!(
        s.update_trial(name, 2, &Expect::state(TrialState::Pruned, 1), &back)
            .await,
        Err(StoreError::IllegalTransition { .. })
    ));
}

/// `changed_trials` returns at least what changed since a mark, and a new mark.
pub async fn changes(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    for r in 0..3 {
        s.create_trial(&Trial::new(name, 0, 0, r, Params::new(), 0))
            .await
            .expect("trial");
    }
    let (all, mark) = s
        .changed_trials(name, 0, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    let up = TrialUpdate {
        state: Some(TrialState::Starting),
        ..Default::default()
    };
    s.update_trial(name, 2, &Expect::state(TrialState::Pending, 1), &up)
        .await
        .expect("update");
    let (since, _) = s
        .changed_trials(name, mark, &augur_model::SeriesKeep::Whole)
        .await
        .expect("changes");
    let two = since
        .iter()
        .find(|t| t.id == 2)
        .expect("the changed trial is reported");
    assert_eq!(two.state, TrialState::Starting);
}

/// Many writers racing to launch one trial: exactly one wins.
pub async fn racing_launches(s: Arc<dyn TrialStore>, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    s.create_trial(&Trial::new(name, 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let up = TrialUpdate {
                    state: Some(TrialState::Starting),
                    machine: Set::To(format!("m{i}")),
                    ..Default::default()
                };
                s.update_trial(&name, 1, &Expect::state(TrialState::Pending, 1), &up)
                    .await
                    .expect("race")
                    .ok()
                    .is_some()
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        if t.await.expect("join") {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one launch wins");
    // And racing creates of one slot make one record.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                s.create_trial(&Trial::new(&name, 0, 5, 0, Params::new(), 0))
                    .await
                    .expect("create")
                    .0
                    .id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one record per slot: {ids:?}");
    assert_eq!(s.list_trials(name).await.expect("list").len(), 2);
}

/// Listing many trials (more than a page) returns all of them, in id order.
pub async fn listing_many(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("study");
    for i in 0..40 {
        let mut p = Params::new();
        p.insert("pad".into(), Value::Str("x".repeat(200)));
        s.create_trial(&Trial::new(name, 0, i, 0, p, 0))
            .await
            .expect("trial");
    }
    let all = s.list_trials(name).await.expect("list");
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
}

/// Deleting a study removes it and its trials, and nothing else.
pub async fn deletion(s: &dyn TrialStore, name: &str) {
    let keep = format!("{name}-keep");
    for n in [name, keep.as_str()] {
        s.create_study(&record(n)).await.expect("study");
        s.create_trial(&Trial::new(n, 0, 0, 0, Params::new(), 0))
            .await
            .expect("trial");
    }
    assert!(s.delete_study(name).await.expect("delete"));
    assert_eq!(s.get_study(name).await.expect("get"), None);
    assert!(s.list_trials(name).await.expect("list").is_empty());
    assert!(!s.delete_study(name).await.expect("delete again"));
    assert_eq!(s.list_trials(&keep).await.expect("list").len(), 1);
    // A deleted study's name can be used afresh, with ids from 1 again.
    s.create_study(&record(name)).await.expect("again");
    let (t, _) = s
        .create_trial(&Trial::new(name, 0, 0, 0, Params::new(), 0))
        .await
        .expect("trial");
    assert_eq!(t.id, 1);
}
