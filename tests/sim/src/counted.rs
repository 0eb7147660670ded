//! The store as the simulation sees it: the real SQLite store, with every call
//! counted and priced in the DynamoDB capacity units the same call would consume
//! on the DynamoDB store, by DynamoDB's documented rules
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>):
//! - a read: one unit per 4 KB read consistently, half eventually consistently (the
//!   changes index, beats); a query sums its items' sizes before rounding;
//! - a write: one unit per KB of the item, the larger of before and after; twice in a
//!   transaction; again in the changes index (projection ALL), twice when its sort
//!   key `chg` changes (a delete and a put there), which every record write does
//!   (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html#GSI.Writes>);
//! - a heartbeat: one unit on the trial's beat item, or a whole record write every
//!   5 minutes (`snapshot_every`); with `old_beats`, as before issue 17: every
//!   heartbeat a whole record write.
//!
//! A record's size is its JSON and about 110 bytes of attributes (`pk`, `sk`,
//! `state`, `attempt`, `rev`, `chg`), as `augur_aws::dynamo::item_bytes` counts it.

use async_trait::async_trait;
use augur_model::{Beat, Expect, Millis, StudyRecord, StudyState, Trial, TrialState, TrialUpdate};
use augur_store::{Beaten, Lease, SqliteStore, TrialStore, Written};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::THROTTLED;

#[derive(Default)]
pub struct Calls {
    by: Mutex<BTreeMap<&'static str, u64>>,
    rng: Mutex<Option<ChaCha8Rng>>,
}

impl Calls {
    pub fn seeded(seed: u64) -> Calls {
        Calls {
            by: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Some(ChaCha8Rng::seed_from_u64(seed))),
        }
    }
    /// One call of `name`; a throttled first attempt is retried (one more call).
    pub fn count(&self, name: &'static str) {
        let throttled = self
            .rng
            .lock()
            .ok()
            .and_then(|mut r| r.as_mut().map(|r| r.gen_bool(THROTTLED)))
            .unwrap_or(false);
        if let Ok(mut by) = self.by.lock() {
            *by.entry(name).or_default() += 1 + throttled as u64;
            if throttled {
                *by.entry("throttled").or_default() += 1;
            }
        }
    }
    pub fn get(&self, name: &str) -> u64 {
        self.by
            .lock()
            .map(|b| b.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.by
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|(k, _)| **k != "throttled")
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Capacity units consumed, in thousandths.
#[derive(Default)]
pub struct Units {
    read: AtomicU64,
    write: AtomicU64,
}

impl Units {
    fn read(&self, units: f64) {
        self.read
            .fetch_add((units * 1000.0) as u64, Ordering::Relaxed);
    }
    fn write(&self, units: f64) {
        self.write
            .fetch_add((units * 1000.0) as u64, Ordering::Relaxed);
    }
    pub fn reads(&self) -> f64 {
        self.read.load(Ordering::Relaxed) as f64 / 1000.0
    }
    pub fn writes(&self) -> f64 {
        self.write.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// Read units of `bytes` read consistently (or not).
fn rcu(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// Write units of an item of `bytes`.
fn wcu(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// CPU time (µs) spent pricing calls, which no store would spend: taken off the
/// ticks' CPU time.
pub static PRICING_US: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, its CPU time counted in [`PRICING_US`].
fn pricing<T>(f: impl FnOnce() -> T) -> T {
    let start = crate::cpu_micros();
    let out = f();
    PRICING_US.fetch_add(crate::cpu_micros() - start, Ordering::Relaxed);
    out
}

/// A record's size as a DynamoDB item.
pub fn record_bytes(t: &Trial) -> usize {
    pricing(|| serde_json::to_string(t).map_or(0, |j| j.len()) + 110)
}

/// When each record of a study was last written (virtual ms), and its size, by id.
type WrittenAt = HashMap<u64, (Millis, usize)>;

/// What both wrappers (the orchestrator's and the agents') share.
#[derive(Default)]
pub struct Shared {
    /// Trials created.
    pub trials: AtomicU64,
    /// When each trial's record was last written (virtual ms) and its size, by
    /// study.
    pub written: Mutex<HashMap<String, WrittenAt>>,
    pub now: Arc<AtomicI64>,
    /// Heartbeats written to the record every time, as before issue 17.
    pub old_beats: bool,
}

/// The real SQLite store, with every call counted (the orchestrator's and the
/// agents' through separate wrappers) and priced in DynamoDB capacity units.
pub struct Counted {
    pub inner: Arc<SqliteStore>,
    pub calls: Arc<Calls>,
    pub units: Units,
    pub shared: Arc<Shared>,
    /// Trials returned by `changed_trials`.
    pub changed_read: AtomicU64,
    /// What reading the whole study at every pass would read.
    pub whole_study_read: AtomicU64,
    /// What DynamoDB's `changed_trials` reads: the trials written within the
    /// lookback (120 s) before its last read, from the changes index, and the whole
    /// study every 5 minutes.
    pub index_read: AtomicU64,
    /// Beat items read (`beats`).
    pub beats_read: AtomicU64,
    /// (last read, last whole read) of this wrapper's `changed_trials`, by study.
    reads: Mutex<HashMap<String, (Millis, Millis)>>,
}

impl Counted {
    pub fn new(inner: Arc<SqliteStore>, calls: Arc<Calls>, shared: Arc<Shared>) -> Counted {
        Counted {
            inner,
            calls,
            units: Units::default(),
            shared,
            changed_read: AtomicU64::new(0),
            whole_study_read: AtomicU64::new(0),
            index_read: AtomicU64::new(0),
            beats_read: AtomicU64::new(0),
            reads: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> Millis {
        self.shared.now.load(Ordering::Relaxed)
    }

    /// When a trial's record was last written, and its size then.
    fn last(&self, study: &str, id: u64) -> Option<(Millis, usize)> {
        let w = self.shared.written.lock().ok()?;
        w.get(study).and_then(|s| s.get(&id)).copied()
    }

    /// The size a trial's record had when last written.
    fn size(&self, study: &str, id: u64) -> usize {
        self.last(study, id).map_or(600, |x| x.1)
    }

    /// Notes a record written now (its size).
    pub fn note(&self, t: &Trial) {
        if let Ok(mut w) = self.shared.written.lock() {
            let at = (self.now(), record_bytes(t));
            w.entry(t.study.clone()).or_default().insert(t.id, at);
        }
    }

    /// A record write of `t` (after one of `before` bytes): the table, and the index
    /// twice (its sort key changes).
    fn wrote(&self, t: &Trial, before: usize) {
        let after = record_bytes(t);
        self.units.write(wcu(before.max(after)) + 2.0 * wcu(after));
        self.note(t);
    }

    /// The index's items `changed_trials` reads: those written within the lookback
    /// before the last read, or every item every 5 minutes; and their bytes.
    fn index_items(&self, study: &str, since: u64) -> (u64, usize, bool) {
        pricing(|| self.index_items_now(study, since))
    }

    fn index_items_now(&self, study: &str, since: u64) -> (u64, usize, bool) {
        let now = self.now();
        let Ok(mut reads) = self.reads.lock() else {
            return (0, 0, true);
        };
        let Ok(all) = self.shared.written.lock() else {
            return (0, 0, true);
        };
        let empty = HashMap::new();
        let w = all.get(study).unwrap_or(&empty);
        let reads = reads.entry(study.to_string()).or_default();
        let (last, full) = *reads;
        reads.0 = now;
        if since == 0 || now - full >= 300_000 {
            reads.1 = now;
            return (w.len() as u64, w.values().map(|x| x.1).sum(), true);
        }
        let recent = w.values().filter(|x| x.0 >= last - 120_000);
        let (n, bytes) = recent.fold((0, 0), |(n, b), x| (n + 1, b + x.1));
        (n, bytes, false)
    }
}

#[async_trait]
impl TrialStore for Counted {
    async fn create_study(&self, rec: &StudyRecord) -> augur_store::Result<StudyRecord> {
        self.calls.count("create_study");
        self.units.write(2.0 * 2.0);
        self.inner.create_study(rec).await
    }
    async fn put_study(&self, rec: &StudyRecord) -> augur_store::Result<()> {
        self.calls.count("put_study");
        self.units.write(2.0);
        self.inner.put_study(rec).await
    }
    async fn get_study(&self, name: &str) -> augur_store::Result<Option<StudyRecord>> {
        self.calls.count("get_study");
        self.units.read(1.0);
        self.inner.get_study(name).await
    }
    async fn list_studies(&self) -> augur_store::Result<Vec<StudyRecord>> {
        self.calls.count("list_studies");
        let out = self.inner.list_studies().await?;
        // The index's entries (about 60 bytes each), then the study items.
        self.units
            .read(rcu(out.len() * 60, true) + out.len() as f64);
        Ok(out)
    }
    async fn study_state(&self, name: &str) -> augur_store::Result<Option<StudyState>> {
        self.calls.count("study_state");
        self.units.read(1.0);
        self.inner.study_state(name).await
    }
    async fn update_study(
        &self,
        name: &str,
        change: augur_store::StudyChange,
    ) -> augur_store::Result<bool> {
        self.calls.count("update_study");
        self.units.read(1.0);
        self.units.write(2.0);
        self.inner.update_study(name, change).await
    }
    async fn delete_study(&self, name: &str) -> augur_store::Result<bool> {
        self.calls.count("delete_study");
        self.inner.delete_study(name).await
    }
    async fn create_trial(&self, trial: &Trial) -> augur_store::Result<(Trial, bool)> {
        self.calls.count("create_trial");
        let out = self.inner.create_trial(trial).await?;
        // The slot's guard read; the study's counter read and written; the guard and
        // the record in one transaction (twice the units), and the record's index put.
        self.units.read(1.0);
        if out.1 {
            self.shared.trials.fetch_add(1, Ordering::Relaxed);
            let size = record_bytes(&out.0);
            self.units.read(1.0);
            self.units.write(2.0 + 2.0 * (1.0 + wcu(size)) + wcu(size));
            self.note(&out.0);
        } else {
            self.units.read(rcu(record_bytes(&out.0), true));
        }
        Ok(out)
    }
    async fn get_trial(&self, study: &str, id: u64) -> augur_store::Result<Option<Trial>> {
        self.calls.count("get_trial");
        let out = self.inner.get_trial(study, id).await?;
        if let Some(t) = &out {
            self.units.read(rcu(record_bytes(t), true));
        }
        Ok(out)
    }
    async fn list_trials(&self, study: &str) -> augur_store::Result<Vec<Trial>> {
        self.calls.count("list_trials");
        let out = self.inner.list_trials(study).await?;
        let bytes = out.iter().map(record_bytes).sum();
        self.units.read(rcu(bytes, true));
        Ok(out)
    }
    async fn changed_trials(
        &self,
        study: &str,
        since: u64,
        keep: &augur_model::SeriesKeep,
    ) -> augur_store::Result<(Vec<Trial>, u64)> {
        self.calls.count("changed_trials");
        let out = self.inner.changed_trials(study, since, keep).await?;
        self.changed_read
            .fetch_add(out.0.len() as u64, Ordering::Relaxed);
        let all = self.shared.trials.load(Ordering::Relaxed);
        self.whole_study_read.fetch_add(all, Ordering::Relaxed);
        let (items, bytes, whole) = self.index_items(study, since);
        self.index_read.fetch_add(items, Ordering::Relaxed);
        // A whole read is a consistent query of the table; else the index.
        self.units.read(rcu(bytes, whole));
        Ok(out)
    }
    async fn update_trial(
        &self,
        study: &str,
        id: u64,
        expect: &Expect,
        update: &TrialUpdate,
    ) -> augur_store::Result<Written> {
        self.calls.count("update_trial");
        let before = self.size(study, id);
        self.units.read(rcu(before, true));
        let out = self.inner.update_trial(study, id, expect, update).await?;
        if let Written::Done(t) = &out {
            self.wrote(t, before);
            // Ending a running attempt from outside stops its beats: one write.
            let outside = update.heartbeat_ms.is_none()
                && expect.states.contains(&TrialState::Running)
                && t.state != TrialState::Running;
            if outside && !self.shared.old_beats {
                self.units.write(1.0);
            }
        }
        Ok(out)
    }
    async fn heartbeat(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        up: &TrialUpdate,
    ) -> augur_store::Result<Beaten> {
        self.calls.count("heartbeat");
        let out = self.inner.heartbeat(study, id, attempt, up).await?;
        let last = self.last(study, id);
        let due = last.is_none_or(|(at, _)| self.now() - at >= 300_000);
        if out == Beaten::Recorded && (due || self.shared.old_beats) {
            if let Some(t) = self.inner.get_trial(study, id).await? {
                let before = self.size(study, id);
                self.units.read(rcu(before, true));
                self.wrote(&t, before);
            }
        } else {
            self.units.write(1.0);
        }
        Ok(out)
    }
    async fn beats(&self, study: &str, ids: &[u64]) -> augur_store::Result<Vec<Beat>> {
        for _ in ids.chunks(100) {
            self.calls.count("beats");
        }
        if !self.shared.old_beats {
            self.beats_read
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            self.units.read(ids.len() as f64 * 0.5);
        }
        self.inner.beats(study, ids).await
    }
    async fn take_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
        gap: Millis,
    ) -> augur_store::Result<Lease> {
        self.calls.count("take_lease");
        self.units.write(1.0);
        self.inner.take_lease(study, holder, now, until, gap).await
    }
    async fn release_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
    ) -> augur_store::Result<()> {
        self.calls.count("release_lease");
        self.units.write(1.0);
        self.inner.release_lease(study, holder, now).await
    }
    async fn leases(&self) -> augur_store::Result<Vec<(String, Lease)>> {
        self.calls.count("leases");
        self.inner.leases().await
    }
    async fn expire_lease(&self, study: &str, lease: &Lease) -> augur_store::Result<bool> {
        self.calls.count("expire_lease");
        self.units.write(1.0);
        self.inner.expire_lease(study, lease).await
    }
    async fn set_submitted(&self, study: &str, on: bool) -> augur_store::Result<()> {
        self.calls.count("set_submitted");
        self.units.write(1.0);
        self.inner.set_submitted(study, on).await
    }
    async fn submitted(&self) -> augur_store::Result<Vec<String>> {
        self.calls.count("submitted");
        self.units.read(0.5);
        self.inner.submitted().await
    }
}
