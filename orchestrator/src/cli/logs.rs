//! `augur logs STUDY/TRIAL [--follow] [--since] [--filter]`.

use super::{open_existing, parse_target, Fail, Outcome};
use augur::reconcile::{settled, Timing};
use augur_model::duration;
use augur_store::logfile::{parse_line, parse_time};
use augur_store::{now_ms, Layout, TrialStore};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// STUDY/TRIAL, for example quadratic/3.
    target: String,
    /// Keep printing new lines until the trial is final.
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago (10m, 2h) or since this UTC time (2026-11-24T10:00).
    #[arg(long)]
    since: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    filter: Option<String>,
}

/// Reads one attempt's log file incrementally.
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    /// Prints the complete lines added since the last call; whether anything was read.
    fn pump(
        &mut self,
        path: &std::path::Path,
        since: Option<i64>,
        filter: Option<&str>,
        out: &mut impl Write,
    ) -> std::io::Result<bool> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(false);
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(false);
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches('\n');
            let keep_time = match (since, parse_line(line)) {
                (Some(s), Some(l)) => l.t_ms >= s,
                _ => true,
            };
            if keep_time && filter.is_none_or(|f| line.contains(f)) {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
        Ok(true)
    }
}

fn parse_since(s: &str) -> Result<i64, Fail> {
    if let Ok(d) = duration::parse(s) {
        return Ok(now_ms() - d.as_millis() as i64);
    }
    parse_time(s).ok_or_else(|| {
        Fail::input(format!(
            "--since `{s}` is neither a duration (10m, 2h) nor a UTC time (2026-11-24T10:00)"
        ))
    })
}

pub async fn logs(layout: &Layout, args: LogsArgs) -> Outcome {
    let (study, id) = parse_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let no = || Fail::input(format!("no study named `{study}` (see `augur studies`)"));
    let store = open_existing(layout)?.ok_or_else(no)?;
    let rec = store.get_study(&study).await?.ok_or_else(no)?;
    let timing = Timing::default();
    let mut attempt = 1;
    let mut tail = Tail {
        offset: 0,
        partial: String::new(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let t = store
            .get_trial(&study, id)
            .await?
            .ok_or_else(|| Fail::input(format!("study `{study}` has no trial {id}")))?;
        let mut read = false;
        loop {
            let path = layout.log_file(&study, id, attempt);
            read |= tail
                .pump(&path, since, args.filter.as_deref(), &mut out)
                .map_err(|e| Fail::unavailable(format!("reading {}: {e}", path.display())))?;
            if attempt < t.attempt {
                attempt += 1;
                tail = Tail {
                    offset: 0,
                    partial: String::new(),
                };
                continue;
            }
            break;
        }
        if !args.follow || (settled(&rec.spec, &timing, &t) && !read) {
            break;
        }
        if !read {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(0)
}
