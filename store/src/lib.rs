//! The two narrow traits the orchestrator acts through, and the embedded default's
//! state: the [`TrialStore`] trait (the only memory shared by the orchestrator and
//! the agents) with its SQLite implementation, the [`MachineProvider`] trait (where
//! attempts run), and the on-disk layout of the embedded default (`.augur/`:
//! database, logs, work directories).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod denied;
pub mod error;
pub mod layout;
pub mod logfile;
pub mod provider;
pub mod sqlite;
pub mod studyfile;
pub mod workdir;

use async_trait::async_trait;
use augur_model::{
    Beat, Expect, Millis, Refused, SeriesKeep, StudyRecord, StudyState, Trial, TrialUpdate,
};

pub use denied::Denied;
pub use error::{Cause, Failure, Kind, StoreError};
pub use layout::Layout;
pub use provider::{Launched, MachineProvider, ProviderError};
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The outcome of a conditional write.
#[derive(Debug)]
pub enum Written {
    /// The condition held; the record as written.
    Done(Trial),
    /// The condition did not hold; the record as it is (absent: no such trial).
    Conflict(Option<Trial>),
}

/// The write rule ([`TrialUpdate::check`]) as a store answers it: `None` when the
/// write may go on; else the store's answer, the record `t` as it is in a conflict
/// or an illegal transition (a bug in the writer).
pub fn refusal(
    study: &str,
    id: u64,
    expect: &Expect,
    update: &TrialUpdate,
    t: &Trial,
) -> Option<Result<Written>> {
    match update.check(expect, t) {
        Ok(()) => None,
        Err(Refused::Conflict) => Some(Ok(Written::Conflict(Some(t.clone())))),
        Err(Refused::Illegal { from, to }) => Some(Err(StoreError::IllegalTransition {
            study: study.to_string(),
            id,
            from,
            to,
        })),
    }
}

/// What a heartbeat found.
#[derive(Clone, Debug, PartialEq)]
pub enum Beaten {
    Recorded,
    /// The attempt is no longer the trial's running one: the record as it is
    /// (absent: no such trial).
    Moved(Option<Box<Trial>>),
}

impl Written {
    pub fn ok(self) -> Option<Trial> {
        match self {
            Written::Done(t) => Some(t),
            Written::Conflict(_) => None,
        }
    }
}

/// A change to a study's record ([`TrialStore::update_study`]): applied to the
/// record as stored (perhaps more than once, when another writer came first), it
/// says whether it changed anything; nothing is written when it did not.
pub type StudyChange = Box<dyn Fn(&mut StudyRecord) -> bool + Send + Sync>;

/// The state of every study and trial. Implementations must make [`update_trial`]
/// atomic (compare-and-set on state and attempt) across processes and machines.
///
/// [`update_trial`]: TrialStore::update_trial
#[async_trait]
pub trait TrialStore: Send + Sync {
    /// Records `rec` unless a study of that name exists; returns what is stored.
    async fn create_study(&self, rec: &StudyRecord) -> Result<StudyRecord>;
    /// Replaces a study's spec and state.
    async fn put_study(&self, rec: &StudyRecord) -> Result<()>;
    async fn get_study(&self, name: &str) -> Result<Option<StudyRecord>>;
    async fn list_studies(&self) -> Result<Vec<StudyRecord>>;
    /// Just a study's state (read every tick: cheaper than the whole record).
    async fn study_state(&self, name: &str) -> Result<Option<StudyState>> {
        Ok(self.get_study(name).await?.map(|r| r.state))
    }
    /// Applies `change` to the study's record as stored, atomically (a
    /// compare-and-set against other writers); whether it changed anything.
    async fn update_study(&self, name: &str, change: StudyChange) -> Result<bool>;
    /// Moves a study to `to` if it is in one of `from`; whether it did.
    async fn set_study_state(
        &self,
        name: &str,
        from: &[StudyState],
        to: StudyState,
        now: Millis,
    ) -> Result<bool> {
        let from = from.to_vec();
        let change = move |rec: &mut StudyRecord| {
            if !from.contains(&rec.state) {
                return false;
            }
            rec.state = to;
            rec.updated_ms = now;
            true
        };
        self.update_study(name, Box::new(change)).await
    }
    /// Removes a study and all its trials.
    async fn delete_study(&self, name: &str) -> Result<bool>;
    /// Has the store delete every item of a study at `at_ms` (DynamoDB's time to
    /// live), or (`None`) keep them again; how many items were marked. Stores with
    /// no expiry keep everything (the default).
    async fn expire_study(&self, _name: &str, _at_ms: Option<Millis>) -> Result<usize> {
        Ok(0)
    }

    /// Creates the trial for its slot (point and replicate, or dataset name) unless one
    /// exists, allocating its id from the study's atomic sequence. Returns the stored
    /// trial and whether it was created now.
    async fn create_trial(&self, trial: &Trial) -> Result<(Trial, bool)>;

    /// Whether `t` is a trial a driver proposed, as proposed: its id, point, params
    /// and dataset are what [`TrialStore::create_trial`] recorded. A store that only
    /// augur's own processes write (SQLite) says yes; one whose trial records others
    /// may write (DynamoDB, where a trial script holds the worker role) checks what it
    /// kept out of their reach. An agent runs nothing for a trial that is not.
    async fn proposed(&self, t: &Trial) -> Result<bool> {
        let _ = t;
        Ok(true)
    }
    async fn get_trial(&self, study: &str, id: u64) -> Result<Option<Trial>>;
    async fn list_trials(&self, study: &str) -> Result<Vec<Trial>>;
    /// Trials written after change `since` (0: all), with as much of their series as
    /// `keep` keeps, and the change to ask from next time: an orchestrator keeps a
    /// cache and reads only what moved, so a tick costs what changed, not the study's
    /// size. The default reads everything.
    async fn changed_trials(
        &self,
        study: &str,
        since: u64,
        keep: &SeriesKeep,
    ) -> Result<(Vec<Trial>, u64)> {
        let mut all = self.list_trials(study).await?;
        for t in &mut all {
            keep.slim(t);
        }
        Ok((all, since + 1))
    }
    /// Applies `update` if `expect` holds, atomically.
    async fn update_trial(
        &self,
        study: &str,
        id: u64,
        expect: &Expect,
        update: &TrialUpdate,
    ) -> Result<Written>;

    /// Records a heartbeat of attempt `attempt`, running: `up` is what the agent
    /// knows now (its time, and, when they changed, metrics, series, status and
    /// checkpoint). The default writes it to the record; a store that prices writes
    /// by the item's size keeps most beats apart ([`beats`](TrialStore::beats)).
    async fn heartbeat(
        &self,
        study: &str,
        id: u64,
        attempt: u32,
        up: &TrialUpdate,
    ) -> Result<Beaten> {
        let expect = Expect::state(augur_model::TrialState::Running, attempt);
        Ok(match self.update_trial(study, id, &expect, up).await? {
            Written::Done(_) => Beaten::Recorded,
            Written::Conflict(now) => Beaten::Moved(now.map(Box::new)),
        })
    }
    /// The last beats kept apart from the records of trials `ids` (none: this store
    /// writes heartbeats to the records). A reader lays each over its record
    /// ([`Trial::absorb`](augur_model::Trial::absorb)).
    async fn beats(&self, _study: &str, _ids: &[u64]) -> Result<Vec<Beat>> {
        Ok(Vec::new())
    }

    /// Takes (or renews) the right to drive `study` for `holder` until `until`, unless
    /// another holder's lease is still live at `now`. Returns the lease as it stands:
    /// ours if we got it. One conditional write, so two drivers (a serverless tick and
    /// `augur run`, or two overlapping ticks) never act on a study at once.
    ///
    /// A lease we got carries `since`: when drivers began holding the study's lease
    /// with no gap of more than `gap` between one lease's end and the next one's
    /// start (the record's `since`, if it was live or ended at most `gap` before
    /// `now`; `now` otherwise). Drivers that are fresh processes (ticks) learn from
    /// it since when the store has been seen without a break.
    async fn take_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
        gap: Millis,
    ) -> Result<Lease>;
    /// Gives the lease up early, if `holder` still has it: it ends at `now` (the
    /// record stays, free, for the next driver to continue its `since`). Takers
    /// judge a lease with their clock less the skew they allow, so a driver passes
    /// `now` less that skew for the lease to be free at once.
    async fn release_lease(&self, study: &str, holder: &str, now: Millis) -> Result<()>;
    /// Every study's lease record, expired ones too (`augur gc`).
    async fn leases(&self) -> Result<Vec<(String, Lease)>>;
    /// Removes a lease only if it is still exactly `lease` (nobody renewed or took it
    /// meanwhile); whether it was removed.
    async fn expire_lease(&self, study: &str, lease: &Lease) -> Result<bool>;
    /// Marks a study as driven by the serverless control plane (`augur submit`), or
    /// no longer (done, stopped or deleted).
    async fn set_submitted(&self, study: &str, on: bool) -> Result<()>;
    /// The studies submitted to the serverless control plane, by name.
    async fn submitted(&self) -> Result<Vec<String>>;
}

/// Who may drive a study, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until: Millis,
    /// Since when drivers have held it without a break ([`TrialStore::take_lease`]).
    pub since: Millis,
}

impl Lease {
    pub fn held_by(&self, holder: &str) -> bool {
        self.holder == holder
    }
}

/// The uniqueness key of a trial within its study: one record per (point, replicate),
/// one per dataset, so creating one twice (a restarted orchestrator) is harmless.
pub fn slot(t: &Trial) -> String {
    match &t.dataset {
        Some(d) => format!("dataset:{d}"),
        None => format!("point:{}:{}", t.point, t.replicate),
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
