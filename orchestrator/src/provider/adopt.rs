//! Agents an earlier orchestrator started, found in `/proc` by their command line
//! (the local equivalent of EC2's tags), and the scripts of an agent that died.

use crate::reconcile::Machine;
use augur_model::agent::{self, Invocation};
use augur_store::Layout;
use std::path::Path;

use super::local::machine_of;

/// The (study, machine) an `augur-agent` process with this pid runs for our state
/// directory, read from its command line, or for a warm agent that took further
/// attempts from the file where it names its current one.
pub(super) fn agent_of(pid: u32, root: &str) -> Option<(String, Machine)> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let (study, mut trial, mut attempt, reuse) = attempt_of_cmdline(&raw, root)?;
    if reuse {
        let started = augur_store::layout::process_started(pid)?;
        let file = Layout::new(root).agent_file(pid, started);
        if let Some((s, t, a)) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_current(&text))
        {
            if s == study {
                (trial, attempt) = (t, a);
            }
        }
    }
    Some((study, machine_of(pid, trial, attempt)))
}

/// `study trial attempt`, as a warm agent writes its current attempt.
fn parse_current(text: &str) -> Option<(String, u64, u32)> {
    let mut w = text.split_whitespace();
    Some((
        w.next()?.to_string(),
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    ))
}

/// The (study, trial, attempt, warm) of an agent's command line as `/proc` gives
/// it (arguments each ended by a NUL), if the agent works in `root`.
pub(super) fn attempt_of_cmdline(raw: &[u8], root: &str) -> Option<(String, u64, u32, bool)> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let args: Vec<&str> = raw
        .split(|b| *b == 0)
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .ok()?;
    let program = args.first().and_then(|a| Path::new(a).file_name());
    if program.is_none_or(|n| n != agent::PROGRAM) {
        return None;
    }
    let inv = Invocation::parse(&args[1..])?;
    (inv.home == root).then_some((inv.study, inv.trial, inv.attempt, inv.reuse))
}

/// Ends the script processes of an attempt whose agent died without ending them, so
/// they do not run on unattended. They are found by the environment every script
/// process inherits (`AUGUR_STUDY`, `AUGUR_TRIAL`, `AUGUR_ATTEMPT`, and an
/// `AUGUR_WORKDIR` under this state directory). Only called when an agent died
/// abnormally, so the scan of `/proc` is off the normal path.
pub(super) fn end_orphans(root: &Path, study: &str, trial: u64, attempt: u32) {
    let want = [
        format!("{}={study}", agent::env::STUDY),
        format!("{}={trial}", agent::env::TRIAL),
        format!("{}={attempt}", agent::env::ATTEMPT),
    ];
    let workdir = format!("{}={}/", agent::env::WORKDIR, root.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let has = |v: &str| vars.contains(&v.as_bytes());
        let under_root = vars.iter().any(|x| x.starts_with(workdir.as_bytes()));
        if under_root && want.iter().all(|w| has(w)) {
            signal(pid, libc::SIGKILL);
        }
    }
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill takes plain integers and has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}
