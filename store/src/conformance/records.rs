//! The suite's checks of the study-level records: leases, submissions, study
//! records and their racing changes.

use super::record;
use crate::{Lease, StoreError, TrialStore};
use augur_model::{StudyRecord, StudyState};
use std::sync::Arc;

/// Leases: one live holder at a time; renewals; expiry; release only by the holder;
/// racing takers get exactly one lease.
pub async fn leases(s: &dyn TrialStore, name: &str) {
    s.create_study(&record(name)).await.expect("create");
    let a = s
        .take_lease(name, "a", 1_000, 2_000, 0)
        .await
        .expect("take");
    assert!(
        a.held_by("a") && a.until == 2_000,
        "a free lease is taken: {a:?}"
    );
    let b = s
        .take_lease(name, "b", 1_500, 2_500, 0)
        .await
        .expect("take");
    assert!(
        b.held_by("a") && b.until == 2_000,
        "a live lease is kept: {b:?}"
    );
    let a2 = s
        .take_lease(name, "a", 1_900, 3_000, 0)
        .await
        .expect("renew");
    assert!(
        a2.held_by("a") && a2.until == 3_000,
        "the holder renews: {a2:?}"
    );
    s.release_lease(name, "b", 0)
        .await
        .expect("release by other");
    let b2 = s
        .take_lease(name, "b", 2_000, 4_000, 0)
        .await
        .expect("take");
    assert!(b2.held_by("a"), "only the holder releases: {b2:?}");
    let b3 = s
        .take_lease(name, "b", 3_000, 4_000, 0)
        .await
        .expect("take");
    assert!(b3.held_by("b"), "an expired lease is taken over: {b3:?}");
    s.release_lease(name, "b", 0).await.expect("release");
    let c = s
        .take_lease(name, "c", 3_001, 5_000, 0)
        .await
        .expect("take");
    assert!(c.held_by("c"), "a released lease is free: {c:?}");
    s.release_lease(name, "c", 0).await.expect("release");
    // Many takers at once, at the same instant: exactly one wins.
    let wins = futures_like_join(
        (0..8)
            .map(|i| async move {
                s.take_lease(name, &format!("r{i}"), 10_000, 20_000, 0)
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
    let d = s
        .take_lease(name, "d", 10_001, 20_000, 0)
        .await
        .expect("take");
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
        .take_lease(name, "d", 10_002, 30_000, 0)
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
    let e = s
        .take_lease(name, "e", 10_003, 20_000, 0)
        .await
        .expect("take");
    assert!(e.held_by("e"), "an expired lease is free: {e:?}");
    s.release_lease(name, "e", 0).await.expect("release");
    lease_chains(s, name).await;
}

/// A lease's `since`: kept through renewals, releases and takeovers that leave no
/// gap longer than `gap`; started again after a longer one.
async fn lease_chains(s: &dyn TrialStore, name: &str) {
    let gap = 5_000;
    let f = s
        .take_lease(name, "f", 100_000, 110_000, gap)
        .await
        .expect("take");
    assert_eq!(f.since, 100_000, "after a long gap, a new chain: {f:?}");
    s.release_lease(name, "f", 105_000).await.expect("release");
    let g = s
        .take_lease(name, "g", 108_000, 120_000, gap)
        .await
        .expect("take");
    assert!(g.held_by("g"), "a released lease is free: {g:?}");
    assert_eq!(
        g.since, 100_000,
        "released 3 s before: the chain goes on: {g:?}"
    );
    let g2 = s
        .take_lease(name, "g", 115_000, 130_000, gap)
        .await
        .expect("renew");
    assert_eq!((g2.until, g2.since), (130_000, 100_000), "renewed: {g2:?}");
    let h = s
        .take_lease(name, "h", 140_000, 150_000, gap)
        .await
        .expect("take");
    assert_eq!(h.since, 140_000, "expired 10 s before: a new chain: {h:?}");
    let listed = s.leases().await.expect("leases");
    assert!(
        listed.iter().any(|(st, l)| st == name && *l == h),
        "{listed:?}"
    );
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
        Err(StoreError::NoStudy { .. })
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
        Err(StoreError::NoStudy { .. })
    ));
}
