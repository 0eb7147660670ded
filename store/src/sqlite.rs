//! The embedded default's store: one SQLite file in WAL mode, safe for one
//! orchestrator and many agent processes writing at once.
//!
//! Each record is a JSON document, with its key, state and attempt also in columns;
//! a conditional write is a read-check-write inside `BEGIN IMMEDIATE`, which SQLite
//! serializes across processes.

use crate::{slot, Failure, Lease, Result, StoreError, StudyChange, TrialStore, Written};
use async_trait::async_trait;
use augur_model::{Expect, Millis, SeriesKeep, StudyRecord, StudyState, Trial, TrialUpdate};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A [`TrialStore`] in one SQLite file. Its work runs on tokio's blocking pool, never
/// on an async worker (a write may wait for another process's lock), unless it is
/// made [`inline`](SqliteStore::inline).
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Calls run on the caller's thread ([`inline`](SqliteStore::inline)).
    inline: bool,
}

const SCHEMA_VERSION: i64 = 3;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    name    TEXT PRIMARY KEY,
    state   TEXT NOT NULL,
    next_id INTEGER NOT NULL DEFAULT 1,
    data    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    study   TEXT NOT NULL,
    id      INTEGER NOT NULL,
    slot    TEXT NOT NULL,
    state   TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL DEFAULT 0,
    data    TEXT NOT NULL,
    PRIMARY KEY (study, id),
    UNIQUE (study, slot)
);
CREATE INDEX IF NOT EXISTS trials_by_seq ON trials (study, seq);
CREATE TABLE IF NOT EXISTS sequence (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
INSERT OR IGNORE INTO sequence VALUES (1, 0);
CREATE TABLE IF NOT EXISTS leases (study TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL, since INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS submitted (study TEXT PRIMARY KEY);
";

/// Brings a database written by an older augur to this schema (the tables `SCHEMA`
/// creates only when missing): version 3 keeps a lease's `since`.
fn upgrade(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let has_since = tx
        .prepare("SELECT 1 FROM pragma_table_info('leases') WHERE name = 'since'")?
        .exists([])?;
    if !has_since {
        tx.execute_batch("ALTER TABLE leases ADD COLUMN since INTEGER NOT NULL DEFAULT 0;")?;
    }
    Ok(())
}

/// Queries through the connection's statement cache: each is parsed once per
/// connection, not per call (the parse cost as much as the query).
trait Cached {
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// The busy handler: whether to retry after the `n`-th time the database was locked.
/// A write holds the lock for tens of microseconds: the first retries only yield
/// the processor (to the holder, on a busy machine), then 25 us doubling to 5 ms,
/// about a minute in all.
fn busy(n: i32) -> bool {
    if n < 3 {
        std::thread::yield_now();
        return true;
    }
    let wait =
        Duration::from_micros(25u64 << (n - 3).clamp(0, 8) as u32).min(Duration::from_millis(5));
    std::thread::sleep(wait);
    n < 12_000
}

/// The next value of the database-wide change sequence (inside a write transaction).
fn next_seq(tx: &Connection) -> rusqlite::Result<i64> {
    tx.row(
        "UPDATE sequence SET seq = seq + 1 WHERE one = 1 RETURNING seq",
        [],
        |r| r.get(0),
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and its directory.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(Failure::caused(
                    format!("cannot create {}: {e}", dir.display()),
                    e,
                ))
            })?;
        }
        let mut conn = Connection::open(path).map_err(|e| {
            let what = format!("cannot open {}: {e}", path.display());
            StoreError::Unavailable(Failure::caused(what, e))
        })?;
        // SQLite's default busy handler sleeps at least 1 ms per retry; the writes here
        // take tens of microseconds, so retry sooner ([`busy`]).
        conn.busy_handler(Some(busy))?;
        // Every statement of the store stays parsed ([`Cached`]).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The schema is written once; later opens (one per agent) only read its version.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            upgrade(&tx)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            inline: false,
        })
    }

    /// The same store, its calls run on the caller's thread instead of the blocking
    /// pool: for a process that does little else and waits for each call (a local
    /// agent), where the hop to a pool thread and back costs more than the call.
    pub fn inline(mut self) -> SqliteStore {
        self.inline = true;
        self
    }

    /// Opens an existing database without creating one (for read-only commands).
    pub fn open_existing(path: &Path) -> Result<Option<SqliteStore>> {
        if !path.exists() {
            return Ok(None);
        }
        SqliteStore::open(path).map(Some)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.conn.clone();
        if self.inline {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            return f(&mut guard);
        }
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Failure::caused(format!("store task: {e}"), e)))?
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

fn encode<T: serde::Serialize>(key: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

fn read_trial(conn: &Connection, study: &str, id: u64) -> Result<Option<Trial>> {
    let data: Option<String> = conn
        .row(
            "SELECT data FROM trials WHERE study = ?1 AND id = ?2",
            params![study, id as i64],
            |r| r.get(0),
        )
        .optional()?;
    data.map(|d| decode(&format!("{study}/{id}"), &d))
        .transpose()
}

#[async_trait]
impl TrialStore for SqliteStore {
    async fn create_study(&self, rec: &StudyRecord) -> Result<StudyRecord> {
        let rec = rec.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .row(
                    "SELECT data FROM studies WHERE name = ?1",
                    [&rec.name],
                    |r| r.get(0),
                )
                .optional()?;
            let out = match existing {
                Some(d) => decode(&rec.name, &d)?,
                None => {
                    tx.run(
                        "INSERT INTO studies (name, state, data) VALUES (?1, ?2, ?3)",
                        params![rec.name, rec.state.as_word(), encode(&rec.name, &rec)?],
                    )?;
                    rec.clone()
                }
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn put_study(&self, rec: &StudyRecord) -> Result<()> {
        let rec = rec.clone();
        self.with(move |c| {
            let n = c.run(
                "UPDATE studies SET state = ?2, data = ?3 WHERE name = ?1",
                params![rec.name, rec.state.as_word(), encode(&rec.name, &rec)?],
            )?;
            if n == 0 {
                return Err(StoreError::no_study(rec.name.clone()));
            }
            Ok(())
        })
        .await
    }

    async fn get_study(&self, name: &str) -> Result<Option<StudyRecord>> {
        let name = name.to_string();
        self.with(move |c| {
            let name = name.as_str();
            let d: Option<String> = c
                .row("SELECT data FROM studies WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            d.map(|d| decode(name, &d)).transpose()
        })
        .await
    }

    /// From its column ([`StudyState::as_word`]), where it reads as a state: the
    /// record itself (the whole study file) is decoded only otherwise.
    async fn study_state(&self, name: &str) -> Result<Option<StudyState>> {
        let key = name.to_string();
        let column: Option<String> = self
            .with(move |c| {
                let sql = "SELECT state FROM studies WHERE name = ?1";
                Ok(c.row(sql, [key.as_str()], |r| r.get(0)).optional()?)
            })
            .await?;
        let Some(column) = column else {
            return Ok(None);
        };
        match StudyState::from_word(&column) {
            Some(s) => Ok(Some(s)),
            None => Ok(self.get_study(name).await?.map(|r| r.state)),
        }
    }

    async fn list_studies(&self) -> Result<Vec<StudyRecord>> {
        self.with(move |c| {
            let mut st = c.prepare("SELECT name, data FROM studies ORDER BY name")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, data) = row?;
                out.push(decode(&name, &data)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_study(&self, name: &str, change: StudyChange) -> Result<bool> {
        let name = name.to_string();
        self.with(move |c| {
            let name = name.as_str();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let d: Option<String> = tx
                .row("SELECT data FROM studies WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(d) = d else {
                return Err(StoreError::no_study(name.to_string()));
            };
            let mut rec: StudyRecord = decode(name, &d)?;
            if !change(&mut rec) {
                return Ok(false);
            }
            tx.run(
                "UPDATE studies SET state = ?2, data = ?3 WHERE name = ?1",
                params![name, rec.state.as_word(), encode(name, &rec)?],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn delete_study(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.with(move |c| {
            let name = name.as_str();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.run("DELETE FROM trials WHERE study = ?1", [name])?;
            tx.run("DELETE FROM leases WHERE study = ?1", [name])?;
            tx.run("DELETE FROM submitted WHERE study = ?1", [name])?;
            let n = tx.run("DELETE FROM studies WHERE name = ?1", [name])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_trial(&self, trial: &Trial) -> Result<(Trial, bool)> {
        let slot = slot(trial);
        let trial = trial.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .row("SELECT data FROM trials WHERE study = ?1 AND slot = ?2", params![trial.study, slot], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(d) = existing {
                return Ok((decode(&format!("{}/{slot}", trial.study), &d)?, false));
            }
            let id: Option<i64> = tx
                .row("UPDATE studies SET next_id = next_id + 1 WHERE name = ?1 RETURNING next_id - 1", [&trial.study], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(id) = id else { return Err(StoreError::no_study(trial.study.clone())) };
            let mut t = trial.clone();
            t.id = id as u64;
            let seq = next_seq(&tx)?;
            tx.run(
                "INSERT INTO trials (study, id, slot, state, attempt, seq, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.study, id, slot, t.state.as_str(), t.attempt, seq, encode(&slot, &t)?],
            )?;
            tx.commit()?;
            Ok((t, true))
        })
        .await
    }

    async fn get_trial(&self, study: &str, id: u64) -> Result<Option<Trial>> {
        let study = study.to_string();
        self.with(move |c| read_trial(c, &study, id)).await
    }

    async fn list_trials(&self, study: &str) -> Result<Vec<Trial>> {
        let study = study.to_string();
        self.with(move |c| {
            let study = study.as_str();
            let mut st =
                c.prepare_cached("SELECT id, data FROM trials WHERE study = ?1 ORDER BY id")?;
            let rows = st.query_map([study], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, data) = row?;
                out.push(decode(&format!("{study}/{id}"), &data)?);
            }
            Ok(out)
        })
        .await
    }

    async fn changed_trials(
        &self,
        study: &str,
        since: u64,
        keep: &SeriesKeep,
    ) -> Result<(Vec<Trial>, u64)> {
        let (study, keep) = (study.to_string(), keep.clone());
        self.with(move |c| {
            let study = study.as_str();
            let tx = c.transaction()?;
            let top: i64 = tx.row("SELECT seq FROM sequence WHERE one = 1", [], |r| r.get(0))?;
            let mut out = Vec::new();
            {
                let mut st = tx.prepare_cached("SELECT id, data FROM trials WHERE study = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY id")?;
                let rows = st.query_map(params![study, since as i64, top], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (id, data) = row?;
                    let t = Trial::decode(&data, &keep).map_err(|source| StoreError::Corrupt { key: format!("{study}/{id}"), source })?;
                    out.push(t);
                }
            }
            tx.commit()?;
            Ok((out, top as u64))
        })
        .await
    }

    async fn update_trial(
        &self,
        study: &str,
        id: u64,
        expect: &Expect,
        update: &TrialUpdate,
    ) -> Result<Written> {
        let (study, expect, update) = (study.to_string(), expect.clone(), update.clone());
        self.with(move |c| {
            let study = study.as_str();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut t) = read_trial(&tx, study, id)? else { return Ok(Written::Conflict(None)) };
            if let Some(refused) = crate::refusal(study, id, &expect, &update, &t) {
                return refused;
            }
            update.apply(&mut t);
            let seq = next_seq(&tx)?;
            tx.run(
                "UPDATE trials SET state = ?3, attempt = ?4, seq = ?5, data = ?6 WHERE study = ?1 AND id = ?2",
                params![study, id as i64, t.state.as_str(), t.attempt, seq, encode(&format!("{study}/{id}"), &t)?],
            )?;
            tx.commit()?;
            Ok(Written::Done(t))
        })
        .await
    }

    async fn take_lease(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
        gap: Millis,
    ) -> Result<Lease> {
        let (study, holder) = (study.to_string(), holder.to_string());
        self.with(move |c| {
            let study = study.as_str();
            let holder = holder.as_str();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<(String, i64, i64)> = tx
                .row(
                    "SELECT holder, until, since FROM leases WHERE study = ?1",
                    [study],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let mut since = now;
            if let Some((h, u, s)) = current {
                if h != holder && u > now {
                    return Ok(Lease {
                        holder: h,
                        until: u,
                        since: s,
                    });
                }
                // 0: written before leases kept `since` (a chain not known).
                if u >= now - gap && s > 0 {
                    since = s;
                }
            }
            tx.run(
                "INSERT INTO leases (study, holder, until, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (study) DO UPDATE SET holder = ?2, until = ?3, since = ?4",
                params![study, holder, until, since],
            )?;
            tx.commit()?;
            Ok(Lease {
                holder: holder.to_string(),
                until,
                since,
            })
        })
        .await
    }

    async fn release_lease(&self, study: &str, holder: &str, now: Millis) -> Result<()> {
        let (study, holder) = (study.to_string(), holder.to_string());
        self.with(move |c| {
            c.run(
                "UPDATE leases SET until = MIN(until, ?3) WHERE study = ?1 AND holder = ?2",
                params![study, holder, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn leases(&self) -> Result<Vec<(String, Lease)>> {
        self.with(move |c| {
            let mut q =
                c.prepare("SELECT study, holder, until, since FROM leases ORDER BY study")?;
            let rows = q.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Lease {
                        holder: r.get(1)?,
                        until: r.get(2)?,
                        since: r.get(3)?,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn expire_lease(&self, study: &str, lease: &Lease) -> Result<bool> {
        let (study, lease) = (study.to_string(), lease.clone());
        self.with(move |c| {
            let study = study.as_str();
            let n = c.run(
                "DELETE FROM leases WHERE study = ?1 AND holder = ?2 AND until = ?3",
                params![study, lease.holder, lease.until],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_submitted(&self, study: &str, on: bool) -> Result<()> {
        let study = study.to_string();
        self.with(move |c| {
            let study = study.as_str();
            if on {
                c.run(
                    "INSERT OR IGNORE INTO submitted (study) VALUES (?1)",
                    [study],
                )?;
            } else {
                c.run("DELETE FROM submitted WHERE study = ?1", [study])?;
            }
            Ok(())
        })
        .await
    }

    async fn submitted(&self) -> Result<Vec<String>> {
        self.with(move |c| {
            let mut q = c.prepare("SELECT study FROM submitted ORDER BY study")?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{Params, TrialState};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn busy_and_io_are_retryable_constraints_and_schema_are_bugs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let _store = SqliteStore::open(&path).unwrap();
        let a = Connection::open(&path).unwrap();
        let b = Connection::open(&path).unwrap();
        b.busy_timeout(Duration::ZERO).unwrap();
        a.execute_batch("BEGIN IMMEDIATE").unwrap();
        let busy = StoreError::from(b.execute_batch("BEGIN IMMEDIATE").unwrap_err());
        assert!(busy.is_retryable(), "{busy}");
        a.execute_batch("ROLLBACK").unwrap();
        let twice = "INSERT INTO studies (name, state, data) VALUES ('x', 'active', '{}'), ('x', 'active', '{}')";
        let dup = StoreError::from(a.execute(twice, []).unwrap_err());
        assert!(
            matches!(dup, StoreError::Database(_)) && !dup.is_retryable(),
            "{dup}"
        );
        let schema = StoreError::from(a.execute("SELECT nope FROM studies", []).unwrap_err());
        assert!(!schema.is_retryable(), "{schema}");
    }

    #[test]
    fn many_processes_worth_of_writers_never_lose_a_write() {
        // Several connections (as separate agents would hold) increment metrics under
        // the conditional-write protocol; every increment must survive.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = SqliteStore::open(&path).unwrap();
        rt().block_on(async {
            s.create_study(&crate::conformance::record("s"))
                .await
                .unwrap();
            s.create_trial(&Trial::new("s", 0, 0, 0, Params::new(), 0))
                .await
                .unwrap();
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = SqliteStore::open(&path).unwrap();
                    rt().block_on(async {
                        let mut done = 0;
                        while done < 50 {
                            let t = s.get_trial("s", 1).await.unwrap().unwrap();
                            let mut m = t.metrics.clone();
                            *m.entry("n".into()).or_insert(0.0) += 1.0;
                            let up = TrialUpdate {
                                metrics: Some(m),
                                attempt: Some(t.attempt + 1),
                                ..Default::default()
                            };
                            let cond = Expect::state(TrialState::Pending, t.attempt);
                            if s.update_trial("s", 1, &cond, &up)
                                .await
                                .unwrap()
                                .ok()
                                .is_some()
                            {
                                done += 1;
                            }
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = rt().block_on(s.get_trial("s", 1)).unwrap().unwrap();
        assert_eq!(t.metrics["n"], 200.0);
        assert_eq!(t.attempt, 201);
    }
}

#[cfg(test)]
mod conformance_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s: std::sync::Arc<dyn TrialStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("a.db")).unwrap());
        crate::conformance::run_all(s, "sqlite").await;
    }
}

#[cfg(test)]
mod change_tests {
    use super::*;
    use augur_model::{Params, TrialState};

    #[test]
    fn changed_trials_returns_only_what_moved() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            s.create_study(&crate::conformance::record("s"))
                .await
                .unwrap();
            for r in 0..3 {
                s.create_trial(&Trial::new("s", 0, 0, r, Params::new(), 0))
                    .await
                    .unwrap();
            }
            let (all, mark) = s
                .changed_trials("s", 0, &augur_model::SeriesKeep::Whole)
                .await
                .unwrap();
            assert_eq!(all.len(), 3);
            let (none, mark2) = s
                .changed_trials("s", mark, &augur_model::SeriesKeep::Whole)
                .await
                .unwrap();
            assert!(none.is_empty());
            assert_eq!(mark, mark2);
            let up = TrialUpdate {
                state: Some(TrialState::Starting),
                ..Default::default()
            };
            s.update_trial("s", 2, &Expect::state(TrialState::Pending, 1), &up)
                .await
                .unwrap();
            let (one, _) = s
                .changed_trials("s", mark, &augur_model::SeriesKeep::Whole)
                .await
                .unwrap();
            assert_eq!(one.iter().map(|t| t.id).collect::<Vec<_>>(), vec![2]);
        });
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    /// A database an older augur wrote (schema 2: leases without `since`) opens,
    /// keeps its lease, and takes leases with `since` from then on.
    #[tokio::test]
    async fn an_older_database_gains_lease_chains() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(&SCHEMA.replace(
                "until INTEGER NOT NULL, since INTEGER NOT NULL DEFAULT 0)",
                "until INTEGER NOT NULL)",
            ))
            .expect("old schema");
            c.execute_batch(
                "INSERT INTO leases (study, holder, until) VALUES ('s', 'old', 5000);
                 PRAGMA user_version = 2;",
            )
            .expect("old lease");
        }
        let s = SqliteStore::open(&path).expect("upgraded");
        let before = s.leases().await.expect("leases");
        assert_eq!(
            before,
            vec![(
                "s".to_string(),
                Lease {
                    holder: "old".into(),
                    until: 5_000,
                    since: 0
                }
            )]
        );
        let l = s
            .take_lease("s", "new", 6_000, 9_000, 5_000)
            .await
            .expect("take");
        assert_eq!((l.holder.as_str(), l.until), ("new", 9_000));
        assert_eq!(
            l.since, 6_000,
            "an old lease's chain is not known: it starts"
        );
    }
}
