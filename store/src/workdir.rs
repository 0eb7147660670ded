//! An attempt's working directory: fresh, holding the study's `run.files` (the
//! agent's, and `augur script --run`'s).

use augur_model::Study;
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
    fill(study, dir)
}

/// Copies the study's `run.files` into `dir`, a fresh working directory.
pub fn fill(study: &Study, dir: &Path) -> io::Result<()> {
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
