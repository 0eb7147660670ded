//! `augur script STUDY/TRIAL` (diviner's `diviner script`): the exact bash a trial
//! ran, with the environment its agent gave it and the commands that fetch its files,
//! to read or to run by hand. `--run` runs it in a fresh directory, as the agent would,
//! and records nothing.

use super::{complete, parse_target, AppError, CmdResult};
use crate::app::backend::Backend;
use augur_aws::boot::sh_quote;
use augur_model::agent::{env, script_env, script_of};
use augur_model::{StudyRecord, Trial};
use augur_store::Layout;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ScriptArgs {
    /// The trial, as STUDY/TRIAL (for example quadratic/3).
    #[arg(value_name = "STUDY/TRIAL", add = complete::targets())]
    target: String,
    /// Run it now, in a fresh directory with the study's files, and exit with its exit
    /// code (nothing is recorded; secrets come from variables of the same name).
    #[arg(long)]
    run: bool,
    /// The directory --run works in (made afresh) [default: a new temporary one].
    #[arg(long, requires = "run", value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Where the study's files come from, as shell commands run in the working directory.
pub enum Files<'a> {
    /// Copied from the study file's directory (the local backend).
    Local,
    /// Downloaded from the artifacts bucket (AWS), with the trial's checkpoint as
    /// its manifest names it (if it has one).
    Bucket(&'a str, Option<&'a augur_aws::checkpoint::Manifest>),
    /// Already there (`--run` fetched them), from the local backend or not.
    Fetched { local: bool },
}

impl Files<'_> {
    /// Whether the trial ran on the local backend (where checkpoints are kept).
    fn local(&self) -> bool {
        match self {
            Files::Local => true,
            Files::Bucket(..) => false,
            Files::Fetched { local } => *local,
        }
    }
}

/// The script: a header saying what ran where, the commands that fetch the files,
/// the checks for secrets, the environment, and the script as the agent ran it.
pub fn render(rec: &StudyRecord, t: &Trial, files: Files, layout: &Layout) -> String {
    let study = &rec.spec;
    let mut out = String::from("#!/usr/bin/env bash\n");
    let what = match &t.dataset {
        Some(d) => format!("dataset `{d}` (record {})", t.id),
        None => format!("trial {}", t.id),
    };
    out.push_str(&format!(
        "# augur script {}/{}: attempt {} of {what}, {}{}{}.\n",
        rec.name,
        t.id,
        t.attempt,
        t.state,
        t.exit_code
            .map(|c| format!(", exit code {c}"))
            .unwrap_or_default(),
        t.machine
            .as_deref()
            .map(|m| format!(", on {m}"))
            .unwrap_or_default(),
    ));
    out.push_str("# Run it in an empty directory: it fetches the study's files, sets what the agent\n# set, and runs the script as the agent did.\nset -euo pipefail\n");
    if !study.run.files.is_empty() && t.dataset.is_none() {
        match &files {
            Files::Local => {
                for f in &study.run.files {
                    let src = Path::new(&study.dir).join(f);
                    out.push_str(&format!(
                        "cp -R {} .\n",
                        sh_quote(&src.display().to_string())
                    ));
                }
            }
            Files::Bucket(bucket, _) => out.push_str(&format!(
                "aws s3 cp --recursive {} .\n",
                sh_quote(&format!(
                    "s3://{bucket}/{}",
                    augur_aws::s3::files_prefix(&rec.name)
                ))
            )),
            Files::Fetched { .. } => {}
        }
    }
    for (var, reference) in &study.run.secrets {
        out.push_str(&format!(
            ": \"${{{var}:?export {var}: the value of {} (secrets are not recorded)}}\"\nexport {var}\n",
            reference.replace(['"', '`', '$', '\\'], "")
        ));
    }
    let root = layout
        .root
        .canonicalize()
        .unwrap_or_else(|_| layout.root.clone());
    let abs = Layout::new(root);
    for (k, v) in script_env(study, t, |d| abs.dataset_dir(&rec.name, d)) {
        out.push_str(&format!("export {k}={}\n", sh_quote(&v)));
    }
    if !t.is_dataset() {
        out.push_str(&checkpoint_lines(rec, t, &files, &abs));
    }
    out.push_str(&format!("export {}=\"$PWD\"\n", env::WORKDIR));
    let body = format!("{}{}", study.run.preamble, script_of(study, t));
    out.push_str(&format!("exec bash -c {}\n", sh_quote(&body)));
    out
}

/// Where the trial's checkpoint directory is: the one the local backend keeps, or
/// a copy of the bucket's in `CHECKPOINT_COPY` (fetched by the script, or by
/// `--run` before it).
fn checkpoint_lines(rec: &StudyRecord, t: &Trial, files: &Files, abs: &Layout) -> String {
    let mut out = String::new();
    let dir = if files.local() {
        sh_quote(&abs.checkpoint_dir(&rec.name, t.id).display().to_string())
    } else {
        match files {
            // The files of the checkpoint its manifest names (published whole).
            Files::Bucket(bucket, Some(manifest)) => {
                let prefix = augur_aws::s3::checkpoint_prefix(&rec.name, t.id);
                if let Err(e) = manifest.check(&prefix) {
                    out.push_str(&format!("# the checkpoint is not fetched: {e}\n"));
                    return out
                        + &format!(
                            "export {}=\"$PWD/{CHECKPOINT_COPY}\"\n",
                            env::CHECKPOINT_DIR
                        );
                }
                out.push_str(&format!("mkdir -p {CHECKPOINT_COPY}\n"));
                for (rel, e) in &manifest.files {
                    out.push_str(&format!(
                        "aws s3 cp {} {}\n",
                        sh_quote(&format!("s3://{bucket}/{}", e.key)),
                        sh_quote(&format!("{CHECKPOINT_COPY}/{rel}"))
                    ));
                }
            }
            // None published yet, or an older agent's files straight under the prefix.
            Files::Bucket(bucket, None) => out.push_str(&format!(
                "mkdir -p {CHECKPOINT_COPY}\naws s3 cp --recursive {} {CHECKPOINT_COPY}/\n",
                sh_quote(&format!(
                    "s3://{bucket}/{}",
                    augur_aws::s3::checkpoint_prefix(&rec.name, t.id)
                ))
            )),
            _ => {}
        }
        format!("\"$PWD/{CHECKPOINT_COPY}\"")
    };
    out.push_str(&format!("export {}={dir}\n", env::CHECKPOINT_DIR));
    out
}

/// The copy of a trial's checkpoint directory an AWS trial's script works on.
const CHECKPOINT_COPY: &str = ".augur-checkpoint";

pub async fn script(ctx: &Backend, args: ScriptArgs) -> CmdResult {
    let (name, id) = parse_target(&args.target)?;
    let no = || AppError::input(format!("no study named `{name}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(&name).await?.ok_or_else(no)?;
    let t = store
        .get_trial(&name, id)
        .await?
        .ok_or_else(|| AppError::input(format!("study `{name}` has no trial {id}")))?;
    if !args.run {
        let bucket = ctx.is_aws().then(|| ctx.bucket()).transpose()?;
        let manifest = match (&bucket, t.is_dataset()) {
            (Some(_), false) => ctx.checkpoint_manifest(&name, id).await?,
            _ => None,
        };
        let files = match &bucket {
            Some(b) => Files::Bucket(b, manifest.as_ref()),
            None => Files::Local,
        };
        print!("{}", render(&rec, &t, files, &ctx.layout));
        return Ok(0);
    }
    let dir = match args.dir {
        Some(d) => d,
        None => {
            std::env::temp_dir().join(format!("augur-script-{name}-{id}-{}", std::process::id()))
        }
    };
    ctx.fetch_study_files(&rec.spec, &dir).await?;
    if ctx.is_aws() && !t.is_dataset() {
        let n = ctx
            .fetch_checkpoint(&name, id, &dir.join(CHECKPOINT_COPY))
            .await?;
        eprintln!("augur: {n} checkpoint file(s) restored into {CHECKPOINT_COPY}");
    }
    let path = dir.join("augur-script.sh");
    let fetched = Files::Fetched {
        local: !ctx.is_aws(),
    };
    std::fs::write(&path, render(&rec, &t, fetched, &ctx.layout))
        .map_err(|e| AppError::input(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("augur: running {} in {}", args.target, dir.display());
    let status = std::process::Command::new("bash")
        .arg(&path)
        .current_dir(&dir)
        .status()
        .map_err(|e| AppError::unavailable(format!("cannot start bash: {e}")))?;
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_model::{Params, Study, StudyState, Value};

    /// The rendered script, run by bash in an empty directory, reproduces what the
    /// agent gave the trial: its files, its environment, its script.
    #[test]
    fn the_rendered_script_runs_the_trial_as_the_agent_did() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("data.txt"), "it's here\n").expect("file");
        let text = "name='s'\nobjective={metric='m'}\ntrials=1\n[params]\nx={range=[0.0,1.0]}\n[run]\nfiles=['data.txt']\nenv={GREETING=\"it's $HOME\"}\nscript='cat data.txt; echo \"x=$AUGUR_PARAM_X $GREETING attempt $AUGUR_ATTEMPT in $AUGUR_WORKDIR\"'\n";
        let spec = Study::parse(text, "s.toml", dir.path()).expect("study");
        let rec = StudyRecord {
            name: "s".into(),
            spec,
            state: StudyState::Done,
            created_ms: 0,
            updated_ms: 0,
            drive: None,
            bounds: Default::default(),
            reason: None,
        };
        let params: Params = [("x".to_string(), Value::Float(0.25))].into();
        let mut t = Trial::new("s", 3, 3, 0, params, 0);
        t.attempt = 2;
        let script = render(
            &rec,
            &t,
            Files::Local,
            &Layout::new(dir.path().join(".augur")),
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(&work)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let canon = work.canonicalize().expect("canon");
        assert_eq!(
            stdout,
            format!(
                "it's here\nx=0.25 it's $HOME attempt 2 in {}\n",
                canon.display()
            ),
            "{script}"
        );
    }
}
