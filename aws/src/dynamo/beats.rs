//! Heartbeats apart from the records (see [`augur_model::beat`]): one item
//! `beat#0000000042` per trial, beside its record in the trials' partition, at most
//! 1 KB, so a heartbeat costs one write unit whatever the record's size. It has no
//! `chg`, so it stays out of the changes index: changing an index's sort key costs
//! two more writes there (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html#GSI.Writes>).
//! Readers ask for the beats of the trials they see running, eventually consistent,
//! a `BatchGetItem` of up to 100 (half a read unit each).
//!
//! Attributes: `attempt` (whose beat it is), `at` (when it beat, ms), `data` (the
//! [`Beat`] as JSON) and `stop`, the attempt whose beats must fail from now: written
//! by whatever ends a running attempt, so that its agent's next beat learns it and
//! ends the script, as a conditional write of the record would tell it.
//!
//! The record is written in full instead of the beat every
//! [`snapshot_every`](DynamoStore::snapshot_every), when the beat would not fit, and
//! at the attempt's start and end.

use super::items::*;
use super::{DynamoStore, Item};
use augur_model::{Beat, Expect, Millis, Trial, TrialState, TrialUpdate};
use augur_store::{Beaten, Result, TrialStore, Written};
use aws_sdk_dynamodb::types::ReturnValue;
use std::collections::HashMap;

/// What the agent's store remembers of an attempt it beats for.
pub(super) struct LastWrite {
    attempt: u32,
    /// When the record was last written in full.
    snapshot_ms: Millis,
    /// The newest reading that write held.
    after_ms: Millis,
    /// The attempt's metrics, series, status and checkpoint as last heard.
    known: TrialUpdate,
}

impl LastWrite {
    fn new(attempt: u32, now: Millis) -> LastWrite {
        LastWrite {
            attempt,
            snapshot_ms: now,
            after_ms: Millis::MIN,
            known: TrialUpdate::default(),
        }
    }

    fn learn(&mut self, up: &TrialUpdate) {
        let k = &mut self.known;
        if up.metrics.is_some() {
            k.metrics.clone_from(&up.metrics);
        }
        if up.series.is_some() {
            k.series.clone_from(&up.series);
        }
        if up.status.changes() {
            k.status.clone_from(&up.status);
        }
        if up.checkpoint.is_some() {
            k.checkpoint = up.checkpoint;
        }
    }
}

pub(super) fn beat_sk(id: u64) -> String {
    format!("beat#{id:010}")
}

/// A beat item as a [`Beat`] of trial `id`; `None` if it holds none (only a stop).
fn decode_beat(id: u64, item: &Item) -> Option<Beat> {
    let attempt = get_n(item, "attempt")?;
    let mut b: Beat = serde_json::from_str(get_s(item, "data")?).ok()?;
    b.id = id;
    b.attempt = u32::try_from(attempt).ok()?;
    b.at_ms = get_n(item, "at")? as Millis;
    Some(b)
}

/// Whether `update` of `t` ends its running attempt from outside: the control
/// plane's writes (lost, cancelled, pruned, a next attempt). The attempt's own
/// agent ends it with a write that carries its heartbeat, and beats no more.
pub(super) fn stops_beats(t: &Trial, update: &TrialUpdate) -> bool {
    t.state == TrialState::Running
        && update.heartbeat_ms.is_none()
        && (update.state.is_some_and(|s| s != TrialState::Running)
            || update.attempt.is_some_and(|a| a != t.attempt))
}

impl DynamoStore {
    /// [`TrialStore::heartbeat`]: the beat item, or the record when due.
    pub(super) async fn beat(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        up: &TrialUpdate,
    ) -> Result<Beaten> {
        let now = up.heartbeat_ms.unwrap_or_else(augur_store::now_ms);
        let every = self.snapshot_every.as_millis() as Millis;
        let (beat, full) = {
            let mut all = self.beating.lock().unwrap_or_else(|e| e.into_inner());
            let k = all
                .entry((study.to_string(), id))
                .or_insert_with(|| LastWrite::new(attempt, now));
            if k.attempt != attempt {
                *k = LastWrite::new(attempt, now);
            }
            k.learn(up);
            let beat = Some(&k.known)
                .filter(|_| now - k.snapshot_ms < every)
                .and_then(|known| Beat::of(known, k.after_ms));
            let full = TrialUpdate {
                heartbeat_ms: Some(now),
                ..k.known.clone()
            };
            (beat, full)
        };
        let Some(mut beat) = beat else {
            return self.snapshot(study, id, attempt, &full).await;
        };
        (beat.id, beat.attempt, beat.at_ms) = (id, attempt, now);
        if self.put_beat(study, &beat).await? {
            return Ok(Beaten::Recorded);
        }
        let now = self.read_trial(study, id).await?;
        Ok(Beaten::Moved(now.map(|(t, _)| Box::new(t))))
    }

    /// The record written in full at a heartbeat.
    async fn snapshot(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        full: &TrialUpdate,
    ) -> Result<Beaten> {
        let expect = Expect::state(TrialState::Running, attempt);
        Ok(match self.update_trial(study, id, &expect, full).await? {
            Written::Done(_) => {
                let mut all = self.beating.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(k) = all.get_mut(&(study.to_string(), id)) {
                    k.snapshot_ms = full.heartbeat_ms.unwrap_or(k.snapshot_ms);
                    let series = full.series.as_deref().unwrap_or_default();
                    k.after_ms = series.last().map_or(Millis::MIN, |p| p.t_ms);
                }
                Beaten::Recorded
            }
            Written::Conflict(now) => Beaten::Moved(now.map(Box::new)),
        })
    }

    /// Writes a beat unless a later attempt beats or its attempt was stopped;
    /// whether it was written.
    async fn put_beat(&self, study: &str, b: &Beat) -> Result<bool> {
        let pk = self.trials_pk(study).await?;
        let data = encode(&format!("{study}/{}", b.id), b)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(beat_sk(b.id)))
            .update_expression("SET #attempt = :a, #at = :at, #data = :data")
            .condition_expression(
                "(attribute_not_exists(#attempt) OR #attempt <= :a) AND (attribute_not_exists(#stop) OR #stop < :a)",
            )
            .expression_attribute_names("#attempt", "attempt")
            .expression_attribute_names("#at", "at")
            .expression_attribute_names("#data", "data")
            .expression_attribute_names("#stop", "stop")
            .expression_attribute_values(":a", n(b.attempt))
            .expression_attribute_values(":at", n(b.at_ms))
            .expression_attribute_values(":data", s(data))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }

    /// Stops attempt `attempt`'s beats (in partition `pk`); its last beat, if any.
    pub(super) async fn stop_beat(&self, pk: &str, id: u64, attempt: u32) -> Result<Option<Beat>> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(beat_sk(id)))
            .update_expression("SET #stop = :a")
            .expression_attribute_names("#stop", "stop")
            .expression_attribute_values(":a", n(attempt))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| fail(&self.table, "UpdateItem", e))?;
        Ok(out
            .attributes()
            .and_then(|old| decode_beat(id, old))
            .filter(|b| b.attempt == attempt))
    }

    /// [`TrialStore::beats`]: eventually consistent, 100 a request; one alone by
    /// `GetItem` (all an agent's role may read with).
    pub(super) async fn read_beats(&self, study: &str, ids: &[u64]) -> Result<Vec<Beat>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pk = self.trials_pk(study).await?;
        if let [id] = ids {
            let item = self.get(&pk, &beat_sk(*id), false).await?;
            return Ok(item
                .and_then(|i| decode_beat(*id, &i))
                .into_iter()
                .collect());
        }
        let keys = ids
            .iter()
            .map(|id| {
                HashMap::from([
                    ("pk".to_string(), s(&pk)),
                    ("sk".to_string(), s(beat_sk(*id))),
                ])
            })
            .collect();
        let items = self.batch_get(keys, false, "heartbeats").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let id = get_s(i, "sk")?.strip_prefix("beat#")?.parse().ok()?;
                decode_beat(id, i)
            })
            .collect())
    }

    /// Lays the beats of the running ones over `trials` (records just read).
    pub(super) async fn with_beats(&self, study: &str, trials: &mut [Trial]) -> Result<()> {
        let running: Vec<u64> = trials
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .map(|t| t.id)
            .collect();
        let beats = self.read_beats(study, &running).await?;
        let by_id: HashMap<u64, &Beat> = beats.iter().map(|b| (b.id, b)).collect();
        for t in trials.iter_mut() {
            if let Some(b) = by_id.get(&t.id) {
                t.absorb(b);
            }
        }
        Ok(())
    }
}
