//! Only trials a driver proposed reach a driver. A trial's record lives in its
//! study's trial partition, which anything holding the worker role may write (a
//! trial script; IAM cannot tie an instance's credentials to its study). Its slot
//! guard, written in the same transaction as the trial by
//! [`create_trial`](augur_store::TrialStore::create_trial), lives in the study's own
//! partition, which the worker role may not write, and names the trial's id and the
//! digest of what was proposed ([`proposal_digest`]). A trial no guard vouches for
//! (planted, or its point or parameters rewritten) is set aside with a warning:
//! never launched, never counted, never copied into a replicate.

use super::items::{get_n, get_s, proposal_digest};
use super::DynamoStore;
use augur_model::Trial;
use augur_store::Result;
use std::collections::HashMap;

/// The guards of one study: trial id -> the digest of its proposal (`None` for a
/// guard written before digests were kept: it vouches for the id alone).
pub(super) type Guards = HashMap<u64, Option<String>>;

impl DynamoStore {
    /// `trials` without those no guard of the study vouches for. The guards are
    /// read once per study and again when a trial the cache does not know appears
    /// (a guard never changes once written).
    pub(super) async fn vouched(&self, study: &str, trials: Vec<Trial>) -> Result<Vec<Trial>> {
        if !self.vouch {
            return Ok(trials);
        }
        let known = |g: &Guards| trials.iter().all(|t| g.contains_key(&t.id));
        let cached = self.guards.lock().ok().and_then(|g| g.get(study).cloned());
        let guards = match cached {
            Some(g) if known(&g) => g,
            _ => {
                let read = self.read_guards(study).await?;
                if let Ok(mut all) = self.guards.lock() {
                    all.insert(study.to_string(), read.clone());
                }
                read
            }
        };
        Ok(trials
            .into_iter()
            .filter(|t| {
                let holds = match guards.get(&t.id) {
                    Some(Some(d)) => *d == proposal_digest(t),
                    Some(None) => true,
                    None => false,
                };
                if !holds {
                    tracing::warn!(study, trial = t.id, "set aside: a trial record no proposal of augur's vouches for (written by something else)");
                }
                holds
            })
            .collect())
    }

    async fn read_guards(&self, study: &str) -> Result<Guards> {
        let items = self.query(study, Some("slot#")).await?;
        Ok(items
            .iter()
            .filter_map(|g| {
                let id = get_n(g, "trial_id")?;
                Some((id, get_s(g, "proposal").map(String::from)))
            })
            .collect())
    }

    /// A store that hides trials no proposal vouches for: a driver's (the CLI's,
    /// the tick's). An agent's store does not (the worker role may not read the
    /// study's partition whole; its own trial was given it by a driver).
    pub fn vouching(mut self) -> DynamoStore {
        self.vouch = true;
        self
    }
}
