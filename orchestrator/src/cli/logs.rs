//! `augur logs STUDY[/TRIAL] [--follow] [--since] [--filter] [--format]`, like
//! `aws logs tail`: one trial's attempts in order, or every trial of a study
//! interleaved by time with each line prefixed by its stream (`<trial>/<attempt>`).
//! The same output on both backends: files locally, CloudWatch Logs on AWS.

use super::{AppError, CmdResult};
use crate::app::backend::Backend;
use crate::app::logs::LogEvent;
use augur::reconcile::settled;
use augur_model::{duration, StudyState, Trial};
use augur_store::logfile::{parse_time, rfc3339, FilterPattern};
use augur_store::now_ms;
use std::collections::BTreeSet;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// STUDY (every trial, interleaved by time) or STUDY/TRIAL, for example quadratic/3.
    #[arg(add = super::complete::targets())]
    target: String,
    /// Keep printing new lines until the trial (or the whole study) is final.
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago (10m, 2h) or since this UTC time (2026-11-24T10:00).
    #[arg(long)]
    since: Option<String>,
    /// A CloudWatch-style filter pattern over `<source> <text>`: every term or "quoted
    /// phrase" must appear, no -term may, and at least one ?term if any is given
    /// (case-sensitive). `-err` drops the script's stderr.
    #[arg(long)]
    filter: Option<String>,
    /// short: time and text; detailed: time, stream, source and text (the log files'
    /// own format for one trial); json: one object per line.
    #[arg(long, value_enum, default_value_t = Format::Detailed)]
    format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Short,
    Detailed,
    Json,
}

/// A log line as `augur logs` prints it.
fn render(e: &LogEvent, format: Format, whole_study: bool) -> String {
    let time = rfc3339(e.t_ms);
    match format {
        Format::Detailed if whole_study => {
            format!("{time} {}/{} {} {}", e.trial, e.attempt, e.source, e.text)
        }
        Format::Detailed => e.file_line(),
        Format::Short => {
            // HH:MM:SS.mmm of the RFC 3339 time.
            let clock = time.get(11..23).unwrap_or(&time);
            if whole_study {
                format!("{clock} [{}] {}", e.trial, e.text)
            } else {
                format!("{clock} {}", e.text)
            }
        }
        Format::Json => serde_json::json!({
            "time": time,
            "t_ms": e.t_ms,
            "trial": e.trial,
            "attempt": e.attempt,
            "stream": format!("{}/{}", e.trial, e.attempt),
            "source": e.source,
            "text": e.text,
        })
        .to_string(),
    }
}

/// Which lines to print.
struct Keep {
    since: Option<i64>,
    filter: FilterPattern,
}

impl Keep {
    /// The filter sees what CloudWatch sees in a message: `<source> <text>`.
    fn keeps(&self, e: &LogEvent) -> bool {
        self.since.is_none_or(|s| e.t_ms >= s)
            && self.filter.matches(&format!("{} {}", e.source, e.text))
    }
}

fn parse_since(s: &str) -> Result<i64, AppError> {
    if let Ok(d) = duration::parse(s) {
        return Ok(now_ms() - d.as_millis() as i64);
    }
    parse_time(s).ok_or_else(|| {
        AppError::input(format!(
            "--since `{s}` is neither a duration (10m, 2h) nor a UTC time (2026-11-24T10:00)"
        ))
    })
}

/// `STUDY` or `STUDY/TRIAL`.
fn parse_logs_target(s: &str) -> Result<(String, Option<u64>), AppError> {
    let (study, id) = match s.rsplit_once('/') {
        None => (s, None),
        Some((study, id)) => {
            let id = id.parse().map_err(|_| {
                AppError::input(format!(
                    "`{id}` is not a trial number (in `{s}`; give STUDY or STUDY/TRIAL)"
                ))
            })?;
            (study, Some(id))
        }
    };
    Ok((super::study_name(study).map_err(AppError::input)?, id))
}

pub async fn logs(ctx: &Backend, args: LogsArgs) -> CmdResult {
    let (study, one) = parse_logs_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let filter = FilterPattern::parse(args.filter.as_deref().unwrap_or(""))
        .map_err(|e| AppError::input(format!("--filter: {e}")))?;
    let no = || AppError::input(format!("no study named `{study}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(&study).await?.ok_or_else(no)?;
    if let Some(id) = one {
        if store.get_trial(&study, id).await?.is_none() {
            return Err(AppError::input(format!(
                "study `{study}` has no trial {id}"
            )));
        }
    }
    let keep = Keep { since, filter };
    let mut reader = match one {
        Some(_) => ctx.trial_logs(&study).await,
        // Two heartbeats of the study's agents, and a margin.
        None => {
            let beat = rec
                .drive
                .as_ref()
                .map_or(ctx.default_drive().heartbeat_ms, |d| d.heartbeat_ms);
            ctx.study_logs(&study, since, 2 * beat + 5_000).await
        }
    };
    // Attempts read to their end after their trial had settled: never read again.
    let mut finished: BTreeSet<(u64, u32)> = BTreeSet::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let trials: Vec<Trial> = match one {
            Some(id) => store.get_trial(&study, id).await?.into_iter().collect(),
            None => store.list_trials(&study).await?,
        };
        let all_settled = trials.iter().all(|t| settled(&rec.spec, t));
        let attempts: Vec<(u64, u32)> = trials
            .iter()
            .flat_map(|t| (1..=t.attempt).map(move |a| (t.id, a)))
            .filter(|k| !finished.contains(k))
            .collect();
        let events = reader.pump(&attempts).await?;
        for e in events.iter().filter(|e| keep.keeps(e)) {
            writeln!(out, "{}", render(e, args.format, one.is_none()))
                .map_err(|e| AppError::unavailable(e.to_string()))?;
        }
        out.flush()
            .map_err(|e| AppError::unavailable(e.to_string()))?;
        if events.is_empty() {
            for t in trials.iter().filter(|t| settled(&rec.spec, t)) {
                finished.extend((1..=t.attempt).map(|a| (t.id, a)));
            }
        }
        if !args.follow {
            break;
        }
        // A whole study is over when no trial can change and none will be added.
        let over = all_settled
            && (one.is_some()
                || store
                    .study_state(&study)
                    .await?
                    .is_none_or(StudyState::is_over));
        if over && events.is_empty() {
            break;
        }
        if events.is_empty() {
            tokio::time::sleep(ctx.log_poll()).await;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let e = LogEvent {
            t_ms: 1_764_000_000_123,
            trial: 3,
            attempt: 2,
            source: "out".into(),
            text: "METRICS: loss=1".into(),
        };
        assert_eq!(
            render(&e, Format::Detailed, false),
            "2025-11-24T16:00:00.123Z out METRICS: loss=1"
        );
        assert_eq!(
            render(&e, Format::Detailed, true),
            "2025-11-24T16:00:00.123Z 3/2 out METRICS: loss=1"
        );
        assert_eq!(
            render(&e, Format::Short, true),
            "16:00:00.123 [3] METRICS: loss=1"
        );
        assert_eq!(
            render(&e, Format::Short, false),
            "16:00:00.123 METRICS: loss=1"
        );
        let j: serde_json::Value = serde_json::from_str(&render(&e, Format::Json, true)).unwrap();
        assert_eq!(j["trial"], 3);
        assert_eq!(j["stream"], "3/2");
        assert_eq!(j["text"], "METRICS: loss=1");
    }

    #[test]
    fn targets() {
        assert_eq!(parse_logs_target("q").unwrap(), ("q".to_string(), None));
        assert_eq!(
            parse_logs_target("q/3").unwrap(),
            ("q".to_string(), Some(3))
        );
        assert!(parse_logs_target("q/x").is_err());
    }
}
