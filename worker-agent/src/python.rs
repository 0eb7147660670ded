//! The `augur` Python package (`python/augur` in the repository) carried inside the
//! agent: written once into the state directory, under a name that is a hash of its
//! text, and put on each script's `PYTHONPATH` after what the study or the machine
//! already has there, so `import augur` works in any trial with nothing installed,
//! and the package always speaks the contract of the agent that runs it.

use std::path::{Path, PathBuf};

/// The package's files, by name.
const FILES: [(&str, &str); 6] = [
    (
        "__init__.py",
        include_str!("../../python/augur/__init__.py"),
    ),
    ("xgboost.py", include_str!("../../python/augur/xgboost.py")),
    (
        "lightgbm.py",
        include_str!("../../python/augur/lightgbm.py"),
    ),
    ("keras.py", include_str!("../../python/augur/keras.py")),
    (
        "lightning.py",
        include_str!("../../python/augur/lightning.py"),
    ),
    (
        "transformers.py",
        include_str!("../../python/augur/transformers.py"),
    ),
];

/// FNV-1a over every file's name and text: the directory's name changes with them.
fn digest() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in FILES {
        for b in name.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The directory to put on `PYTHONPATH` (it holds `augur/`), written under `root`
/// if it is not there yet; `None` if it cannot be (the script runs without it).
pub fn package_dir(root: &Path) -> Option<PathBuf> {
    let dir = root.join("python").join(format!("augur-{:016x}", digest()));
    if dir.join("augur").join(FILES[0].0).is_file() {
        return Some(dir);
    }
    // Written aside, then renamed into place: a reader never sees half of it, and
    // of two agents writing at once, one rename wins and both use it.
    let tmp = root
        .join("python")
        .join(format!(".augur-{}-{:016x}", std::process::id(), digest()));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(tmp.join("augur"))?;
        for (name, text) in FILES {
            std::fs::write(tmp.join("augur").join(name), text)?;
        }
        Ok(())
    };
    let placed = write().and_then(|_| std::fs::rename(&tmp, &dir));
    let _ = std::fs::remove_dir_all(&tmp);
    (placed.is_ok() || dir.join("augur").join(FILES[0].0).is_file()).then_some(dir)
}

/// `PYTHONPATH` for a script: what it had (`prior`), then the package.
pub fn python_path(prior: Option<&str>, package: &Path) -> String {
    match prior.filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}:{}", package.display()),
        None => package.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_is_written_once_and_goes_last_on_the_path() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = package_dir(root.path()).expect("written");
        let init = std::fs::read_to_string(dir.join("augur/__init__.py")).expect("init");
        assert!(init.contains("def report("));
        assert_eq!(package_dir(root.path()), Some(dir.clone()), "found again");
        let entries = std::fs::read_dir(root.path().join("python"))
            .expect("dir")
            .count();
        assert_eq!(entries, 1, "no leftovers");
        assert_eq!(
            python_path(Some("/mine"), &dir),
            format!("/mine:{}", dir.display())
        );
        assert_eq!(python_path(Some(""), &dir), dir.display().to_string());
    }
}
