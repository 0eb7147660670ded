//! The attempt's log: a file written line by line, or CloudWatch Logs.

use augur_store::logfile::{format_line, Source};
use augur_store::now_ms;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// Where the attempt's log goes.
enum LogSink {
    /// A local file, written line by line and unbuffered, so that every line printed
    /// before a machine dies is in it.
    File(Option<std::fs::File>),
    /// CloudWatch Logs: buffered, sent at each heartbeat and at the end.
    Cloud(Box<augur_aws::cwlogs::CloudWatchSink>),
}

/// The attempt's log. A log that cannot be written (disk full, directory gone) is
/// reported once and never stops the trial.
pub(crate) struct Log {
    out: LogSink,
    pub(crate) location: String,
    pub(crate) broken: Option<String>,
}

impl Log {
    pub(crate) fn open(path: PathBuf) -> Log {
        let location = path.display().to_string();
        match augur_store::logfile::open_append(&path) {
            Ok(f) => Log {
                out: LogSink::File(Some(f)),
                location,
                broken: None,
            },
            Err(e) => Log {
                out: LogSink::File(None),
                broken: Some(format!("cannot open log {location}: {e}")),
                location,
            },
        }
    }
    pub(crate) fn cloud(sink: augur_aws::cwlogs::CloudWatchSink) -> Log {
        Log {
            location: sink.location(),
            out: LogSink::Cloud(Box::new(sink)),
            broken: None,
        }
    }
    pub(crate) fn write(&mut self, source: Source, text: &str) {
        match &mut self.out {
            LogSink::File(Some(f)) => {
                if let Err(e) = f.write_all(format_line(now_ms(), source, text).as_bytes()) {
                    self.broken = Some(format!("cannot write log {}: {e}", self.location));
                    self.out = LogSink::File(None);
                }
            }
            LogSink::File(None) => {}
            LogSink::Cloud(sink) => sink.push(now_ms(), format!("{} {text}", source.as_str())),
        }
    }
    /// Sends what is buffered (CloudWatch); a failure keeps the lines for next time.
    /// Files need nothing: lines are written unbuffered, and not fsynced (a log that
    /// must outlive its machine is shipped to CloudWatch Logs).
    pub(crate) async fn flush(&mut self) {
        if let LogSink::Cloud(sink) = &mut self.out {
            if let Err(e) = sink.flush().await {
                tracing::warn!(error = %e, "log not shipped yet; will retry");
            }
        }
    }
    /// The last flush of an attempt: retried with backoff (there is no next time),
    /// for up to two minutes; a log that still cannot be shipped is said in the record.
    pub(crate) async fn flush_final(&mut self) {
        let LogSink::Cloud(sink) = &mut self.out else {
            return;
        };
        let give_up = Instant::now() + Duration::from_secs(120);
        let mut delay = Duration::from_millis(200);
        loop {
            match sink.flush().await {
                Ok(()) => return,
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(error = %e, "last log lines not shipped yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    self.broken = Some(format!("last log lines not shipped: {e}"));
                    return;
                }
            }
        }
    }
}
