//! The embedded default's files, all under one directory (`.augur/` by default).

use std::path::{Path, PathBuf};

/// Paths of the embedded default.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The state directory from `AUGUR_HOME`, else `.augur` under the working directory.
    pub fn from_env() -> Layout {
        match std::env::var_os("AUGUR_HOME") {
            Some(h) if !h.is_empty() => Layout::new(PathBuf::from(h)),
            _ => Layout::new(".augur"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("augur.db")
    }
    pub fn logs(&self, study: &str) -> PathBuf {
        self.root.join("logs").join(study)
    }
    /// Log file of one attempt.
    pub fn log_file(&self, study: &str, id: u64, attempt: u32) -> PathBuf {
        self.logs(study).join(format!("{id}.{attempt}.log"))
    }
    /// Fresh working directory of one attempt.
    pub fn work_dir(&self, study: &str, id: u64, attempt: u32) -> PathBuf {
        self.root
            .join("work")
            .join(study)
            .join(format!("{id}.{attempt}"))
    }
    /// Persistent directory of a dataset, shared by the trials that need it.
    pub fn dataset_dir(&self, study: &str, dataset: &str) -> PathBuf {
        self.root.join("data").join(study).join(dataset)
    }
    /// A trial's checkpoint directory (`AUGUR_CHECKPOINT_DIR`), kept across its
    /// attempts: a retried or resumed attempt finds what the last one saved.
    pub fn checkpoint_dir(&self, study: &str, id: u64) -> PathBuf {
        self.checkpoints(study).join(id.to_string())
    }
    /// Every checkpoint of a study.
    pub fn checkpoints(&self, study: &str) -> PathBuf {
        self.root.join("checkpoints").join(study)
    }
    /// Where an agent that takes several attempts (`--reuse`) says which it runs
    /// now, for an orchestrator that adopts it after a crash (its command line
    /// names only its first). By pid and the process's start time (pids are reused).
    pub fn agent_file(&self, pid: u32, started: u64) -> PathBuf {
        self.root.join("agents").join(format!("{pid}.{started}"))
    }
    pub fn is_under(&self, p: &Path) -> bool {
        p.starts_with(&self.root)
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field
/// 22; the command name before it is in parentheses and may hold spaces): with the
/// pid, it names a process uniquely.
pub fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}
