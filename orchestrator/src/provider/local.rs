//! The embedded default: each trial attempt is an `augur-agent` child process.
//!
//! Agents run in their own process group, so a Ctrl-C at the terminal reaches only
//! the orchestrator, and they outlive an orchestrator that is killed: the next one
//! finds them in `/proc` by their command line (the local equivalent of EC2 tags)
//! and adopts them.
//!
//! Warm (`run.reuse = "study"`, the default here): an agent whose attempt ended by
//! itself says `idle` and waits; the study's next launch hands it `TRIAL ATTEMPT`
//! on its standard input instead of starting a process ([`Pool`]). At most
//! `parallel` agents then run a study, each attempt is fenced as before, and an
//! agent left idle ends when the provider lets it go (or dies): its input ends. One
//! that took further attempts names its current one in a file of the state
//! directory, for an orchestrator that adopts it after a crash.
//!
//! GPUs (`run.gpus`, [`gpus`](super::gpus)): an agent starts with GPUs no running
//! agent holds; a warm agent keeps them for every attempt it takes.

#[cfg(test)]
use super::adopt::attempt_of_cmdline;
use super::adopt::{agent_of, end_orphans, signal};
use super::gpus::{self, Gpus};
use super::{Launched, MachineProvider, ProviderError};
use crate::reconcile::Machine;
use async_trait::async_trait;
use augur_model::agent::{self, Invocation};
use augur_model::cost::Billing;
use augur_model::{Study, Trial};
use augur_store::{Failure, Layout};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Agents by pid, with the study each runs for.
type Agents = HashMap<u32, (String, Machine)>;

/// Warm agents by pid: their study, their input (taken while a launch writes to
/// it), and whether they wait for an attempt.
#[derive(Default)]
struct Pool(HashMap<u32, Slot>);

struct Slot {
    study: String,
    input: Option<tokio::process::ChildStdin>,
    idle: bool,
}

impl Pool {
    /// An idle agent of `study`, with its input, marked busy.
    fn take(&mut self, study: &str) -> Option<(u32, tokio::process::ChildStdin)> {
        let (pid, slot) = self
            .0
            .iter_mut()
            .find(|(_, s)| s.idle && s.study == study && s.input.is_some())?;
        slot.idle = false;
        Some((*pid, slot.input.take()?))
    }
}

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
    /// Warm agents (`None`: one agent per attempt).
    pool: Option<Arc<Mutex<Pool>>>,
    /// Told when a warm agent says idle, or ends.
    idled: Arc<Notify>,
    /// The machine's GPUs, for a study that asks for some.
    gpus: Option<Gpus>,
}

/// How long a launch waits for one of the study's warm agents, all busy, to say it
/// is idle (one of them wrote its attempt's end: that freed the launch's slot)
/// before it starts another agent instead.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

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
            pool: None,
            idled: Arc::new(Notify::new()),
            gpus: None,
        }
    }

    /// Gives each agent `gpus.each` of the machine's GPUs to itself.
    pub fn with_gpus(mut self, gpus: Gpus) -> LocalProvider {
        self.gpus = Some(gpus);
        self
    }

    /// The GPUs for a new agent: `each` that no live process holds for this state
    /// directory (agents and scripts, of any orchestrator), or no room now.
    fn free_gpus(&self, gpus: &Gpus) -> Result<Vec<String>, ProviderError> {
        let busy = gpus::held(&self.layout.root.display().to_string());
        gpus.free(&busy).ok_or_else(|| {
            ProviderError::Capacity(Failure::said(format!(
                "every GPU of {} is held by a running trial ({} a trial); the trial waits for one to end",
                gpus.all.join(","),
                gpus.each
            )))
        })
    }

    /// Keeps agents warm: each finished attempt's agent takes the study's next.
    ///
    /// Their input is a pipe: an attempt handed to an agent that has just died is a
    /// write that fails (EPIPE), and must not end this process by SIGPIPE (`augur`
    /// restores the signal's default for `augur trials | head`), so it is ignored.
    pub fn warm(mut self) -> LocalProvider {
        // SAFETY: sets a signal's disposition to ignored; no memory is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        self.pool = Some(Arc::default());
        self
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

impl LocalProvider {
    /// How many warm agents `study` has.
    fn pooled_for(&self, study: &str) -> usize {
        self.pool
            .as_ref()
            .and_then(|p| {
                let p = p.lock().ok()?;
                Some(p.0.values().filter(|s| s.study == study).count())
            })
            .unwrap_or(0)
    }

    /// The warm agents this provider started and keeps.
    fn pooled(&self) -> Vec<u32> {
        self.pool
            .as_ref()
            .and_then(|p| p.lock().ok().map(|p| p.0.keys().copied().collect()))
            .unwrap_or_default()
    }

    /// Hands the attempt to an idle warm agent of the study, if there is one: the
    /// pid of the agent that took it.
    async fn hand_over(&self, study: &Study, trial: &Trial) -> Result<Option<u32>, ProviderError> {
        use tokio::io::AsyncWriteExt;
        let Some(pool) = &self.pool else {
            return Ok(None);
        };
        loop {
            let Some((pid, mut input)) = pool.lock().map_err(poisoned)?.take(&study.name) else {
                return Ok(None);
            };
            // Its machine from now on (its own writes are fenced by the attempt).
            let machine = machine_of(pid, trial.id, trial.attempt);
            self.children
                .lock()
                .map_err(poisoned)?
                .insert(pid, (study.name.clone(), machine));
            let line = format!("{} {}\n", trial.id, trial.attempt);
            if input.write_all(line.as_bytes()).await.is_ok() && input.flush().await.is_ok() {
                if let Some(slot) = pool.lock().map_err(poisoned)?.0.get_mut(&pid) {
                    slot.input = Some(input);
                }
                return Ok(Some(pid));
            }
            // It ended meanwhile: forget it, and try another.
            self.children.lock().map_err(poisoned)?.remove(&pid);
            pool.lock().map_err(poisoned)?.0.remove(&pid);
        }
    }

    /// Starts an agent for the attempt (warm, when the provider keeps agents so).
    fn spawn(&self, study: &Study, trial: &Trial) -> Result<u32, ProviderError> {
        let log = self.layout.log_file(&study.name, trial.id, trial.attempt);
        // The agent's own diagnostics go to the (first) attempt's log too.
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
            reuse: self.pool.is_some(),
            slot: None,
        };
        let piped = || match invocation.reuse {
            true => Stdio::piped(),
            false => Stdio::null(),
        };
        let mut command = tokio::process::Command::new(&self.agent);
        // Chosen and started under the state directory's lock: the next launch,
        // of this process or another, sees this agent's in its environment.
        let _choosing = match &self.gpus {
            Some(g) => {
                let file = self.layout.root.join("gpus.lock");
                let lock = gpus::lock(&file).map_err(|e| {
                    ProviderError::Launch(Failure::caused(format!("{}", file.display()), e))
                })?;
                let mine = self.free_gpus(g)?.join(",");
                for v in gpus::VISIBLE {
                    command.env(v, &mine);
                }
                command.env(gpus::HOME, &self.layout.root);
                command.env(gpus::ORDER.0, gpus::ORDER.1);
                Some(lock)
            }
            None => None,
        };
        let mut child = command
            .args(invocation.to_args())
            .stdin(piped())
            .stdout(piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let what = format!("{}: {e}", self.agent.display());
                ProviderError::Launch(Failure::caused(what, e))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Launch(Failure::said("agent exited at once")))?;
        self.children.lock().map_err(poisoned)?.insert(
            pid,
            (study.name.clone(), machine_of(pid, trial.id, trial.attempt)),
        );
        if let (Some(pool), Some(input), Some(output)) =
            (&self.pool, child.stdin.take(), child.stdout.take())
        {
            let slot = Slot {
                study: study.name.clone(),
                input: Some(input),
                idle: false,
            };
            pool.lock().map_err(poisoned)?.0.insert(pid, slot);
            let watch = Told {
                children: self.children.clone(),
                pool: Arc::downgrade(pool),
                notify: self.notify.clone(),
                idled: self.idled.clone(),
            };
            tokio::spawn(watch_idle(pid, output, watch));
        }
        self.reap(pid, child);
        Ok(pid)
    }

    /// Waits for agent `pid` in the background, then forgets it (and ends its
    /// script's processes if a signal killed it) and wakes the reconciler.
    fn reap(&self, pid: u32, mut child: tokio::process::Child) {
        let (children, notify, root) = (
            self.children.clone(),
            self.notify.clone(),
            self.layout.root.clone(),
        );
        let pool = self.pool.as_ref().map(Arc::downgrade);
        let idled = self.idled.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let last = children.lock().ok().and_then(|mut c| c.remove(&pid));
            if let Some(pool) = pool.and_then(|p| p.upgrade()) {
                if let Ok(mut p) = pool.lock() {
                    p.0.remove(&pid);
                }
            }
            idled.notify_waiters();
            // An agent killed by a signal could not end its script: do it here.
            let killed =
                status.is_ok_and(|s| std::os::unix::process::ExitStatusExt::signal(&s).is_some());
            if let (true, Some((name, m))) = (killed, last) {
                end_orphans(&root, &name, m.trial, m.attempt);
            }
            notify.notify_one();
        });
    }
}

/// Who a warm agent's `idle` is told to: the provider's agents and pool, the
/// reconciler, and launches waiting for an idle agent.
struct Told {
    children: Arc<Mutex<Agents>>,
    pool: std::sync::Weak<Mutex<Pool>>,
    notify: Arc<Notify>,
    idled: Arc<Notify>,
}

/// A warm agent's word that its attempt ended and it waits for the next: it is
/// no attempt's machine any more, and the driver is woken.
async fn watch_idle(pid: u32, output: tokio::process::ChildStdout, told: Told) {
    let Told {
        children,
        pool,
        notify,
        idled,
    } = told;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line != "idle" {
            continue;
        }
        if let Ok(mut c) = children.lock() {
            c.remove(&pid);
        }
        let Some(pool) = pool.upgrade() else { return };
        if let Ok(mut p) = pool.lock() {
            if let Some(slot) = p.0.get_mut(&pid) {
                slot.idle = true;
            }
        }
        idled.notify_waiters();
        notify.notify_one();
    }
}

/// The agent `pid` as launched: free, or at the price the study gives local machines.
fn launched(study: &Study, pid: u32) -> Launched {
    let mut l = Launched::free(pid.to_string());
    l.billing = study.local.as_ref().map(|p| Billing::local(p.usd_per_hour));
    l
}

/// The machine of a trial's attempt on the agent `pid`.
pub(super) fn machine_of(pid: u32, trial: u64, attempt: u32) -> Machine {
    Machine {
        id: pid.to_string(),
        trial,
        attempt,
        gone: None,
        incarnation: None,
        billing: None,
    }
}

fn poisoned<T>(_: T) -> ProviderError {
    ProviderError::Poisoned
}

#[async_trait]
impl MachineProvider for LocalProvider {
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        let until = tokio::time::Instant::now() + HAND_OVER_WAIT;
        loop {
            let idled = self.idled.notified();
            tokio::pin!(idled);
            idled.as_mut().enable();
            if let Some(pid) = self.hand_over(study, trial).await? {
                return Ok(launched(study, pid));
            }
            // A study has at most `parallel` warm agents: when all are busy, one
            // has written its attempt's end and is about to say idle.
            let agents = self.pooled_for(&study.name);
            if agents < study.parallel as usize {
                break;
            }
            if tokio::time::timeout_at(until, idled).await.is_err() {
                break;
            }
        }
        // With GPUs: an agent whose attempt has ended may not have exited yet, and
        // its GPUs come free when it does (an agent's end is told on `idled`).
        let until = tokio::time::Instant::now() + HAND_OVER_WAIT;
        loop {
            let ended = self.idled.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.spawn(study, trial) {
                Err(ProviderError::Capacity(_)) if tokio::time::Instant::now() < until => {
                    let _ = tokio::time::timeout_at(until, ended).await;
                    // A warm agent that said idle keeps its GPUs: hand it the attempt.
                    if let Some(pid) = self.hand_over(study, trial).await? {
                        return Ok(launched(study, pid));
                    }
                }
                r => return r.map(|pid| launched(study, pid)),
            }
        }
    }

    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        let mut out: Vec<Machine> = {
            let c = self.children.lock().map_err(poisoned)?;
            c.values()
                .filter(|(s, _)| s == study)
                .map(|(_, m)| m.clone())
                .collect()
        };
        let mut adopted = self.adopted.lock().map_err(poisoned)?;
        if adopted.0.is_none_or(|t| t.elapsed() >= RESCAN) {
            // Ours: running an attempt, or idle in the pool (no attempt's machine).
            let mut ours: Vec<u32> = self
                .children
                .lock()
                .map(|c| c.keys().copied().collect())
                .unwrap_or_default();
            ours.extend(self.pooled());
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
        let runs = |m: &Machine| m.trial == machine.trial && m.attempt == machine.attempt;
        // Only signal a process that is still this trial's agent (pids are reused; a
        // warm agent may have moved on): our own say so here, others in /proc.
        let ours = self
            .children
            .lock()
            .map_err(poisoned)?
            .get(&pid)
            .map(|(_, m)| runs(m))
            // Idle in the pool: its attempt is over, and it ends with the drive.
            .or_else(|| self.pooled().contains(&pid).then_some(false));
        if ours.unwrap_or_else(|| agent_of(pid, &root).is_some_and(|(_, m)| runs(&m))) {
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

    fn pools_agents(&self) -> bool {
        self.pool.is_some()
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
            reuse: false,
            slot: None,
        };
        let mut raw = b"/bin/augur-agent\0".to_vec();
        for a in inv.to_args() {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        assert_eq!(
            attempt_of_cmdline(&raw, "/state/.augur"),
            Some(("s".to_string(), 4, 2, false))
        );
        assert_eq!(attempt_of_cmdline(&raw, "/other/.augur"), None);
        let other = b"/bin/sleep\0--home\0/state/.augur\0".to_vec();
        assert_eq!(attempt_of_cmdline(&other, "/state/.augur"), None);
    }
}
