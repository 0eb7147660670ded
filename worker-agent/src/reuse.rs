//! A machine kept warm (`--reuse`): after an attempt whose script ended by itself
//! ([`augur_model::Trial::leaves_machine_warm`]), the agent takes the study's next
//! attempt, fenced on its own, in a fresh working directory, exactly as the first.
//! Where the next attempt comes from ([`Turns`]):
//! - a local process tells its provider it is idle (`idle` on standard output) and
//!   reads the attempt from standard input (`TRIAL ATTEMPT`); the end of its input
//!   (the provider let it go, or died) ends it. Its command line names only its
//!   first attempt, so it says which one it runs in
//!   [`augur_store::Layout::agent_file`], for an orchestrator that adopts it after a
//!   crash; the file goes when the agent does.
//! - a cloud machine reads the study's changed trials every [`POLL`] for one the
//!   orchestrator assigned it (starting, naming this machine: the orchestrator's one
//!   conditional write), for the study's `run.keep_alive` after its last attempt
//!   ended; then it powers off. Reads only: a warm machine writes no more per trial
//!   than a fresh one.

use crate::AgentConfig;
use augur_model::{Millis, SeriesKeep, Trial, TrialState};
use augur_store::TrialStore;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

/// How often an idle cloud machine reads the study's changes for an assignment.
pub const POLL: Duration = Duration::from_secs(1);

/// Where an agent's attempts after its first come from.
pub enum Turns {
    /// A local process: from its provider, through standard input.
    Piped(Box<Piped>),
    /// A cloud machine: from the store.
    Assigned(Assignments),
}

/// The next attempt of a warm agent.
#[derive(Debug, PartialEq)]
pub struct Turn {
    pub trial: u64,
    pub attempt: u32,
    /// The attempt's hard limit in minutes, from its start (cloud machines re-arm
    /// their scheduled power-off with it).
    pub life_min: Option<u64>,
}

impl Turns {
    /// The next attempt, once the last one (which ended at `ended_ms`, the agent's
    /// clock) left the machine warm; `None`: the machine's work is over.
    pub async fn next(
        &mut self,
        store: &dyn TrialStore,
        cfg: &AgentConfig,
        ended_ms: Millis,
    ) -> Option<Turn> {
        match self {
            Turns::Piped(p) => p.next().await.map(|(trial, attempt)| Turn {
                trial,
                attempt,
                life_min: None,
            }),
            Turns::Assigned(a) => a.next(store, cfg, ended_ms).await,
        }
    }
}

/// A cloud machine's assignments, read from the store.
#[derive(Default)]
pub struct Assignments {
    /// The store's mark of the last read ([`TrialStore::changed_trials`]).
    since: u64,
}

impl Assignments {
    async fn next(
        &mut self,
        store: &dyn TrialStore,
        cfg: &AgentConfig,
        ended_ms: Millis,
    ) -> Option<Turn> {
        let study = store.get_study(&cfg.study).await.ok()??.spec;
        let until = ended_ms + study.run.keep_alive_ms() as Millis;
        loop {
            match store
                .changed_trials(&cfg.study, self.since, &SeriesKeep::Nothing)
                .await
            {
                Ok((changed, mark)) => {
                    self.since = mark;
                    let mine = changed.into_iter().filter(|t| assigned(t, cfg));
                    if let Some(t) = mine.min_by_key(|t| t.id) {
                        return Some(Turn {
                            trial: t.id,
                            attempt: t.attempt,
                            life_min: Some(augur_aws::instance::max_life_minutes(&study, &t)),
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the study's changes"),
            }
            if augur_store::now_ms() >= until {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether `t` is an attempt the orchestrator assigned this machine, other than the
/// one it just ran.
fn assigned(t: &Trial, cfg: &AgentConfig) -> bool {
    t.state == TrialState::Starting
        && t.machine.as_deref() == Some(cfg.machine.as_str())
        && (t.id, t.attempt) != (cfg.trial, cfg.attempt)
}

/// A local warm agent's attempts, through its standard input and output.
pub struct Piped {
    input: Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
    /// The file naming the current attempt, open (`None`: it could not be made, and
    /// adoption goes by the command line).
    file: Option<(PathBuf, std::fs::File)>,
    study: String,
}

impl Piped {
    pub fn new(cfg: &AgentConfig) -> Piped {
        let pid = std::process::id();
        let file = augur_store::layout::process_started(pid)
            .map(|s| cfg.layout.agent_file(pid, s))
            .and_then(|path| {
                std::fs::create_dir_all(path.parent()?).ok()?;
                let file = std::fs::File::create(&path).ok()?;
                Some((path, file))
            });
        Piped {
            input: BufReader::new(input()).lines(),
            file,
            study: cfg.study.clone(),
        }
    }

    /// Says the agent is idle and waits for its next attempt: `None` at the end of
    /// input, or on a line that is not `TRIAL ATTEMPT`.
    async fn next(&mut self) -> Option<(u64, u32)> {
        // Five bytes into a pipe its provider reads: written at once.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(b"idle\n").ok()?;
        out.flush().ok()?;
        drop(out);
        let line = self.input.next_line().await.ok()??;
        let mut words = line.split_whitespace();
        let trial = words.next()?.parse().ok()?;
        let attempt = words.next()?.parse().ok()?;
        if let Some((_, f)) = &self.file {
            let _ = note(f, &self.study, trial, attempt);
        }
        Some((trial, attempt))
    }
}

/// Standard input, read through the runtime's poller where it is a pipe (as its
/// provider makes it): tokio's own `stdin` reads on a thread of its blocking pool,
/// a hand-off each way per line.
fn input() -> Box<dyn AsyncRead + Send + Unpin> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd);
    match pipe {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        if let Some((path, _)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How long each note is: always the same, so that one write in place replaces
/// the last whole (no rename, no truncation: this runs once an attempt).
const NOTE_BYTES: usize = 160;

/// Writes `study trial attempt` over the file's last note.
fn note(file: &std::fs::File, study: &str, trial: u64, attempt: u32) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut text = format!("{study} {trial} {attempt}");
    text.truncate(NOTE_BYTES - 1);
    let line = format!("{text:<width$}\n", width = NOTE_BYTES - 1);
    file.write_all_at(line.as_bytes(), 0)
}
