//! The attempt's working directory and environment.

use augur_model::agent::env as var;
use augur_model::{Study, Trial};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Copies `src` (file or directory) to `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

/// Makes a fresh working directory holding the study's `run.files`.
pub fn prepare(study: &Study, dir: &Path) -> io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for f in &study.run.files {
        let src = Path::new(&study.dir).join(f);
        let name = Path::new(f)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(f));
        copy_tree(&src, &dir.join(name))
            .map_err(|e| io::Error::new(e.kind(), format!("copying {}: {e}", src.display())))?;
    }
    Ok(())
}

/// The script's environment (on top of the agent's own): the script contract.
pub fn environment(
    study: &Study,
    trial: &Trial,
    dataset_dir: impl Fn(&str) -> PathBuf,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = study.run.env.clone();
    env.insert(var::STUDY.into(), study.name.clone());
    env.insert(var::TRIAL.into(), trial.id.to_string());
    env.insert(var::ATTEMPT.into(), trial.attempt.to_string());
    env.insert(var::REPLICATE.into(), trial.replicate.to_string());
    env.insert(
        var::PARAMS_JSON.into(),
        serde_json::to_string(&trial.params).unwrap_or_default(),
    );
    for (k, v) in &trial.params {
        env.insert(var::param(k), v.to_string());
    }
    if let Some(d) = &trial.dataset {
        env.insert(var::DATASET.into(), d.clone());
        env.insert(
            var::DATASET_DIR.into(),
            dataset_dir(d).display().to_string(),
        );
    }
    for d in &trial.needs {
        env.insert(var::dataset_dir(d), dataset_dir(d).display().to_string());
    }
    env
}
