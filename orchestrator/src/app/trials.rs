//! The status server's trials: each study's, kept between requests and refreshed
//! from the store's change index (`changed_trials`), as drivers do. Pages poll
//! every 5 s and Prometheus scrapes `/metrics`: once warm, a request reads what
//! changed since the last one, not every trial of every study, and the beats of
//! the running ones where the store keeps them apart.

use augur_model::{KeptBeats, Millis, SeriesKeep, StudyRecord, Trial, TrialState};
use augur_store::{StoreError, TrialStore};
use std::collections::{BTreeMap, HashMap};

/// One study's trials as last read.
struct StudyRead {
    /// The study's creation time: a study deleted and made again is read afresh.
    created_ms: Millis,
    /// Where the next read of the change index starts.
    mark: u64,
    trials: BTreeMap<u64, Trial>,
    /// The last beat read of each running trial.
    beats: KeptBeats,
}

/// Every study's trials, as last read.
#[derive(Default)]
pub struct TrialCache(tokio::sync::Mutex<HashMap<String, StudyRead>>);

impl TrialCache {
    /// The trials of `rec`'s study, in id order, brought up to date: with the
    /// running trials' beats read afresh if `beats` (a page shows their heartbeats
    /// and metrics; `/metrics` counts states and cost, which beats do not change).
    pub async fn trials(
        &self,
        store: &dyn TrialStore,
        rec: &StudyRecord,
        beats: bool,
    ) -> Result<Vec<Trial>, StoreError> {
        let mut all = self.0.lock().await;
        let fresh = || StudyRead {
            created_ms: rec.created_ms,
            mark: 0,
            trials: BTreeMap::new(),
            beats: KeptBeats::default(),
        };
        let kept = all.entry(rec.name.clone()).or_insert_with(fresh);
        if kept.created_ms != rec.created_ms {
            *kept = fresh();
        }
        let (changed, mark) = store
            .changed_trials(&rec.name, kept.mark, &SeriesKeep::Whole)
            .await?;
        for mut t in changed {
            kept.beats.lay(&mut t);
            kept.trials.insert(t.id, t);
        }
        kept.mark = mark;
        let running: Vec<u64> = kept
            .trials
            .values()
            .filter(|t| beats && t.state == TrialState::Running)
            .map(|t| t.id)
            .collect();
        for b in store.beats(&rec.name, &running).await? {
            let id = b.id;
            kept.beats.keep(b);
            if let Some(t) = kept.trials.get_mut(&id) {
                kept.beats.lay(t);
            }
        }
        Ok(kept.trials.values().cloned().collect())
    }

    /// Forgets studies no longer recorded.
    pub async fn keep_only(&self, names: &[String]) {
        self.0.lock().await.retain(|n, _| names.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{Expect, Params, Study, StudyState, TrialState, TrialUpdate};
    use augur_store::SqliteStore;

    #[tokio::test]
    async fn a_warm_cache_reads_only_what_changed_and_a_recreated_study_afresh() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("augur.db")).expect("store");
        let spec = Study::parse(
            "name='s'\nobjective={metric='m'}\ntrials=3\n[run]\nscript='true'\n",
            "s.toml",
            std::path::Path::new("."),
        )
        .expect("study");
        let rec = StudyRecord {
            name: "s".into(),
            spec,
            state: StudyState::Active,
            created_ms: 1,
            updated_ms: 1,
            drive: None,
            bounds: Default::default(),
            reason: None,
        };
        store.create_study(&rec).await.expect("study");
        for p in 0..3 {
            store
                .create_trial(&Trial::new("s", 0, p, 0, Params::new(), 1))
                .await
                .expect("trial");
        }
        let cache = TrialCache::default();
        assert_eq!(
            cache.trials(&store, &rec, true).await.expect("read").len(),
            3
        );
        let up = TrialUpdate {
            state: Some(TrialState::Cancelled),
            ..Default::default()
        };
        store
            .update_trial("s", 2, &Expect::state(TrialState::Pending, 1), &up)
            .await
            .expect("write");
        let got = cache.trials(&store, &rec, true).await.expect("read");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].state, TrialState::Cancelled);
        let mark = cache.0.lock().await["s"].mark;
        assert!(mark > 0);
        // A study of the same name made again: its own trials only.
        let again = StudyRecord {
            created_ms: 2,
            ..rec.clone()
        };
        let got = cache.trials(&store, &again, true).await.expect("read");
        assert_eq!(got.len(), 3, "read afresh from change 0");
        cache.keep_only(&[]).await;
        assert!(cache.0.lock().await.is_empty());
    }
}
