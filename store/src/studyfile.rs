//! Reading a study file: the file system's part of what `augur_model::Study::parse`
//! leaves to its caller (the file's text, its directory, whether `run.files` exist).

use augur_model::{SpecError, Study};
use std::path::{Path, PathBuf};

/// Reads, parses and validates the study file at `path`; its `run.files` must exist
/// beside it.
pub fn load(path: &Path) -> Result<Study, SpecError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        path: shown.clone(),
        line: None,
        message: format!("cannot read study file: {e}"),
    })?;
    let dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let study = Study::parse(&text, &shown, &dir)?;
    study.check_files(&text, &shown, |p| p.exists())?;
    Ok(study)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_looked_for_beside_the_study_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        let text = "name='s'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\nfiles=['train.py']\n";
        std::fs::write(&path, text).unwrap();
        let e = load(&path).expect_err("train.py is missing");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("train.py"), "{e}");
        std::fs::write(dir.path().join("train.py"), "").unwrap();
        let s = load(&path).expect("train.py is there");
        assert_eq!(s.run.files, ["train.py"]);
        assert_eq!(Path::new(&s.dir), dir.path().canonicalize().unwrap());
        let e = load(&dir.path().join("none.toml")).expect_err("no file");
        assert!(e.to_string().contains("cannot read study file"), "{e}");
    }
}
