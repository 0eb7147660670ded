//! CloudWatch Logs: where trial logs go on AWS. Group `/augur/<study>`, stream
//! `<trial>/<attempt>`, so `aws logs tail /augur/<study> --follow` works as usual.
//! Each event's message is `<source> <text>`, as in the local log files.

use augur_store::logfile::rfc3339;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_cloudwatchlogs::Client;

/// PutLogEvents limits: events per batch and bytes per batch (26 bytes of overhead each).
const MAX_EVENTS: usize = 10_000;
const MAX_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
/// Longest message kept whole (the service takes up to 256 KiB per event).
const MAX_MESSAGE: usize = 200 * 1024;

/// A CloudWatch Logs failure.
#[derive(Debug, thiserror::Error)]
#[error("CloudWatch Logs {op}: {text}")]
pub struct LogsError {
    pub op: &'static str,
    pub text: String,
    /// The SDK's error.
    #[source]
    pub source: Option<augur_store::Cause>,
}

fn fail<E>(op: &'static str, e: SdkError<E>) -> LogsError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    LogsError {
        op,
        text: crate::error_text(&e),
        source: Some(Box::new(e)),
    }
}

fn code<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Option<&str> {
    e.as_service_error().and_then(|x| x.code())
}

/// The log group of a study.
pub fn group(prefix: &str, study: &str) -> String {
    format!("{}/{study}", prefix.trim_end_matches('/'))
}

/// The log stream of one attempt.
pub fn stream(trial: u64, attempt: u32) -> String {
    format!("{trial}/{attempt}")
}

/// Creates a log group unless it exists.
pub async fn ensure_group(client: &Client, group: &str) -> Result<(), LogsError> {
    match client.create_log_group().log_group_name(group).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(fail("CreateLogGroup", e)),
    }
}

/// The retention periods CloudWatch Logs accepts, in days
/// (<https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html>).
const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The retention CloudWatch Logs takes for keeping `days`: the shortest at least as
/// long (the longest, past it).
pub fn retention_for(days: u32) -> u32 {
    RETENTION_DAYS
        .into_iter()
        .find(|d| *d >= days)
        .unwrap_or(RETENTION_DAYS[RETENTION_DAYS.len() - 1])
}

/// Creates a study's log group unless it exists, and keeps its events `days` (as
/// [`retention_for`] rounds them), or forever with `None`.
pub async fn ensure_group_kept(
    client: &Client,
    group: &str,
    days: Option<u32>,
) -> Result<(), LogsError> {
    ensure_group(client, group).await?;
    if let Some(d) = days {
        client
            .put_retention_policy()
            .log_group_name(group)
            .retention_in_days(retention_for(d) as i32)
            .send()
            .await
            .map_err(|e| fail("PutRetentionPolicy", e))?;
    }
    Ok(())
}

/// Deletes a log group; whether there was one.
pub async fn delete_group(client: &Client, group: &str) -> Result<bool, LogsError> {
    match client.delete_log_group().log_group_name(group).send().await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(false),
        Err(e) => Err(fail("DeleteLogGroup", e)),
    }
}

/// The most a sink keeps queued while CloudWatch Logs cannot be reached: 16 MiB
/// of messages or 100,000 lines, whichever comes first (an hour of a script
/// printing 28 lines a second, in an agent's memory of at most ~20 MB). Beyond
/// them the oldest lines are dropped (the newest say how the attempt is going and
/// how it ended), counted, and said in one line when the log is shipped again;
/// the record's last lines hold the attempt's end in any case.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// See [`QUEUE_BYTES`].
pub const QUEUE_LINES: usize = 100_000;

/// Lines waiting to be shipped, bounded ([`QUEUE_BYTES`], [`QUEUE_LINES`]): the
/// oldest dropped and counted beyond the bounds.
#[derive(Debug)]
pub struct Queue {
    lines: std::collections::VecDeque<(i64, String)>,
    bytes: usize,
    max_bytes: usize,
    max_lines: usize,
    /// Dropped since the last note: lines, bytes.
    dropped: (u64, u64),
}

impl Queue {
    pub fn new(max_bytes: usize, max_lines: usize) -> Queue {
        Queue {
            lines: Default::default(),
            bytes: 0,
            max_bytes,
            max_lines: max_lines.max(1),
            dropped: (0, 0),
        }
    }

    /// What more it may hold within its bounds: lines, bytes.
    pub fn room(&self) -> (usize, usize) {
        (
            self.max_lines.saturating_sub(self.lines.len()),
            self.max_bytes.saturating_sub(self.bytes),
        )
    }

    /// Queues one line (its time not before the last one's: CloudWatch Logs takes
    /// a batch in order), dropping the oldest beyond the bounds.
    pub fn push(&mut self, t_ms: i64, message: String) {
        let t = self.lines.back().map_or(t_ms, |(last, _)| t_ms.max(*last));
        self.bytes += message.len();
        self.lines.push_back((t, message));
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            let Some((_, old)) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.dropped.0 += 1;
            self.dropped.1 += old.len() as u64;
        }
    }

    /// The line saying what was dropped since the last one was shipped (if
    /// anything was), at the time of the first line queued.
    pub fn dropped_note(&self) -> Option<(i64, String)> {
        let (lines, bytes) = self.dropped;
        if lines == 0 {
            return None;
        }
        let t = self.lines.front().map_or(0, |(t, _)| *t);
        Some((
            t,
            format!(
                "augur {lines} log lines ({bytes} bytes) dropped while CloudWatch Logs could not be reached"
            ),
        ))
    }

    /// The note of what was dropped was shipped: counting starts again.
    pub fn noted(&mut self) {
        self.dropped = (0, 0);
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many of the first lines fit one `PutLogEvents` call.
    fn batch_len(&self) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for (_, m) in &self.lines {
            if n == MAX_EVENTS || bytes + m.len() + EVENT_OVERHEAD > MAX_BYTES {
                break;
            }
            bytes += m.len() + EVENT_OVERHEAD;
            n += 1;
        }
        n
    }

    /// Forgets the first `n` lines (shipped).
    fn shipped(&mut self, n: usize) {
        for (_, m) in self.lines.drain(..n) {
            self.bytes -= m.len();
        }
    }
}

/// An attempt's log on its way to CloudWatch Logs: lines are queued (bounded:
/// [`Queue`]) and sent in order, in batches within the service's limits, at each
/// `flush`.
pub struct CloudWatchSink {
    client: Client,
    group: String,
    stream: String,
    pending: Queue,
    ready: bool,
}

impl CloudWatchSink {
    pub fn new(client: Client, group: String, stream: String) -> CloudWatchSink {
        CloudWatchSink {
            client,
            group,
            stream,
            pending: Queue::new(QUEUE_BYTES, QUEUE_LINES),
            ready: false,
        }
    }

    /// The sink with other bounds on what it queues (tests).
    pub fn bounded(mut self, max_bytes: usize, max_lines: usize) -> CloudWatchSink {
        self.pending = Queue::new(max_bytes, max_lines);
        self
    }

    pub fn location(&self) -> String {
        format!("cloudwatch:{}:{}", self.group, self.stream)
    }

    /// What more it may queue within its bounds: lines, bytes ([`Queue::room`]).
    pub fn room(&self) -> (usize, usize) {
        self.pending.room()
    }

    /// Queues one line.
    pub fn push(&mut self, t_ms: i64, message: String) {
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if message.is_empty() {
            message.push(' ');
        }
        self.pending.push(t_ms, message);
    }

    /// Sends everything queued, after a note of what was dropped since the last
    /// flush that could send. On failure the lines stay queued for the next flush.
    pub async fn flush(&mut self) -> Result<(), LogsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if !self.ready {
            ensure_group(&self.client, &self.group).await?;
            match self
                .client
                .create_log_stream()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(fail("CreateLogStream", e)),
            }
            self.ready = true;
        }
        if let Some(note) = self.pending.dropped_note() {
            self.put(vec![note]).await?;
            self.pending.noted();
        }
        while !self.pending.is_empty() {
            let n = self.pending.batch_len();
            let batch = self.pending.lines.range(..n).cloned().collect();
            self.put(batch).await?;
            self.pending.shipped(n);
        }
        Ok(())
    }

    /// One `PutLogEvents` call.
    async fn put(&self, lines: Vec<(i64, String)>) -> Result<(), LogsError> {
        let events: Vec<InputLogEvent> = lines
            .into_iter()
            .filter_map(|(t, m)| {
                InputLogEvent::builder()
                    .timestamp(t)
                    .message(m)
                    .build()
                    .ok()
            })
            .collect();
        self.client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map_err(|e| fail("PutLogEvents", e))?;
        Ok(())
    }
}

/// Reads an attempt's log from `start` on (a forward token), as lines in the local
/// format (`<time> <source> <text>`); the token to continue from.
pub async fn read(
    client: &Client,
    group: &str,
    stream: &str,
    token: Option<String>,
) -> Result<(Vec<String>, Option<String>), LogsError> {
    let mut lines = Vec::new();
    let mut token = token;
    loop {
        let out = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok((lines, token)),
            Err(e) => return Err(fail("GetLogEvents", e)),
        };
        for ev in out.events() {
            lines.push(format!(
                "{} {}",
                rfc3339(ev.timestamp().unwrap_or(0)),
                ev.message().unwrap_or("")
            ));
        }
        let next = out.next_forward_token().map(String::from);
        if next == token || out.events().is_empty() {
            return Ok((lines, next.or(token)));
        }
        token = next;
    }
}

/// One event of a study's log group, from any attempt's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupEvent {
    pub id: String,
    /// The stream: `<trial>/<attempt>`.
    pub stream: String,
    pub t_ms: i64,
    /// `<source> <text>`.
    pub message: String,
}

/// Every event of a study's log group from `start_ms` on, all streams interleaved by
/// time (FilterLogEvents, all pages). An absent group has no events.
pub async fn read_group(
    client: &Client,
    group: &str,
    start_ms: Option<i64>,
) -> Result<Vec<GroupEvent>, LogsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .filter_log_events()
            .log_group_name(group)
            .set_start_time(start_ms)
            .set_next_token(token.clone())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(out),
            Err(e) => return Err(fail("FilterLogEvents", e)),
        };
        for ev in page.events() {
            out.push(GroupEvent {
                id: ev.event_id().unwrap_or_default().to_string(),
                stream: ev.log_stream_name().unwrap_or_default().to_string(),
                t_ms: ev.timestamp().unwrap_or(0),
                message: ev.message().unwrap_or_default().to_string(),
            });
        }
        // FilterLogEvents may return empty pages while it scans: follow the token
        // until there is none (or it stops moving).
        match page.next_token() {
            Some(t) if Some(t) != token.as_deref() => token = Some(t.to_string()),
            _ => break,
        }
    }
    out.sort_by_key(|e| e.t_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_drops_its_oldest_lines_beyond_its_bounds_and_says_how_many() {
        let line = |i: usize| format!("out line {i:04}");
        // Bounded by lines.
        let mut q = Queue::new(1 << 20, 10);
        for i in 0..25 {
            q.push(i as i64, line(i));
        }
        assert_eq!(q.lines.len(), 10);
        assert_eq!(
            q.lines[0],
            (15, "out line 0015".to_string()),
            "the newest kept"
        );
        let note =
            "augur 15 log lines (195 bytes) dropped while CloudWatch Logs could not be reached";
        assert_eq!(q.dropped_note(), Some((15, note.to_string())));
        assert_eq!(
            q.dropped_note(),
            Some((15, note.to_string())),
            "until shipped"
        );
        q.noted();
        assert_eq!(q.dropped_note(), None);
        // Bounded by bytes (13 a line here): 100 bytes hold 7.
        let mut q = Queue::new(100, 1000);
        for i in 0..20 {
            q.push(1000 - i as i64, line(i));
        }
        assert_eq!((q.lines.len(), q.bytes, q.dropped), (7, 91, (13, 169)));
        assert!(
            q.lines.iter().all(|(t, _)| *t == 1000),
            "times never go back"
        );
        q.shipped(7);
        assert_eq!((q.is_empty(), q.bytes), (true, 0));
        // A line longer than the bound alone is kept (it is clipped to MAX_MESSAGE).
        let mut q = Queue::new(10, 10);
        q.push(0, "x".repeat(50));
        assert_eq!(q.lines.len(), 1);
    }

    #[test]
    fn retention_rounds_up_to_what_cloudwatch_takes() {
        assert_eq!(retention_for(1), 1);
        assert_eq!(retention_for(10), 14);
        assert_eq!(retention_for(30), 30);
        assert_eq!(retention_for(366), 400);
        assert_eq!(retention_for(9999), 3653);
        for d in 1..4000 {
            let r = retention_for(d);
            assert!(
                RETENTION_DAYS.contains(&r) && (r >= d || r == 3653),
                "{d} -> {r}"
            );
        }
    }
}
