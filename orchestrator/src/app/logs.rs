//! Trial logs as readers see them, on either backend: files under the state
//! directory, or CloudWatch Logs (group `/augur/<study>`, stream `<trial>/<attempt>`).
//! [`LogReader`] is the narrow trait; the backend picks the implementation
//! ([`Backend::trial_logs`](super::backend::Backend::trial_logs),
//! [`Backend::study_logs`](super::backend::Backend::study_logs)).

use super::AppError;
use crate::reconcile::settled;
use async_trait::async_trait;
use augur_store::logfile::{parse_line, rfc3339};
use augur_store::Layout;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};

/// One line of a trial's log, wherever it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEvent {
    pub t_ms: i64,
    pub trial: u64,
    pub attempt: u32,
    pub source: String,
    pub text: String,
}

impl LogEvent {
    fn from_line(trial: u64, attempt: u32, line: &str, last_ms: i64) -> LogEvent {
        match parse_line(line) {
            Some(l) => LogEvent {
                t_ms: l.t_ms,
                trial,
                attempt,
                source: l.source,
                text: l.text,
            },
            // Not in the log format (written by hand?): keep it, at the last time seen.
            None => LogEvent {
                t_ms: last_ms,
                trial,
                attempt,
                source: "?".into(),
                text: line.to_string(),
            },
        }
    }

    /// Parses an attempt's lines in order onto `out`.
    fn extend_from_lines(out: &mut Vec<LogEvent>, trial: u64, attempt: u32, lines: Vec<String>) {
        let mut last = 0;
        for line in lines {
            let e = LogEvent::from_line(trial, attempt, &line, last);
            last = e.t_ms;
            out.push(e);
        }
    }

    /// The line as the log files have it: `<time> <source> <text>`.
    pub fn file_line(&self) -> String {
        format!("{} {} {}", rfc3339(self.t_ms), self.source, self.text)
    }
}

/// Reads trial logs incrementally.
#[async_trait]
pub trait LogReader: Send {
    /// The lines of `attempts` (trial, attempt) added since the last call, in time
    /// order (a trial's own lines keep their order).
    async fn pump(&mut self, attempts: &[(u64, u32)]) -> Result<Vec<LogEvent>, AppError>;
}

fn by_time(mut out: Vec<LogEvent>) -> Vec<LogEvent> {
    out.sort_by_key(|e| (e.t_ms, e.trial, e.attempt));
    out
}

/// Log files: one tail per attempt.
pub struct FileLogs {
    layout: Layout,
    study: String,
    tails: BTreeMap<(u64, u32), Tail>,
}

impl FileLogs {
    pub fn new(layout: Layout, study: &str) -> FileLogs {
        FileLogs {
            layout,
            study: study.to_string(),
            tails: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl LogReader for FileLogs {
    async fn pump(&mut self, attempts: &[(u64, u32)]) -> Result<Vec<LogEvent>, AppError> {
        let mut out = Vec::new();
        for &(trial, attempt) in attempts {
            let path = self.layout.log_file(&self.study, trial, attempt);
            let lines = self
                .tails
                .entry((trial, attempt))
                .or_default()
                .pump(&path)
                .map_err(|e| AppError::unavailable(format!("reading {}: {e}", path.display())))?;
            LogEvent::extend_from_lines(&mut out, trial, attempt, lines);
        }
        Ok(by_time(out))
    }
}

/// Reads one attempt's log file incrementally.
#[derive(Default)]
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    /// The complete lines added since the last call. Only a regular file is read: a
    /// log that is a device (a disk-full test's `/dev/full`) or a pipe has no end.
    fn pump(&mut self, path: &std::path::Path) -> std::io::Result<Vec<String>> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(Vec::new());
        };
        if !f.metadata()?.is_file() {
            return Ok(Vec::new());
        }
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

/// CloudWatch Logs, attempt by attempt: a forward token per attempt's stream.
pub struct StreamLogs {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    tokens: BTreeMap<(u64, u32), Option<String>>,
}

impl StreamLogs {
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, group: String) -> StreamLogs {
        StreamLogs {
            client,
            group,
            tokens: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl LogReader for StreamLogs {
    async fn pump(&mut self, attempts: &[(u64, u32)]) -> Result<Vec<LogEvent>, AppError> {
        let mut out = Vec::new();
        for &(trial, attempt) in attempts {
            let token = self.tokens.entry((trial, attempt)).or_default();
            let stream = augur_aws::cwlogs::stream(trial, attempt);
            let (lines, next) =
                augur_aws::cwlogs::read(&self.client, &self.group, &stream, token.take())
                    .await
                    .map_err(|e| AppError::unavailable(e.to_string()))?;
            *token = next;
            LogEvent::extend_from_lines(&mut out, trial, attempt, lines);
        }
        Ok(by_time(out))
    }
}

/// CloudWatch Logs, a whole study: FilterLogEvents over the group. Agents send their
/// lines at each heartbeat, so a line can arrive after newer lines of other trials:
/// each poll looks back `window_ms` before the newest line seen and skips the events
/// it already returned (by id).
pub struct GroupLogs {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    since: Option<i64>,
    newest: Option<i64>,
    window_ms: i64,
    seen: HashMap<String, i64>,
}

impl GroupLogs {
    pub fn new(
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        since: Option<i64>,
        window_ms: i64,
    ) -> GroupLogs {
        GroupLogs {
            client,
            group,
            since,
            newest: None,
            window_ms,
            seen: HashMap::new(),
        }
    }
}

#[async_trait]
impl LogReader for GroupLogs {
    /// Every attempt's lines: the group is read whole.
    async fn pump(&mut self, _attempts: &[(u64, u32)]) -> Result<Vec<LogEvent>, AppError> {
        let start = match (self.since, self.newest) {
            (s, Some(n)) => Some(s.unwrap_or(i64::MIN).max(n - self.window_ms)),
            (s, None) => s,
        };
        let events = augur_aws::cwlogs::read_group(&self.client, &self.group, start)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))?;
        let mut out = Vec::new();
        for ev in events {
            if self.seen.insert(ev.id.clone(), ev.t_ms).is_some() {
                continue;
            }
            self.newest = Some(self.newest.map_or(ev.t_ms, |n| n.max(ev.t_ms)));
            let (trial, attempt) = ev
                .stream
                .split_once('/')
                .and_then(|(t, a)| Some((t.parse().ok()?, a.parse().ok()?)))
                .unwrap_or((0, 0));
            let (source, text) = ev
                .message
                .split_once(' ')
                .unwrap_or((ev.message.as_str(), ""));
            out.push(LogEvent {
                t_ms: ev.t_ms,
                trial,
                attempt,
                source: source.to_string(),
                text: text.to_string(),
            });
        }
        // Forget what can no longer come back.
        if let Some(n) = self.newest {
            let window = self.window_ms;
            self.seen.retain(|_, t| *t >= n - window);
        }
        Ok(by_time(out))
    }
}

/// One trial's log read incrementally, in the log files' format (the status server's
/// log endpoint).
pub struct TrialLog {
    reader: Box<dyn LogReader>,
    study: String,
    id: u64,
}

impl TrialLog {
    pub fn new(reader: Box<dyn LogReader>, study: &str, id: u64) -> TrialLog {
        TrialLog {
            reader,
            study: study.to_string(),
            id,
        }
    }

    /// The lines added since the last call, and whether the trial had settled before
    /// they were read (so nothing more will come). `None` when the trial is gone.
    pub async fn pump(
        &mut self,
        store: &dyn augur_store::TrialStore,
        spec: &augur_model::Study,
    ) -> Result<Option<(Vec<String>, bool)>, AppError> {
        let Some(t) = store.get_trial(&self.study, self.id).await? else {
            return Ok(None);
        };
        let over = settled(spec, &t);
        let attempts: Vec<(u64, u32)> = (1..=t.attempt).map(|a| (t.id, a)).collect();
        let events = self.reader.pump(&attempts).await?;
        Ok(Some((
            events.iter().map(LogEvent::file_line).collect(),
            over,
        )))
    }
}

/// A trial's whole metric series, read back from its current attempt's log: every
/// `METRICS:` line the script printed, at the time it was logged. The record keeps
/// a thinned series ([`augur_model::bounded`]); the log keeps them all. `None` when
/// the log holds no reading (gone with its retention, or never written): the
/// record's series is then all there is.
pub async fn full_series(
    reader: &mut dyn LogReader,
    t: &augur_model::Trial,
) -> Result<Option<Vec<augur_model::MetricPoint>>, AppError> {
    use augur_model::metrics::{parse_line, Line};
    let mut series = Vec::new();
    // Each call returns what came since the last: read until nothing more comes.
    loop {
        let events = reader.pump(&[(t.id, t.attempt)]).await?;
        if events.is_empty() {
            break;
        }
        for e in events
            .iter()
            .filter(|e| e.source == "out" || e.source == "err")
        {
            if let Line::Metrics(values) = parse_line(&e.text) {
                series.push(augur_model::MetricPoint {
                    t_ms: e.t_ms,
                    values,
                });
            }
        }
    }
    Ok((!series.is_empty()).then_some(series))
}

/// `t` with its whole metric series when its log has one; a log that cannot be
/// read leaves the record's (thinned) series, and the error is returned beside it
/// for a caller that reports it.
pub async fn with_full_series(
    reader: &mut dyn LogReader,
    mut t: augur_model::Trial,
) -> (augur_model::Trial, Option<AppError>) {
    match full_series(reader, &t).await {
        Ok(Some(series)) => {
            t.series = series;
            (t, None)
        }
        Ok(None) => (t, None),
        Err(e) => (t, Some(e)),
    }
}
