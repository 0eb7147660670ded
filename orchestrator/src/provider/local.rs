//! The embedded default: each trial attempt is an `augur-agent` child process.
//!
//! Agents run in their own process group, so a Ctrl-C at the terminal reaches only
//! the orchestrator, and they outlive an orchestrator that is killed: the next one
//! finds them in `/proc` by their command line (the local equivalent of EC2 tags)
//! and adopts them.

use super::{Launched, MachineProvider, ProviderError};
use crate::reconcile::Machine;
use async_trait::async_trait;
use augur_model::agent::{self, Invocation};
use augur_model::{Study, Trial};
use augur_store::Layout;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Agents by pid, with the study each runs for.
type Agents = HashMap<u32, (String, Machine)>;

/// How often `/proc` is scanned for agents this process did not start.
const RESCAN: Duration = Duration::from_secs(5);

/// Local processes as machines.
pub struct LocalProvider {
    agent: PathBuf,
    layout: Layout,
    heartbeat: Duration,
    /// Agents this process started and has not reaped yet, by pid.
    children: Arc<Mutex<Agents>>,
    /// Agents found in `/proc` (started by an earlier orchestrator), by pid.
    adopted: Mutex<(Option<Instant>, Agents)>,
    notify: Arc<Notify>,
}

impl LocalProvider {
    /// `agent` is the `augur-agent` binary; `layout` the state directory.
    pub fn new(agent: PathBuf, layout: Layout, heartbeat: Duration) -> LocalProvider {
        // Absolute (the directory may not exist yet): agents get it as --home, and it is
        // how their command lines and their scripts' environments are recognised.
        let root = layout
            .root
            .canonicalize()
            .or_else(|_| std::path::absolute(&layout.root))
            .unwrap_or(layout.root.clone());
        LocalProvider {
            agent,
            layout: Layout::new(root),
            heartbeat,
            children: Arc::new(Mutex::new(HashMap::new())),
            adopted: Mutex::new((None, HashMap::new())),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Finds `augur-agent` next to the running binary, else on `PATH`.
    pub fn find_agent() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(agent::env::AGENT).map(PathBuf::from) {
            return Some(p);
        }
        let exe = std::env::current_exe().ok()?;
        let sibling = exe.parent()?.join(agent::PROGRAM);
        if sibling.is_file() {
            return Some(sibling);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(agent::PROGRAM))
                .find(|p| p.is_file())
        })
    }

    fn scan_proc(&self) -> Agents {
        let mut out = HashMap::new();
        let root = self.layout.root.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((study, m)) = agent_of(pid, &root) {
                out.insert(pid, (study, m));
            }
        }
        out
    }
}

/// The (study, machine) an `augur-agent` process with this pid runs for our state
/// directory, read from its command line.
fn agent_of(pid: u32, root: &str) -> Option<(String, Machine)> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let (study, trial, attempt) = attempt_of_cmdline(&raw, root)?;
    Some((
        study,
        Machine {
            id: pid.to_string(),
            trial,
            attempt,
            gone: None,
            incarnation: None,
        },
    ))
}

/// The (study, trial, attempt) of an agent's command line as `/proc` gives it
/// (arguments each ended by a NUL), if the agent works in `root`.
fn attempt_of_cmdline(raw: &[u8], root: &str) -> Option<(String, u64, u32)> {
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
    (inv.home == root).then_some((inv.study, inv.trial, inv.attempt))
}

/// Ends the script processes of an attempt whose agent died without ending them, so
/// they do not run on unattended. They are found by the environment every script
/// process inherits (`AUGUR_STUDY`, `AUGUR_TRIAL`, `AUGUR_ATTEMPT`, and an
/// `AUGUR_WORKDIR` under this state directory). Only called when an agent died
/// abnormally, so the scan of `/proc` is off the normal path.
fn end_orphans(root: &Path, study: &str, trial: u64, attempt: u32) {
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

fn signal(pid: u32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill takes plain integers and has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

#[async_trait]
impl MachineProvider for LocalProvider {
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        let log = self.layout.log_file(&study.name, trial.id, trial.attempt);
        // The agent's own diagnostics go to the attempt's log too.
        let stderr = augur_store::logfile::open_append(&log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let invocation = Invocation {
            home: self.layout.root.display().to_string(),
            aws: None,
            study: study.name.clone(),
            trial: trial.id,
            attempt: trial.attempt,
            heartbeat_ms: self.heartbeat.as_millis() as u64,
            machine: None,
            shutdown: false,
        };
        let mut cmd = tokio::process::Command::new(&self.agent);
        cmd.args(invocation.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| ProviderError::Launch(format!("{}: {e}", self.agent.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Launch("agent exited at once".into()))?;
        let machine = Machine {
            id: pid.to_string(),
            trial: trial.id,
            attempt: trial.attempt,
            gone: None,
            incarnation: None,
        };
        self.children
            .lock()
            .map_err(|_| ProviderError::Unavailable("lock".into()))?
            .insert(pid, (study.name.clone(), machine));
        let (children, notify) = (self.children.clone(), self.notify.clone());
        let (root, name, id, attempt) = (
            self.layout.root.clone(),
            study.name.clone(),
            trial.id,
            trial.attempt,
        );
        tokio::spawn(async move {
            let status = child.wait().await;
            // An agent killed by a signal could not end its script: do it here.
            if status.is_ok_and(|s| std::os::unix::process::ExitStatusExt::signal(&s).is_some()) {
                end_orphans(&root, &name, id, attempt);
            }
            if let Ok(mut c) = children.lock() {
                c.remove(&pid);
            }
            notify.notify_one();
        });
        Ok(Launched::free(pid.to_string()))
    }

    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        let mut out: Vec<Machine> = {
            let c = self
                .children
                .lock()
                .map_err(|_| ProviderError::Unavailable("lock".into()))?;
            c.values()
                .filter(|(s, _)| s == study)
                .map(|(_, m)| m.clone())
                .collect()
        };
        let mut adopted = self
            .adopted
            .lock()
            .map_err(|_| ProviderError::Unavailable("lock".into()))?;
        if adopted.0.is_none_or(|t| t.elapsed() >= RESCAN) {
            let ours: Vec<u32> = self
                .children
                .lock()
                .map(|c| c.keys().copied().collect())
                .unwrap_or_default();
            let mut found = self.scan_proc();
            found.retain(|pid, _| !ours.contains(pid));
            *adopted = (Some(Instant::now()), found);
        } else {
            // Between scans, keep only adopted agents that still run.
            let root = self.layout.root.display().to_string();
            let home = &self.layout.root;
            adopted.1.retain(|pid, (study, m)| {
                let alive = agent_of(*pid, &root).is_some();
                if !alive {
                    // Not our child: we cannot tell how it ended, so look.
                    end_orphans(home, study, m.trial, m.attempt);
                }
                alive
            });
        }
        out.extend(
            adopted
                .1
                .values()
                .filter(|(s, _)| s == study)
                .map(|(_, m)| m.clone()),
        );
        Ok(out)
    }

    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        let mut all: Vec<(String, Machine)> = self.scan_proc().into_values().collect();
        all.sort_by(|a, b| (&a.0, a.1.trial, a.1.attempt).cmp(&(&b.0, b.1.trial, b.1.attempt)));
        Ok(all)
    }

    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError> {
        let Ok(pid) = machine.id.parse::<u32>() else {
            return Ok(());
        };
        let root = self.layout.root.display().to_string();
        // Only signal a process that is still this trial's agent (pids are reused).
        if agent_of(pid, &root)
            .is_some_and(|(_, m)| m.trial == machine.trial && m.attempt == machine.attempt)
        {
            signal(pid, libc::SIGTERM);
            // The agent ends its script (SIGTERM, grace, SIGKILL); if it hangs, kill it.
            let m = machine.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if agent_of(pid, &root)
                    .is_some_and(|(_, x)| x.trial == m.trial && x.attempt == m.attempt)
                {
                    signal(pid, libc::SIGKILL);
                }
            });
        }
        Ok(())
    }

    fn sees_all(&self) -> bool {
        true
    }

    async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the provider launches, read back as `/proc/PID/cmdline` shows it.
    #[test]
    fn launched_agents_are_recognised_by_their_command_line() {
        let inv = Invocation {
            home: "/state/.augur".into(),
            aws: None,
            study: "s".into(),
            trial: 4,
            attempt: 2,
            heartbeat_ms: 2_000,
            machine: None,
            shutdown: false,
        };
        let mut raw = b"/bin/augur-agent\0".to_vec();
        for a in inv.to_args() {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        assert_eq!(
            attempt_of_cmdline(&raw, "/state/.augur"),
            Some(("s".to_string(), 4, 2))
        );
        assert_eq!(attempt_of_cmdline(&raw, "/other/.augur"), None);
        let other = b"/bin/sleep\0--home\0/state/.augur\0".to_vec();
        assert_eq!(attempt_of_cmdline(&other, "/state/.augur"), None);
    }
}
