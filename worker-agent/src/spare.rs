//! Empty directories a warm agent's attempts leave behind, made again by a rename.
//!
//! Making a directory allocates an inode, which costs more than the rest of an
//! attempt's set-up on some file systems (ext4 without a journal looks for inodes
//! freed in the last 30 s first); renaming one allocates nothing. So a warm agent
//! whose attempt left its working directory, or its trial's checkpoint directory,
//! empty keeps that directory as the spare of its kind, and makes the next
//! attempt's by renaming the spare there. Nothing is lost: it was empty. No other
//! attempt may be using a spare: a working directory (one per attempt) is kept once
//! the script and everything it started have ended; a checkpoint directory (one per
//! trial, which a retry uses) only once its trial has succeeded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Which directory a spare stands in for.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An attempt's working directory.
    Work = 0,
    /// A trial's checkpoint directory.
    Checkpoint = 1,
}

/// The spares of one agent.
pub struct Spares {
    /// Whether spares are kept (a warm agent: it takes further attempts).
    keeping: AtomicBool,
    dirs: Mutex<[Option<PathBuf>; 2]>,
}

/// This agent's.
pub static SPARES: Spares = Spares::new();

impl Spares {
    pub const fn new() -> Spares {
        Spares {
            keeping: AtomicBool::new(false),
            dirs: Mutex::new([None, None]),
        }
    }

    /// From now on, empty directories are kept as spares (a warm agent).
    pub fn start_keeping(&self) {
        self.keeping.store(true, Ordering::Relaxed);
    }

    /// Makes directory `path` and its parents, by renaming the spare of its kind
    /// there if there is one and `path` is absent (or an empty directory).
    pub fn make(&self, kind: Kind, path: &Path) -> std::io::Result<()> {
        match self.rename_to(kind, path) {
            true => Ok(()),
            false => std::fs::create_dir_all(path),
        }
    }

    /// Renames the spare of its kind to `path`, if there is one and `path` is
    /// absent (or an empty directory): whether it did.
    pub fn rename_to(&self, kind: Kind, path: &Path) -> bool {
        let spare = self
            .dirs
            .lock()
            .ok()
            .and_then(|mut s| s[kind as usize].take());
        spare.is_some_and(|spare| std::fs::rename(&spare, path).is_ok())
    }

    /// Keeps `path` as the spare of its kind, if spares are kept and it is an
    /// empty directory.
    pub fn keep(&self, kind: Kind, path: &Path) {
        if !self.keeping.load(Ordering::Relaxed) {
            return;
        }
        let empty = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        if let (true, Ok(mut s)) = (empty, self.dirs.lock()) {
            s[kind as usize] = Some(path.to_path_buf());
        }
    }
}

impl Default for Spares {
    fn default() -> Spares {
        Spares::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_empty_directory_kept_becomes_the_next_one_and_a_full_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b, c) = (
            dir.path().join("1.1"),
            dir.path().join("2.1"),
            dir.path().join("3.1"),
        );
        let spares = Spares::new();
        // Not a warm agent: nothing is kept.
        spares.make(Kind::Work, &a).expect("a");
        spares.keep(Kind::Work, &a);
        spares.make(Kind::Work, &b).expect("b");
        assert!(a.is_dir() && b.is_dir());
        spares.start_keeping();
        // The empty one is moved, not made: the same inode, and the old name is gone.
        let inode = std::fs::metadata(&b).expect("b").ino();
        spares.keep(Kind::Work, &b);
        spares.make(Kind::Work, &c).expect("c");
        assert_eq!(std::fs::metadata(&c).expect("c").ino(), inode);
        assert!(!b.exists());
        // A directory with something in it is no spare.
        std::fs::write(c.join("result"), "1").expect("write");
        spares.keep(Kind::Work, &c);
        let d = dir.path().join("4.1");
        spares.make(Kind::Work, &d).expect("d");
        assert!(c.join("result").exists() && d.is_dir());
        assert_ne!(std::fs::metadata(&d).expect("d").ino(), inode);
        // A spare of the other kind is not taken.
        spares.keep(Kind::Checkpoint, &d);
        let e = dir.path().join("5.1");
        spares.make(Kind::Work, &e).expect("e");
        assert!(d.exists() && e.is_dir());
    }
}
