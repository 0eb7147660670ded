//! The chaos table: one row per injected fault, written by the test that injected
//! it to `<target>/debug/chaos/<key>.md` (`scripts/test.sh` prints them as one
//! table), and held to its promise.

use crate::bin_dir;
use std::time::Duration;

/// One row of the table.
pub struct Row {
    /// Orders the rows (the file's name).
    pub key: &'static str,
    pub what: &'static str,
    pub injected: String,
    pub trials: usize,
    pub completed: usize,
    /// Machines launched (instances, or local agents), all trials together.
    pub launches: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub took: Duration,
}

impl Row {
    /// Writes the row for the table, prints it, and holds it to the promise: every
    /// trial completed, none lost, none run twice.
    pub fn record(&self) {
        self.write();
        assert_eq!(self.lost, 0, "{}: trials lost", self.what);
        assert_eq!(self.duplicated, 0, "{}: duplicated", self.what);
        assert_eq!(self.completed, self.trials, "{}: not completed", self.what);
    }

    /// Writes the row for the table and prints it; the test holds it to its own
    /// promise (a study that must stop, say).
    pub fn write(&self) {
        let line = format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {:.1} |",
            self.what,
            self.injected,
            self.trials,
            self.completed,
            self.launches as f64 / self.trials.max(1) as f64,
            self.lost,
            self.duplicated,
            self.took.as_secs_f64()
        );
        let dir = bin_dir().join("chaos");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{}.md", self.key)), format!("{line}\n"));
        eprintln!("{line}");
    }
}
