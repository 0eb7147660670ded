//! `augur logs STUDY[/TRIAL] [--follow] [--since] [--filter] [--format]`, like
//! `aws logs tail`: one trial's attempts in order, or every trial of a study
//! interleaved by time with each line prefixed by its stream (`<trial>/<attempt>`).
//! The same output on both backends: files locally, CloudWatch Logs on AWS.

use super::backend::Ctx;
use super::{Fail, Outcome};
use augur::reconcile::{settled, Timing};
use augur_model::{duration, StudyState, Trial};
use augur_store::logfile::{parse_line, parse_time, rfc3339, FilterPattern};
use augur_store::now_ms;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// STUDY (every trial, interleaved by time) or STUDY/TRIAL, for example quadratic/3.
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

/// One line of a trial's log, wherever it came from.
#[derive(Clone, Debug, PartialEq)]
struct Event {
    t_ms: i64,
    trial: u64,
    attempt: u32,
    source: String,
    text: String,
}

impl Event {
    fn from_line(trial: u64, attempt: u32, line: &str, last_ms: i64) -> Event {
        match parse_line(line) {
            Some(l) => Event {
                t_ms: l.t_ms,
                trial,
                attempt,
                source: l.source,
                text: l.text,
            },
            // Not in the log format (written by hand?): keep it, at the last time seen.
            None => Event {
                t_ms: last_ms,
                trial,
                attempt,
                source: "?".into(),
                text: line.to_string(),
            },
        }
    }

    /// Parses an attempt's lines in order onto `out`.
    fn extend_from_lines(out: &mut Vec<Event>, trial: u64, attempt: u32, lines: Vec<String>) {
        let mut last = 0;
        for line in lines {
            let e = Event::from_line(trial, attempt, &line, last);
            last = e.t_ms;
            out.push(e);
        }
    }

    fn render(&self, format: Format, whole_study: bool) -> String {
        let time = rfc3339(self.t_ms);
        match format {
            Format::Detailed if whole_study => format!(
                "{time} {}/{} {} {}",
                self.trial, self.attempt, self.source, self.text
            ),
            Format::Detailed => format!("{time} {} {}", self.source, self.text),
            Format::Short => {
                // HH:MM:SS.mmm of the RFC 3339 time.
                let clock = time.get(11..23).unwrap_or(&time);
                if whole_study {
                    format!("{clock} [{}] {}", self.trial, self.text)
                } else {
                    format!("{clock} {}", self.text)
                }
            }
            Format::Json => serde_json::json!({
                "time": time,
                "t_ms": self.t_ms,
                "trial": self.trial,
                "attempt": self.attempt,
                "stream": format!("{}/{}", self.trial, self.attempt),
                "source": self.source,
                "text": self.text,
            })
            .to_string(),
        }
    }
}

/// Which lines to print.
struct Keep {
    since: Option<i64>,
    filter: FilterPattern,
}

impl Keep {
    /// The filter sees what CloudWatch sees in a message: `<source> <text>`.
    fn keeps(&self, e: &Event) -> bool {
        self.since.is_none_or(|s| e.t_ms >= s)
            && self.filter.matches(&format!("{} {}", e.source, e.text))
    }
}

/// Reads one attempt's log file incrementally.
#[derive(Default)]
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    /// The complete lines added since the last call.
    fn pump(&mut self, path: &std::path::Path) -> std::io::Result<Vec<String>> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(Vec::new());
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            out.push(line.trim_end_matches('\n').to_string());
        }
        Ok(out)
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

/// `STUDY` or `STUDY/TRIAL`.
fn parse_logs_target(s: &str) -> Result<(String, Option<u64>), Fail> {
    let (study, id) = match s.rsplit_once('/') {
        None => (s, None),
        Some((study, id)) => {
            let id = id.parse().map_err(|_| {
                Fail::input(format!(
                    "`{id}` is not a trial number (in `{s}`; give STUDY or STUDY/TRIAL)"
                ))
            })?;
            (study, Some(id))
        }
    };
    Ok((super::study_name(study).map_err(Fail::input)?, id))
}

/// Where the lines come from.
enum Reader {
    /// Log files: one tail per attempt.
    Files(BTreeMap<(u64, u32), Tail>),
    /// CloudWatch Logs, one trial: a forward token per attempt's stream.
    Streams {
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        tokens: BTreeMap<(u64, u32), Option<String>>,
    },
    /// CloudWatch Logs, a whole study: FilterLogEvents over the group. Agents send
    /// their lines at each heartbeat, so a line can arrive after newer lines of other
    /// trials: each poll looks back `window_ms` before the newest line seen and skips
    /// the events it already printed (by id).
    Group {
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        since: Option<i64>,
        newest: Option<i64>,
        window_ms: i64,
        seen: HashMap<String, i64>,
    },
}

impl Reader {
    /// New events of `attempts` (trial, attempt) since the last call.
    async fn pump(
        &mut self,
        ctx: &Ctx,
        study: &str,
        attempts: &[(u64, u32)],
    ) -> Result<Vec<Event>, Fail> {
        let mut out = Vec::new();
        match self {
            Reader::Files(tails) => {
                for &(trial, attempt) in attempts {
                    let path = ctx.layout.log_file(study, trial, attempt);
                    let lines = tails
                        .entry((trial, attempt))
                        .or_default()
                        .pump(&path)
                        .map_err(|e| {
                            Fail::unavailable(format!("reading {}: {e}", path.display()))
                        })?;
                    Event::extend_from_lines(&mut out, trial, attempt, lines);
                }
            }
            Reader::Streams {
                client,
                group,
                tokens,
            } => {
                for &(trial, attempt) in attempts {
                    let token = tokens.entry((trial, attempt)).or_default();
                    let stream = augur_aws::cwlogs::stream(trial, attempt);
                    let (lines, next) =
                        augur_aws::cwlogs::read(client, group, &stream, token.take())
                            .await
                            .map_err(|e| Fail::unavailable(e.to_string()))?;
                    *token = next;
                    Event::extend_from_lines(&mut out, trial, attempt, lines);
                }
            }
            Reader::Group {
                client,
                group,
                since,
                newest,
                window_ms,
                seen,
            } => {
                let start = match (*since, *newest) {
                    (s, Some(n)) => Some(s.unwrap_or(i64::MIN).max(n - *window_ms)),
                    (s, None) => s,
                };
                let events = augur_aws::cwlogs::read_group(client, group, start)
                    .await
                    .map_err(|e| Fail::unavailable(e.to_string()))?;
                for ev in events {
                    if seen.insert(ev.id.clone(), ev.t_ms).is_some() {
                        continue;
                    }
                    *newest = Some(newest.map_or(ev.t_ms, |n| n.max(ev.t_ms)));
                    let (trial, attempt) = ev
                        .stream
                        .split_once('/')
                        .and_then(|(t, a)| Some((t.parse().ok()?, a.parse().ok()?)))
                        .unwrap_or((0, 0));
                    let (source, text) = ev
                        .message
                        .split_once(' ')
                        .unwrap_or((ev.message.as_str(), ""));
                    out.push(Event {
                        t_ms: ev.t_ms,
                        trial,
                        attempt,
                        source: source.to_string(),
                        text: text.to_string(),
                    });
                }
                // Forget what can no longer come back.
                if let Some(n) = *newest {
                    seen.retain(|_, t| *t >= n - *window_ms);
                }
            }
        }
        // Interleave by time; a trial's own lines keep their order.
        out.sort_by_key(|e| (e.t_ms, e.trial, e.attempt));
        Ok(out)
    }
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Outcome {
    let (study, one) = parse_logs_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let filter = FilterPattern::parse(args.filter.as_deref().unwrap_or(""))
        .map_err(|e| Fail::input(format!("--filter: {e}")))?;
    let no = || Fail::input(format!("no study named `{study}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(&study).await?.ok_or_else(no)?;
    if let Some(id) = one {
        if store.get_trial(&study, id).await?.is_none() {
            return Err(Fail::input(format!("study `{study}` has no trial {id}")));
        }
    }
    let keep = Keep { since, filter };
    let mut reader = match ctx.cloud_logs().await {
        None => Reader::Files(BTreeMap::new()),
        Some((client, prefix)) => {
            let group = augur_aws::cwlogs::group(prefix, &study);
            match one {
                Some(_) => Reader::Streams {
                    client,
                    group,
                    tokens: BTreeMap::new(),
                },
                None => Reader::Group {
                    client,
                    group,
                    since,
                    newest: None,
                    // Two heartbeats of the study's agents, and a margin.
                    window_ms: 2 * rec
                        .drive
                        .as_ref()
                        .map_or(ctx.default_drive().heartbeat_ms, |d| d.heartbeat_ms)
                        + 5_000,
                    seen: HashMap::new(),
                },
            }
        }
    };
    let timing = Timing::default();
    // Attempts read to their end after their trial had settled: never read again.
    let mut finished: BTreeSet<(u64, u32)> = BTreeSet::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let trials: Vec<Trial> = match one {
            Some(id) => store.get_trial(&study, id).await?.into_iter().collect(),
            None => store.list_trials(&study).await?,
        };
        let all_settled = trials.iter().all(|t| settled(&rec.spec, &timing, t));
        let attempts: Vec<(u64, u32)> = trials
            .iter()
            .flat_map(|t| (1..=t.attempt).map(move |a| (t.id, a)))
            .filter(|k| !finished.contains(k))
            .collect();
        let events = reader.pump(ctx, &study, &attempts).await?;
        for e in events.iter().filter(|e| keep.keeps(e)) {
            writeln!(out, "{}", e.render(args.format, one.is_none()))
                .map_err(|e| Fail::unavailable(e.to_string()))?;
        }
        out.flush().map_err(|e| Fail::unavailable(e.to_string()))?;
        if events.is_empty() {
            for t in trials.iter().filter(|t| settled(&rec.spec, &timing, t)) {
                finished.extend((1..=t.attempt).map(|a| (t.id, a)));
            }
        }
        if !args.follow {
            break;
        }
        // A whole study is over when no trial can change and none will be added.
        let over = all_settled
            && (one.is_some()
                || matches!(
                    store.study_state(&study).await?,
                    Some(StudyState::Done | StudyState::Stopped) | None
                ));
        if over && events.is_empty() {
            break;
        }
        if events.is_empty() {
            tokio::time::sleep(ctx.log_poll()).await;
        }
    }
    Ok(0)
}

/// One trial's log read incrementally, in the log files' format (the status server's
/// log endpoint).
pub(super) struct TrialLog {
    reader: Reader,
    study: String,
    id: u64,
}

impl TrialLog {
    pub(super) async fn new(ctx: &Ctx, study: &str, id: u64) -> TrialLog {
        let reader = match ctx.cloud_logs().await {
            Some((client, prefix)) => Reader::Streams {
                client,
                group: augur_aws::cwlogs::group(prefix, study),
                tokens: BTreeMap::new(),
            },
            None => Reader::Files(BTreeMap::new()),
        };
        TrialLog {
            reader,
            study: study.to_string(),
            id,
        }
    }

    /// The lines added since the last call, and whether the trial had settled before
    /// they were read (so nothing more will come). `None` when the trial is gone.
    pub(super) async fn pump(
        &mut self,
        ctx: &Ctx,
        store: &dyn augur_store::TrialStore,
        spec: &augur_model::Study,
    ) -> Result<Option<(Vec<String>, bool)>, Fail> {
        let Some(t) = store.get_trial(&self.study, self.id).await? else {
            return Ok(None);
        };
        let over = settled(spec, &Timing::default(), &t);
        let attempts: Vec<(u64, u32)> = (1..=t.attempt).map(|a| (t.id, a)).collect();
        let events = self.reader.pump(ctx, &self.study, &attempts).await?;
        let lines = events
            .iter()
            .map(|e| e.render(Format::Detailed, false))
            .collect();
        Ok(Some((lines, over)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let e = Event {
            t_ms: 1_764_000_000_123,
            trial: 3,
            attempt: 2,
            source: "out".into(),
            text: "METRICS: loss=1".into(),
        };
        assert_eq!(
            e.render(Format::Detailed, false),
            "2025-11-24T16:00:00.123Z out METRICS: loss=1"
        );
        assert_eq!(
            e.render(Format::Detailed, true),
            "2025-11-24T16:00:00.123Z 3/2 out METRICS: loss=1"
        );
        assert_eq!(
            e.render(Format::Short, true),
            "16:00:00.123 [3] METRICS: loss=1"
        );
        assert_eq!(
            e.render(Format::Short, false),
            "16:00:00.123 METRICS: loss=1"
        );
        let j: serde_json::Value = serde_json::from_str(&e.render(Format::Json, true)).unwrap();
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
