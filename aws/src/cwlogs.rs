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
}

fn fail<E>(op: &'static str, e: SdkError<E>) -> LogsError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    LogsError {
        op,
        text: crate::error_text(&e),
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

/// An attempt's log on its way to CloudWatch Logs: lines are buffered and sent in
/// order, in batches within the service's limits, at each `flush`.
pub struct CloudWatchSink {
    client: Client,
    group: String,
    stream: String,
    pending: Vec<(i64, String)>,
    ready: bool,
}

impl CloudWatchSink {
    pub fn new(client: Client, group: String, stream: String) -> CloudWatchSink {
        CloudWatchSink {
            client,
            group,
            stream,
            pending: Vec::new(),
            ready: false,
        }
    }

    pub fn location(&self) -> String {
        format!("cloudwatch:{}:{}", self.group, self.stream)
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
        // Timestamps may not go backwards within a batch.
        let t = self
            .pending
            .last()
            .map_or(t_ms, |(last, _)| t_ms.max(*last));
        self.pending.push((t, message));
    }

    /// Sends everything queued. On failure the lines stay queued for the next flush.
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
        while !self.pending.is_empty() {
            let mut bytes = 0;
            let mut n = 0;
            for (_, m) in &self.pending {
                if n == MAX_EVENTS || bytes + m.len() + EVENT_OVERHEAD > MAX_BYTES {
                    break;
                }
                bytes += m.len() + EVENT_OVERHEAD;
                n += 1;
            }
            let events: Vec<InputLogEvent> = self.pending[..n]
                .iter()
                .filter_map(|(t, m)| {
                    InputLogEvent::builder()
                        .timestamp(*t)
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
            self.pending.drain(..n);
        }
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
