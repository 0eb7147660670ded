//! The DynamoDB [`TrialStore`]: one table for every study.
//!
//! Items (`pk` = study name, `sk`):
//! - `study`: the study record (`data`, JSON), its `state`, `rev`, `next_id` (the
//!   atomic counter trial ids come from) and `layout`;
//! - `slot#point:3:1` / `slot#dataset:NAME`: the guard that makes one record per slot;
//! - `lease`: who drives the study (`holder`), until when and since when (`until`,
//!   `since`, ms: [`TrialStore::take_lease`]);
//!
//! in the partition `trials#NAME` ([`trial_pk`]), the study's trials:
//! - `trial#0000000042`: a trial record (`data`, JSON) with `state`, `attempt`, `rev`;
//!
//! and in the partition `#submitted`, one item `sub#NAME` per study the serverless tick
//! drives (a query, not a scan of the table, finds them).
//!
//! Trials have a partition of their own so that IAM can tell them apart by partition
//! key (`dynamodb:LeadingKeys`): a worker may write trials, not a spec, a lease or a
//! submission. Studies recorded before (no `layout` in their item) keep their trials
//! in the study's partition.
//!
//! Every conditional write is a compare-and-set: a strongly consistent read, the
//! [`Expect`] check, then a put conditional on `rev` being unchanged (re-read and
//! re-checked if another writer got there first).
use async_trait::async_trait;
use augur_model::{Beat, Expect, Millis, SeriesKeep, StudyRecord, StudyState, Trial, TrialUpdate};
use augur_store::{slot, Beaten, Lease, Result, StoreError, StudyChange, TrialStore, Written};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// A [`TrialStore`] in one DynamoDB table.
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Items per query page (small in tests, to exercise pagination).
    pub page_size: Option<i32>,
    /// How far before its mark `changed_trials` looks in the changes index: covers
    /// clock skew between writers, a write still in the SDK's retries (its change
    /// time is stamped before), and the index's propagation lag.
    pub lookback: Duration,
    /// A driver re-reads its whole study this often all the same (a consistent
    /// read: the safety net under the eventually consistent index).
    pub full_read_every: Duration,
    /// The table has no changes index (made before it existed): read whole studies.
    no_index: AtomicBool,
    /// Whether each study's trials are in a partition of their own (its `layout`),
    /// learnt from its study item.
    apart: std::sync::Mutex<HashMap<String, bool>>,
    /// An agent writes its trial's record in full at most this often while it runs;
    /// its other heartbeats go to the trial's beat item ([`beats`]).
    pub snapshot_every: Duration,
    /// What an agent's store remembers of the attempts it beats for.
    beating: std::sync::Mutex<HashMap<(String, u64), beats::LastWrite>>,
    /// Trials are shown only where their slot guard vouches for them ([`vouch`]).
    vouch: bool,
    guards: std::sync::Mutex<HashMap<String, vouch::Guards>>,
    /// How long a batch's unprocessed items are asked again ([`Backoff::BATCH`]).
    pub batch_backoff: crate::backoff::Backoff,
}

mod beats;
mod cancel;
mod index;
mod items;
mod leases;
mod reads;
mod table;
mod vouch;
mod whole;

use items::*;
pub use items::{item_bytes, study_of_trials, write_units, CHANGES_INDEX};
pub(crate) use items::{trial_pk, trial_sk};

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            page_size: None,
            lookback: Duration::from_secs(120),
            full_read_every: Duration::from_secs(300),
            no_index: AtomicBool::new(false),
            apart: Default::default(),
            snapshot_every: Duration::from_secs(300),
            beating: Default::default(),
            vouch: false,
            guards: Default::default(),
            batch_backoff: crate::backoff::Backoff::BATCH,
        }
    }

    /// The partition of `study`'s trials: [`trial_pk`], or the study's own for a
    /// study recorded before trials had one (known from its item, read once).
    async fn trials_pk(&self, study: &str) -> Result<String> {
        let known = self.apart.lock().ok().and_then(|m| m.get(study).copied());
        let apart = match known {
            Some(a) => a,
            // No study item (yet): a new study's trials go apart.
            None => match self.get(study, "study", false).await? {
                Some(item) => self.learn_layout(study, &item),
                None => true,
            },
        };
        Ok(if apart {
            trial_pk(study)
        } else {
            study.to_string()
        })
    }

    /// Forgets what was learnt of a study's layout (deleted, or made anew: a long-lived
    /// process, a warm tick, must not keep an older study's).
    fn forget_layout(&self, study: &str) {
        if let Ok(mut m) = self.apart.lock() {
            m.remove(study);
        }
    }

    /// Notes from a study item whether its trials are apart; returns it.
    fn learn_layout(&self, study: &str, item: &Item) -> bool {
        let apart = get_n(item, "layout") == Some(LAYOUT);
        if let Ok(mut m) = self.apart.lock() {
            m.insert(study.to_string(), apart);
        }
        apart
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Allocates the study's next trial id. A compare-and-set of `next_id` tagged with
    /// a one-off claim, so that a retried call whose first answer was lost recognises
    /// its own increment instead of taking a second id.
    async fn next_id(&self, study: &str) -> Result<u64> {
        let claim = format!("{:016x}", rand::random::<u64>());
        loop {
            let Some(item) = self.get(study, "study", true).await? else {
                return Err(StoreError::no_study(study.to_string()));
            };
            let current = get_n(&item, "next_id").unwrap_or(0);
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(study))
                .key("sk", s("study"))
                .update_expression("SET next_id = :next, id_claim = :claim")
                .condition_expression("next_id = :current")
                .expression_attribute_values(":next", n(current + 1))
                .expression_attribute_values(":current", n(current))
                .expression_attribute_values(":claim", s(&claim))
                .send()
                .await;
            match out {
                Ok(_) => return Ok(current + 1),
                Err(e) if conditional(&e) => {
                    let Some(now) = self.get(study, "study", true).await? else {
                        return Err(StoreError::no_study(study.to_string()));
                    };
                    if get_s(&now, "id_claim") == Some(claim.as_str())
                        && get_n(&now, "next_id") == Some(current + 1)
                    {
                        return Ok(current + 1);
                    }
                }
                Err(e) => return Err(fail(&self.table, "UpdateItem", e)),
            }
        }
    }

    async fn read_trial(&self, study: &str, id: u64) -> Result<Option<(Trial, u64)>> {
        let pk = self.trials_pk(study).await?;
        let Some(item) = self.get(&pk, &trial_sk(id), true).await? else {
            return Ok(None);
        };
        let t = decode_trial(&format!("{study}/{id}"), &item, &SeriesKeep::Whole)?;
        Ok(Some((t, get_n(&item, "rev").unwrap_or(0))))
    }

    async fn read_study(&self, name: &str) -> Result<Option<(StudyRecord, Item)>> {
        let Some(item) = self.get(name, "study", true).await? else {
            return Ok(None);
        };
        self.learn_layout(name, &item);
        Ok(Some((decode(name, &item)?, item)))
    }
}

#[async_trait]
impl TrialStore for DynamoStore {
    async fn create_study(&self, rec: &StudyRecord) -> Result<StudyRecord> {
        let item = HashMap::from([
            ("pk".to_string(), s(&rec.name)),
            ("sk".to_string(), s("study")),
            ("state".to_string(), s(rec.state.as_word())),
            ("rev".to_string(), n(0)),
            ("next_id".to_string(), n(0)),
            ("layout".to_string(), n(LAYOUT)),
            ("data".to_string(), s(encode(&rec.name, rec)?)),
        ]);
        // The study and its index entry, together.
        let study = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(study).build())
            .transact_items(
                TransactWriteItem::builder()
                    .put(index::entry_put(&self.table, &rec.name)?)
                    .build(),
            )
            .send()
            .await;
        match out {
            Ok(_) => {
                self.forget_layout(&rec.name);
                return Ok(rec.clone());
            }
            // It exists (a failed condition): the one recorded is the study.
            Err(e) => {
                let name = &rec.name;
                let items = [
                    format!("study `{name}`"),
                    format!("the listing's entry of `{name}`"),
                ];
                cancel::conflict(&self.table, &items, e)?;
            }
        }
        self.read_study(&rec.name)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| StoreError::no_study(rec.name.clone()))
    }

    async fn put_study(&self, rec: &StudyRecord) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&rec.name))
            .key("sk", s("study"))
            .update_expression("SET #data = :data, #state = :state ADD rev :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#data", "data")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":data", s(encode(&rec.name, rec)?))
            .expression_attribute_values(":state", s(rec.state.as_word()))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Err(StoreError::no_study(rec.name.clone())),
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }

    async fn get_study(&self, name: &str) -> Result<Option<StudyRecord>> {
        Ok(self.read_study(name).await?.map(|(r, _)| r))
    }

    async fn list_studies(&self) -> Result<Vec<StudyRecord>> {
        let mut out = Vec::new();
        for item in self.study_items().await? {
            let name = get_s(&item, "pk").unwrap_or("?").to_string();
            out.push(decode::<StudyRecord>(&name, &item)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn study_state(&self, name: &str) -> Result<Option<StudyState>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(name))
            .key("sk", s("study"))
            .projection_expression("#state")
            .expression_attribute_names("#state", "state")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| fail(&self.table, "GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        // The word; a state this version does not know (a newer augur's) is read
        // from the record, which then says what is wrong with it.
        match get_s(item, "state").and_then(StudyState::from_word) {
            Some(state) => Ok(Some(state)),
            None => Ok(self.read_study(name).await?.map(|(rec, _)| rec.state)),
        }
    }

    /// A compare-and-set on the study's `rev`. A write applied whose answer was
    /// lost fails its condition when the SDK retries it; the record then shows our
    /// own write, unless another came after it: then the change is made again on the
    /// newer record, so changes must be idempotent (the bounds' are).
    async fn update_study(&self, name: &str, change: StudyChange) -> Result<bool> {
        loop {
            let Some((mut rec, item)) = self.read_study(name).await? else {
                return Err(StoreError::no_study(name.to_string()));
            };
            if !change(&mut rec) {
                return Ok(false);
            }
            let rev = get_n(&item, "rev").unwrap_or(0);
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(name))
                .key("sk", s("study"))
                .update_expression("SET #data = :data, #state = :state, rev = :next")
                .condition_expression("rev = :rev")
                .expression_attribute_names("#data", "data")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":data", s(encode(name, &rec)?))
                .expression_attribute_values(":state", s(rec.state.as_word()))
                .expression_attribute_values(":rev", n(rev))
                .expression_attribute_values(":next", n(rev + 1))
                .send()
                .await;
            match out {
                Ok(_) => return Ok(true),
                Err(e) if conditional(&e) => {}
                Err(e) => return Err(fail(&self.table, "UpdateItem", e)),
            }
            if let Some((now, item)) = self.read_study(name).await? {
                if get_n(&item, "rev") == Some(rev + 1) && now == rec {
                    return Ok(true);
                }
            }
        }
    }

    async fn delete_study(&self, name: &str) -> Result<bool> {
        let keys = self.keys_of(name).await?;
        let existed = keys.iter().any(|k| get_s(k, "sk") == Some("study"));
        self.delete_keys(name, keys).await?;
        self.set_submitted(name, false).await?;
        self.forget_layout(name);
        Ok(existed)
    }

    async fn expire_study(&self, name: &str, at_ms: Option<Millis>) -> Result<usize> {
        let keys = self.keys_of(name).await?;
        self.expire_keys(keys, at_ms).await
    }

    async fn create_trial(&self, trial: &Trial) -> Result<(Trial, bool)> {
        let guard_sk = format!("slot#{}", slot(trial));
        loop {
            if let Some(guard) = self.get(&trial.study, &guard_sk, true).await? {
                let id = get_n(&guard, "trial_id").unwrap_or(0);
                if let Some((t, _)) = self.read_trial(&trial.study, id).await? {
                    return Ok((t, false));
                }
                // A guard whose trial is not written yet cannot be: both are written in
                // one transaction. Read again.
                continue;
            }
            let id = self.next_id(&trial.study).await?;
            let pk = self.trials_pk(&trial.study).await?;
            let mut t = trial.clone();
            t.id = id;
            let guard = HashMap::from([
                ("pk".to_string(), s(&t.study)),
                ("sk".to_string(), s(&guard_sk)),
                ("trial_id".to_string(), n(id)),
                ("proposal".to_string(), s(items::proposal_digest(&t))),
            ]);
            let put = |item: Item| {
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(build_err)
            };
            let out = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put(guard)?).build())
                .transact_items(
                    TransactWriteItem::builder()
                        .put(put(Self::trial_item(&pk, &t, 0)?)?)
                        .build(),
                )
                .send()
                .await;
            match out {
                Ok(_) => return Ok((t, true)),
                // Another writer created the slot first (a failed condition): its
                // trial is the one (this id stays unused).
                Err(e) => {
                    let study = &t.study;
                    let items = [
                        format!("slot guard `{guard_sk}` of `{study}`"),
                        format!("trial {study}/{id}"),
                    ];
                    cancel::conflict(&self.table, &items, e)?;
                }
            }
        }
    }

    /// The trial's slot guard, in the study's own partition (which the worker role
    /// may not write), names its id and the digest of what was proposed; a guard
    /// from before digests were kept vouches for the id alone.
    async fn proposed(&self, t: &Trial) -> Result<bool> {
        let guard_sk = format!("slot#{}", slot(t));
        let Some(guard) = self.get(&t.study, &guard_sk, true).await? else {
            return Ok(false);
        };
        let digest_holds = get_s(&guard, "proposal").is_none_or(|d| d == items::proposal_digest(t));
        Ok(get_n(&guard, "trial_id") == Some(t.id) && digest_holds)
    }

    async fn get_trial(&self, study: &str, id: u64) -> Result<Option<Trial>> {
        let Some((t, _)) = self.read_trial(study, id).await? else {
            return Ok(None);
        };
        let mut one = [t];
        self.with_beats(study, &mut one).await?;
        let [t] = one;
        Ok(Some(t))
    }

    async fn list_trials(&self, study: &str) -> Result<Vec<Trial>> {
        self.read_trials(study, &SeriesKeep::Whole).await
    }

    async fn changed_trials(
        &self,
        study: &str,
        since: u64,
        keep: &SeriesKeep,
    ) -> Result<(Vec<Trial>, u64)> {
        self.read_changed(study, since, keep).await
    }

    async fn update_trial(
        &self,
        study: &str,
        id: u64,
        expect: &Expect,
        update: &TrialUpdate,
    ) -> Result<Written> {
        let mut stopped = false;
        loop {
            let Some((mut t, rev)) = self.read_trial(study, id).await? else {
                return Ok(Written::Conflict(None));
            };
            if let Some(refused) = augur_store::refusal(study, id, expect, update, &t) {
                return refused;
            }
            // Ending a running attempt from outside stops its beats first (its agent
            // learns at its next one), and keeps the last of them in the record.
            if beats::stops_beats(&t, update) && !stopped {
                let pk = self.trials_pk(study).await?;
                if let Some(b) = self.stop_beat(&pk, id, t.attempt).await? {
                    t.absorb(&b);
                }
                stopped = true;
            }
            update.apply(&mut t);
            let pk = self.trials_pk(study).await?;
            if self
                .put_if(Self::trial_item(&pk, &t, rev + 1)?, Some(rev))
                .await?
            {
                return Ok(Written::Done(t));
            }
            // Either someone wrote between our read and our write, or our write was
            // applied and its answer lost (a dropped connection, retried by the SDK,
            // then finds its own write). The record tells which.
            if let Some((now, now_rev)) = self.read_trial(study, id).await? {
                if now_rev == rev + 1 && now == t {
                    return Ok(Written::Done(t));
                }
            }
        }
    }

    async fn heartbeat(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        up: &TrialUpdate,
    ) -> Result<Beaten> {
        self.beat(study, id, attempt, up).await
    }

    async fn beats(&self, study: &str, ids: &[u64]) -> Result<Vec<Beat>> {
        self.read_beats(study, ids).await
    }

    async fn take_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
        gap: Millis,
    ) -> Result<Lease> {
        self.lease_take(study, holder, (now, until), gap).await
    }

    async fn release_lease(&self, study: &str, holder: &str, now: Millis) -> Result<()> {
        self.lease_release(study, holder, now).await
    }

    async fn leases(&self) -> Result<Vec<(String, Lease)>> {
        self.lease_list().await
    }

    async fn expire_lease(&self, study: &str, lease: &Lease) -> Result<bool> {
        self.lease_expire(study, lease).await
    }

    async fn set_submitted(&self, study: &str, on: bool) -> Result<()> {
        let sk = format!("sub#{study}");
        let out = if on {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(SUBMITTED))
                .item("sk", s(sk))
                .item("study", s(study))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(&self.table, "PutItem", e))
        } else {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(SUBMITTED))
                .key("sk", s(sk))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(&self.table, "DeleteItem", e))
        };
        out
    }

    async fn submitted(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .query(SUBMITTED, Some("sub#"))
            .await?
            .iter()
            .filter_map(|i| get_s(i, "study").map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}
