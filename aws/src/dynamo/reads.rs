//! A study's trials as a driver reads them: whole (a consistent query, with the
//! running attempts' last beats laid over them) or what changed since a mark (the
//! changes index), each with as much of its series as the reader keeps.

use super::items::{decode_trials, mark, unmark};
use super::DynamoStore;
use augur_model::{Millis, SeriesKeep, Trial};
use augur_store::Result;
use std::sync::atomic::Ordering;

impl DynamoStore {
    /// Every trial of `study`, consistent, with its running attempts' last beats laid
    /// over it and as much of its series as `keep` keeps.
    pub(super) async fn read_trials(&self, study: &str, keep: &SeriesKeep) -> Result<Vec<Trial>> {
        let pk = self.trials_pk(study).await?;
        let trials = decode_trials(study, &self.query(&pk, Some("trial#")).await?, keep)?;
        let mut trials = self.vouched(study, trials).await?;
        self.with_beats(study, &mut trials).await?;
        // A beat's readings join the series: slimmed as the record's were.
        for t in &mut trials {
            keep.slim(t);
        }
        Ok(trials)
    }

    /// What changed since the mark, from the changes index, looking back
    /// [`lookback`](Self::lookback) before it (a superset: the caller's cache takes
    /// the same trial twice). A whole consistent read at first, every
    /// [`full_read_every`](Self::full_read_every), or without the index.
    pub(super) async fn read_changed(
        &self,
        study: &str,
        since: u64,
        keep: &SeriesKeep,
    ) -> Result<(Vec<Trial>, u64)> {
        let now = augur_store::now_ms();
        let minute = (now / 60_000) as u64;
        let (read_ms, full_minute) = unmark(since);
        let every = (self.full_read_every.as_secs() / 60).max(1);
        let due = since == 0
            || self.no_index.load(Ordering::Relaxed)
            || (minute.wrapping_sub(full_minute) & ((1 << 22) - 1)) >= every;
        if !due {
            let from = read_ms - self.lookback.as_millis() as Millis;
            let pk = self.trials_pk(study).await?;
            if let Some(items) = self.query_changes(&pk, from).await? {
                let trials = decode_trials(study, &items, keep)?;
                let trials = self.vouched(study, trials).await?;
                return Ok((trials, mark(now, full_minute)));
            }
            self.no_index.store(true, Ordering::Relaxed);
        }
        Ok((self.read_trials(study, keep).await?, mark(now, minute)))
    }
}
