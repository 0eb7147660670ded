//! What a driver remembers of its study between passes, and what warm serverless
//! ticks keep between invocations.

use augur_model::{Beat, Millis, Trial, TrialState};
use std::collections::HashMap;

/// Drivers' caches kept between serverless ticks in one process (a warm
/// augur-lambda), by study name and creation time.
#[derive(Default)]
pub struct WarmCaches(std::sync::Mutex<HashMap<(String, Millis), Cache>>);

impl WarmCaches {
    pub(super) fn take(&self, key: &(String, Millis)) -> Cache {
        self.0
            .lock()
            .ok()
            .and_then(|mut m| m.remove(key))
            .unwrap_or_default()
    }
    pub(super) fn put(&self, key: (String, Millis), cache: Cache) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, cache);
        }
    }
    /// How many studies have a cache kept.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
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
    /// The last beat read of each running trial whose store keeps beats apart: laid
    /// again over a record read later that is older.
    beats: HashMap<u64, Beat>,
    /// When beats were last read.
    pub(super) beats_read_ms: Millis,
}

impl Cache {
    /// The trials an oracle learns from (datasets are not results).
    pub(super) fn history(&self) -> Vec<&Trial> {
        self.trials.iter().filter(|t| !t.is_dataset()).collect()
    }

    /// The ids of the running trials (whose beats a store may keep apart).
    pub(super) fn running(&self) -> Vec<u64> {
        self.trials
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .map(|t| t.id)
            .collect()
    }

    /// Keeps beats and lays each over its trial.
    pub(super) fn absorb(&mut self, beats: Vec<Beat>) {
        for b in beats {
            if let Some(&i) = self.index.get(&b.id) {
                self.trials[i].absorb(&b);
            }
            self.beats.insert(b.id, b);
        }
    }

    /// Puts a trial as read (with its kept beat laid over it, if it still runs); its
    /// state before, if it was known.
    pub(super) fn upsert(&mut self, mut t: Trial) -> Option<TrialState> {
        if t.state == TrialState::Running {
            if let Some(b) = self.beats.get(&t.id) {
                t.absorb(b);
            }
        } else {
            self.beats.remove(&t.id);
        }
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
