//! Dynamic shell completion: clap's engine (`COMPLETE=<shell> augur -- <words>`, which
//! the script `augur completions <shell>` installs calls at each TAB) with the names of
//! the studies, and `STUDY/TRIAL` targets, read from the local database.
//!
//! The state directory is `AUGUR_HOME`, else `.augur` (a `--home` typed on the same
//! line is not seen). The AWS backend's studies are not listed: a TAB must not wait on
//! the network.

use augur_store::{Layout, SqliteStore, TrialStore};
use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter, CompletionCandidate};
use std::ffi::OsStr;
use std::path::PathBuf;

/// The variable that asks `augur` for completions instead of running a command.
pub const VAR: &str = "COMPLETE";

/// Study names, for a `<STUDY>` argument.
pub fn studies() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        names()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect::<Vec<_>>()
    })
}

/// `STUDY/` while the study is being typed, then `STUDY/TRIAL` with its trials.
pub fn targets() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let current = current.to_string_lossy();
        match current.split_once('/') {
            None => names()
                .into_iter()
                .map(|n| CompletionCandidate::new(format!("{n}/")))
                .collect(),
            Some((study, _)) => trial_ids(study)
                .into_iter()
                .map(|id| CompletionCandidate::new(format!("{study}/{id}")))
                .collect(),
        }
    })
}

/// The registration script for `shell`: what `COMPLETE=<shell> augur` prints.
pub fn registration(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let Some(completer) = shells.completer(&name) else {
        return Err(std::io::Error::other(format!("no completion for {name}")));
    };
    completer.write_registration(VAR, "augur", "augur", "augur", out)
}

fn store() -> Option<SqliteStore> {
    let home =
        std::env::var_os("AUGUR_HOME").map_or_else(|| PathBuf::from(".augur"), PathBuf::from);
    SqliteStore::open_existing(&Layout::new(home).db())
        .ok()
        .flatten()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
    Some(rt.block_on(f))
}

fn names() -> Vec<String> {
    let Some(store) = store() else {
        return Vec::new();
    };
    block_on(store.list_studies())
        .and_then(Result::ok)
        .map(|v| v.into_iter().map(|s| s.name).collect())
        .unwrap_or_default()
}

fn trial_ids(study: &str) -> Vec<u64> {
    let Some(store) = store() else {
        return Vec::new();
    };
    block_on(store.list_trials(study))
        .and_then(Result::ok)
        .map(|v| {
            v.into_iter()
                .filter(|t| !t.is_dataset())
                .map(|t| t.id)
                .collect()
        })
        .unwrap_or_default()
}
