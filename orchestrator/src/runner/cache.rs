//! What a driver remembers of its study between passes, and what serverless
//! ticks keep between invocations.

use augur_model::{Beat, KeptBeats, Millis, Trial, TrialState};
use std::collections::HashMap;

/// Drivers' caches kept between serverless ticks in one process (an
/// augur-lambda), by study name and creation time, at most `budget` trials in all:
/// past it, the largest other studies' caches go (their next tick reads them whole)
/// rather than the process running out of memory.
pub struct TickCaches {
    kept: std::sync::Mutex<HashMap<(String, Millis), Cache>>,
    budget: usize,
}

impl Default for TickCaches {
    fn default() -> TickCaches {
        TickCaches::with_budget(usize::MAX)
    }
}

/// A kept trial's heap, about (`augur-sim --serverless` measures 1.56 KB).
pub const TRIAL_BYTES: usize = 1_600;

impl TickCaches {
    pub fn with_budget(trials: usize) -> TickCaches {
        TickCaches {
            kept: Default::default(),
            budget: trials,
        }
    }

    /// The budget for a process of `memory_mb`: half of what is left after 64 MB
    /// for the process itself (a release `augur tick` peaks at ~19 MB, measured in
    /// tests/tests/serverless.rs), at [`TRIAL_BYTES`].
    pub fn for_memory(memory_mb: usize) -> TickCaches {
        let spare = memory_mb.saturating_sub(64) * 1024 * 1024 / 2;
        TickCaches::with_budget(spare / TRIAL_BYTES)
    }

    pub(super) fn take(&self, key: &(String, Millis)) -> Cache {
        self.kept
            .lock()
            .ok()
            .and_then(|mut m| m.remove(key))
            .unwrap_or_default()
    }
    pub(super) fn put(&self, key: (String, Millis), cache: Cache) {
        let Ok(mut m) = self.kept.lock() else {
            return;
        };
        m.insert(key.clone(), cache);
        let mut total: usize = m.values().map(|c| c.trials.len()).sum();
        while total > self.budget {
            let largest = m
                .iter()
                .filter(|(k, _)| **k != key)
                .max_by_key(|(_, c)| c.trials.len())
                .map(|(k, c)| (k.clone(), c.trials.len()));
            let Some((k, n)) = largest else { break };
            m.remove(&k);
            total -= n;
        }
    }
    /// How many trials the kept caches hold.
    pub fn trials(&self) -> usize {
        self.kept
            .lock()
            .map(|m| m.values().map(|c| c.trials.len()).sum())
            .unwrap_or(0)
    }
    /// Drops every kept cache (the next tick of each study reads it whole).
    pub fn clear(&self) {
        if let Ok(mut m) = self.kept.lock() {
            m.clear();
        }
    }
    /// How many studies have a cache kept.
    pub fn len(&self) -> usize {
        self.kept.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The trials of one study as last read, kept in id order.
#[derive(Default)]
pub(super) struct Cache {
    pub(super) trials: Vec<Trial>,
    index: HashMap<u64, usize>,
    /// Where the next incremental read of the store starts.
    pub(super) mark: u64,
    /// The last beat read of each running trial whose store keeps beats apart.
    beats: KeptBeats,
    /// When beats were last read.
    pub(super) beats_read_ms: Millis,
    /// The last point proposed (datasets aside), kept as trials are put.
    last_point: Option<LastPoint>,
    /// The ids of the trials not [closed](crate::reconcile::closed), kept as trials
    /// are put: what a pass acts on ([`View::open`](crate::reconcile::View::open)).
    open: std::collections::BTreeSet<u64>,
}

/// The study's last point: its replicates so far and its parameters.
pub(super) struct LastPoint {
    pub(super) point: u64,
    pub(super) replicates: std::collections::BTreeSet<u32>,
    pub(super) params: augur_model::Params,
}

impl Cache {
    /// The trials an oracle learns from (datasets are not results).
    pub(super) fn history(&self) -> Vec<&Trial> {
        self.trials.iter().filter(|t| !t.is_dataset()).collect()
    }

    /// The last point proposed, if any.
    pub(super) fn last_point(&self) -> Option<&LastPoint> {
        self.last_point.as_ref()
    }

    /// Trial `id`, as last read.
    pub(super) fn get(&self, id: u64) -> Option<&Trial> {
        self.index.get(&id).map(|&i| &self.trials[i])
    }

    /// The trials not closed, in id order.
    pub(super) fn open_trials(&self) -> Vec<&Trial> {
        self.open.iter().filter_map(|&id| self.get(id)).collect()
    }

    /// The ids of the running trials (whose beats a store may keep apart).
    pub(super) fn running(&self) -> Vec<u64> {
        self.open_trials()
            .into_iter()
            .filter(|t| t.state == TrialState::Running)
            .map(|t| t.id)
            .collect()
    }

    /// Keeps beats and lays each over its trial.
    pub(super) fn absorb(&mut self, beats: Vec<Beat>) {
        for b in beats {
            let i = self.index.get(&b.id).copied();
            self.beats.keep(b);
            if let Some(i) = i {
                self.beats.lay(&mut self.trials[i]);
            }
        }
    }

    /// Puts a trial as read (with its kept beat laid over it, if it still runs); its
    /// state before, if it was known.
    pub(super) fn upsert(&mut self, mut t: Trial) -> Option<TrialState> {
        self.beats.lay(&mut t);
        self.note_point(&t);
        match crate::reconcile::closed(&t) {
            true => self.open.remove(&t.id),
            false => self.open.insert(t.id),
        };
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

impl Cache {
    /// Keeps the last point up to date with `t` (the first trial of a point gives
    /// its parameters, which its replicates share).
    fn note_point(&mut self, t: &Trial) {
        if t.is_dataset() {
            return;
        }
        match &mut self.last_point {
            Some(last) if last.point == t.point => {
                last.replicates.insert(t.replicate);
            }
            Some(last) if last.point > t.point => {}
            _ => {
                self.last_point = Some(LastPoint {
                    point: t.point,
                    replicates: [t.replicate].into(),
                    params: t.params.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(trials: u64) -> Cache {
        let mut c = Cache::default();
        for id in 1..=trials {
            c.upsert(Trial::new("s", id, 0, 0, Default::default(), 0));
        }
        c
    }

    #[test]
    fn the_last_point_is_kept_as_trials_are_put_in_any_order() {
        let mut c = Cache::default();
        let at = |id, point, replicate| {
            let mut t = Trial::new("s", id, point, replicate, Default::default(), 0);
            t.params
                .insert("x".into(), augur_model::Value::Int(point as i64));
            t
        };
        assert!(c.last_point().is_none());
        c.upsert(at(2, 1, 0));
        c.upsert(at(1, 0, 0));
        c.upsert(at(3, 1, 1));
        let last = c.last_point().expect("a point");
        assert_eq!((last.point, last.replicates.len()), (1, 2));
        assert_eq!(last.params.get("x"), Some(&augur_model::Value::Int(1)));
        // A dataset is no point; a later point starts afresh.
        let mut data = at(4, 9, 0);
        data.dataset = Some("d".into());
        c.upsert(data);
        c.upsert(at(5, 2, 0));
        let last = c.last_point().expect("a point");
        assert_eq!((last.point, last.replicates.len()), (2, 1));
    }

    #[test]
    fn past_their_budget_tick_caches_drop_the_largest_other_studies() {
        let caches = TickCaches::with_budget(100);
        caches.put(("a".into(), 1), cache(60));
        caches.put(("b".into(), 1), cache(30));
        assert_eq!((caches.len(), caches.trials()), (2, 90));
        // c's 50 pass the budget: a (the largest other) goes, b stays.
        caches.put(("c".into(), 1), cache(50));
        assert_eq!((caches.len(), caches.trials()), (2, 80));
        assert!(caches.take(&("a".into(), 1)).trials.is_empty());
        // One study over the budget alone is kept: it is the one being driven.
        caches.put(("d".into(), 1), cache(150));
        assert_eq!(caches.trials(), 150);
        // 512 MB: (512 - 64) MB / 2 at 1,600 bytes a trial.
        assert_eq!(TickCaches::for_memory(512).budget, 146_800);
    }
}
