//! A machine kept warm (`--reuse`): after an attempt whose script ended by itself,
//! the agent tells its provider it is idle (`idle` on standard output) and reads the
//! study's next attempt from standard input (`TRIAL ATTEMPT`). The end of its input
//! (the provider let it go, or died) ends it. Each attempt is fenced on its own,
//! in a fresh working directory, exactly as the first.
//!
//! Its command line names only its first attempt, so it says which one it runs in
//! [`augur_store::Layout::agent_file`], for an orchestrator that adopts it after a
//! crash; the file goes when the agent does.

use crate::AgentConfig;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin, Stdout};

/// The attempts an agent takes after its first.
pub struct Turns {
    input: Lines<BufReader<Stdin>>,
    output: Stdout,
    /// The file naming the current attempt, open (`None`: it could not be made, and
    /// adoption goes by the command line).
    file: Option<(PathBuf, std::fs::File)>,
    study: String,
}

impl Turns {
    pub fn new(cfg: &AgentConfig) -> Turns {
        let pid = std::process::id();
        let file = augur_store::layout::process_started(pid)
            .map(|s| cfg.layout.agent_file(pid, s))
            .and_then(|path| {
                std::fs::create_dir_all(path.parent()?).ok()?;
                let file = std::fs::File::create(&path).ok()?;
                Some((path, file))
            });
        Turns {
            input: BufReader::new(tokio::io::stdin()).lines(),
            output: tokio::io::stdout(),
            file,
            study: cfg.study.clone(),
        }
    }

    /// Says the agent is idle and waits for its next attempt: `None` at the end of
    /// input, or on a line that is not `TRIAL ATTEMPT`.
    pub async fn next(&mut self) -> Option<(u64, u32)> {
        self.output.write_all(b"idle\n").await.ok()?;
        self.output.flush().await.ok()?;
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

impl Drop for Turns {
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
