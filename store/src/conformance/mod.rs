//! The behaviour every [`TrialStore`] must have, as one suite run against each
//! implementation (SQLite here, DynamoDB in `augur-aws`), so they cannot drift apart.
//!
//! Each check panics with a message on failure. `prefix` keeps the suite's studies
//! apart from anything else in the store.

use crate::{Lease, StoreError, TrialStore, Written};
use augur_model::{
    Expect, Params, Study, StudyRecord, StudyState, Trial, TrialState, TrialUpdate, Value,
};
use std::path::Path;
use std::sync::Arc;

mod beats;
pub use beats::heartbeats;

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

/// Leases: one live holder at a time; renewals; expiry; release only by the holder;
/// racing takers get exactly one lease.
pub async fn leases(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("create");
    let a = s.take_lease(name, "a", 1_000, 2_000).await.expect("take");
    assert!(
        a.held_by("a") && a.until == 2_000,
        "a free lease is taken: {a:?}"
    );
    let b = s.take_lease(name, "b", 1_500, 2_500).await.expect("take");
    assert!(
        b.held_by("a") && b.until == 2_000,
        "a live lease is kept: {b:?}"
    );
    let a2 = s.take_lease(name, "a", 1_900, 3_000).await.expect("renew");
    assert!(
        a2.held_by("a") && a2.until == 3_000,
        "the holder renews: {a2:?}"
    );
    s.release_lease(name, "b").await.expect("release by other");
    let b2 = s.take_lease(name, "b", 2_000, 4_000).await.expect("take");
    assert!(b2.held_by("a"), "only the holder releases: {b2:?}");
    let b3 = s.take_lease(name, "b", 3_000, 4_000).await.expect("take");
    assert!(b3.held_by("b"), "an expired lease is taken over: {b3:?}");
    s.release_lease(name, "b").await.expect("release");
    let c = s.take_lease(name, "c", 3_001, 5_000).await.expect("take");
    assert!(c.held_by("c"), "a released lease is free: {c:?}");
    s.release_lease(name, "c").await.expect("release");
    // Many takers at once, at the same instant: exactly one wins.
    let wins = futures_like_join(
        (0..8)
            .map(|i| async move {
                s.take_lease(name, &format!("r{i}"), 10_000, 20_000)
                    .await
                    .expect("race")
                    .held_by(&format!("r{i}"))
            })
            .collect(),
    )
    .await;
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "one racer wins: {wins:?}"
    );
    assert!(s.delete_study(name).await.expect("delete"));
    let d = s.take_lease(name, "d", 10_001, 20_000).await.expect("take");
    assert!(d.held_by("d"), "deleting a study drops its lease: {d:?}");
    // `augur gc`: leases are listed, and one is expired only if nobody renewed it.
    let listed = s.leases().await.expect("leases");
    let mine: Vec<&Lease> = listed
        .iter()
        .filter(|(st, _)| st == name)
        .map(|(_, l)| l)
        .collect();
    assert_eq!(mine, vec![&d], "{listed:?}");
    let renewed = s
        .take_lease(name, "d", 10_002, 30_000)
        .await
        .expect("renew");
    assert!(
        !s.expire_lease(name, &d).await.expect("expire"),
        "renewed meanwhile"
    );
    assert!(s.expire_lease(name, &renewed).await.expect("expire"));
    assert!(!s
        .leases()
        .await
        .expect("leases")
        .iter()
        .any(|(st, _)| st == name));
    let e = s.take_lease(name, "e", 10_003, 20_000).await.expect("take");
    assert!(e.held_by("e"), "an expired lease is free: {e:?}");
    s.release_lease(name, "e").await.expect("release");
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_like_join<F: std::future::Future<Output = bool>>(fs: Vec<F>) -> Vec<bool> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<bool>> = vec![None; set.len()];
    std::future::poll_fn(|cx| {
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                    out[i] = Some(v);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|v| v.unwrap_or(false)).collect()
}

/// Submissions: set, idempotent, cleared, and cleared by deletion.
pub async fn submissions(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("create");
    let has = |v: Vec<String>| v.iter().any(|n| n == name);
    assert!(!has(s.submitted().await.expect("list")));
    s.set_submitted(name, true).await.expect("submit");
    s.set_submitted(name, true).await.expect("submit again");
    let listed = s.submitted().await.expect("list");
    assert_eq!(
        listed.iter().filter(|n| *n == name).count(),
        1,
        "{listed:?}"
    );
    s.set_submitted(name, false).await.expect("withdraw");
    assert!(!has(s.submitted().await.expect("list")));
    s.set_submitted(name, true).await.expect("submit");
    assert!(s.delete_study(name).await.expect("delete"));
    assert!(
        !has(s.submitted().await.expect("list")),
        "deleting a study withdraws it"
    );
    assert!(
        s.list_studies()
            .await
            .expect("list")
            .iter()
            .all(|r| r.name != name),
        "the submission is not a study"
    );
}

/// Studies: create-if-absent, replace, list, conditional state changes.
pub async fn studies(s: &dyn TrialStore, name: &str) {
    let rec = record(name);
    assert_eq!(s.create_study(&rec).await.expect("create"), rec);
    let mut other = rec.clone();
    other.created_ms = 99;
    assert_eq!(
        s.create_study(&other)
            .await
            .expect("create again")
            .created_ms,
        1,
        "create keeps the existing study"
    );
    assert_eq!(s.get_study(name).await.expect("get"), Some(rec.clone()));
    assert!(s
        .list_studies()
        .await
        .expect("list")
        .iter()
        .any(|r| r.name == name));
    assert_eq!(
        s.study_state(name).await.expect("state"),
        Some(StudyState::Active)
    );
    assert!(s
        .set_study_state(name, &[StudyState::Active], StudyState::Stopping, 5)
        .await
        .expect("set"));
    assert!(
        !s.set_study_state(name, &[StudyState::Active], StudyState::Done, 6)
            .await
            .expect("set"),
        "condition on the state"
    );
    let got = s.get_study(name).await.expect("get").expect("study");
    assert_eq!((got.state, got.updated_ms), (StudyState::Stopping, 5));
    let mut changed = got.clone();
    changed.spec.trials = 50;
    changed.state = StudyState::Active;
    s.put_study(&changed).await.expect("put");
    assert_eq!(
        s.get_study(name)
            .await
            .expect("get")
            .expect("study")
            .spec
            .trials,
        50
    );
    // Each state reads back as written (a store may keep it apart from the record).
    let all = StudyState::ALL;
    for to in all.into_iter().rev() {
        assert!(s.set_study_state(name, &all, to, 7).await.expect("set"));
        assert_eq!(s.study_state(name).await.expect("state"), Some(to));
    }
    assert_eq!(
        s.get_study(&format!("{name}-absent")).await.expect("get"),
        None
    );
    assert_eq!(
        s.study_state(&format!("{name}-absent"))
            .await
            .expect("state"),
        None
    );
    assert!(matches!(
        s.set_study_state(
            &format!("{name}-absent"),
            &[StudyState::Active],
            StudyState::Done,
            1
        )
        .await,
        Err(StoreError::NoStudy(_))
    ));
}

/// A study's record changed by 8 writers at once (`update_study`, as drivers record
/// the bounds on a study's launches): every change lands, none overwrites another
/// (each is idempotent: a store may apply one again after a lost answer); a change
/// that changes nothing writes nothing; each field reads back.
pub async fn racing_study_changes(s: Arc<dyn TrialStore>, name: &str) {
    s.create_study(&record(name)).await.expect("create");
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let change = move |rec: &mut StudyRecord| {
                    rec.bounds.failed_boot(i, 1, "gone");
                    true
                };
                s.update_study(&name, Box::new(change)).await
            })
        })
        .collect();
    for w in writers {
        assert!(w.await.expect("join").expect("update"));
    }
    let got = s.get_study(name).await.expect("get").expect("study");
    assert_eq!(got.bounds.failed_boots.len(), 8, "{:?}", got.bounds);
    assert!(!s
        .update_study(name, Box::new(|_: &mut StudyRecord| false))
        .await
        .expect("no change"));
    let stop = |rec: &mut StudyRecord| {
        rec.state = StudyState::Stopped;
        rec.reason = Some("its first 3 machines ended before their agent reported".into());
        rec.bounds.no_room(10, "no capacity", |_| 5);
        true
    };
    assert!(s.update_study(name, Box::new(stop)).await.expect("stop"));
    let got = s.get_study(name).await.expect("get").expect("study");
    assert_eq!(
        s.study_state(name).await.expect("state"),
        Some(StudyState::Stopped)
    );
    assert!(got.reason.is_some_and(|r| r.contains("first 3 machines")));
    assert_eq!(
        (got.bounds.no_room_since_ms, got.bounds.no_room_until_ms),
        (Some(10), 15)
    );
    assert!(matches!(
        s.update_study(
            &format!("{name}-absent"),
            Box::new(|_: &mut StudyRecord| true)
        )
        .await,
        Err(StoreError::NoStudy(_))
    ));
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
        Err(StoreError::NoStudy(_))
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
        launched_ms: Some(Some(7)),
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
        error: Some(Some("gone".into())),
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
        finished_ms: Some(Some(10)),
        error: Some(Some("asha: not in the best third".into())),
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
    let (all, mark) = s.changed_trials(name, 0).await.expect("changes");
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    let up = TrialUpdate {
        state: Some(TrialState::Starting),
        ..Default::default()
    };
    s.update_trial(name, 2, &Expect::state(TrialState::Pending, 1), &up)
        .await
        .expect("update");
    let (since, _) = s.changed_trials(name, mark).await.expect("changes");
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
                    machine: Some(Some(format!("m{i}"))),
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
