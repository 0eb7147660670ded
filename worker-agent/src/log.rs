//! The attempt's log: a file written line by line, or CloudWatch Logs shipped by a
//! task of its own.
//!
//! A [`Log`] is a cheap handle: the script loop, the heartbeat and a set-up step
//! running beside it (a restore, a secret read) all write to it at once, and none of
//! them ever waits for the network to write a line. On AWS the lines go to a shipper
//! task that sends them every `every` (and when asked to finish), so a slow or
//! failing `PutLogEvents` holds up neither heartbeats nor the script's output.

use augur_store::logfile::{format_line, Source};
use augur_store::now_ms;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Lines waiting for the shipper beyond this are dropped and counted (said in the
/// log when it ships again). The shipper takes lines as they come, during a call as
/// well; the sink bounds what it keeps while the service cannot be reached
/// ([`augur_aws::cwlogs::QUEUE_LINES`], `QUEUE_BYTES`), and so do the lines taken
/// while one call is under way.
const QUEUED: usize = 16_384;

/// What the shipper is told.
enum ToShipper {
    Line(i64, String),
    /// Ship everything, retrying, then answer with the failure if it still fails.
    Finish(oneshot::Sender<Option<String>>),
}

/// Where the attempt's log goes.
enum LogSink {
    /// A local file, written line by line and unbuffered, so that every line printed
    /// before a machine dies is in it.
    File(Mutex<Option<std::fs::File>>),
    /// CloudWatch Logs, through the shipper task.
    Cloud {
        tx: mpsc::Sender<ToShipper>,
        /// Lines not queued because the queue was full (or, taken during a call,
        /// past the sink's bound).
        dropped: Arc<std::sync::atomic::AtomicU64>,
    },
}

/// The attempt's log. A log that cannot be written (disk full, directory gone, the
/// service unreachable at the end) is reported once and never stops the trial.
#[derive(Clone)]
pub(crate) struct Log {
    out: Arc<LogSink>,
    pub(crate) location: String,
    broken: Arc<Mutex<Option<String>>>,
}

impl Log {
    pub(crate) fn open(path: PathBuf) -> Log {
        let location = path.display().to_string();
        let (file, broken) = match augur_store::logfile::open_append(&path) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("cannot open log {location}: {e}"))),
        };
        Log {
            out: Arc::new(LogSink::File(Mutex::new(file))),
            location,
            broken: Arc::new(Mutex::new(broken)),
        }
    }

    /// A log shipped to CloudWatch Logs every `every` by a task of its own.
    pub(crate) fn cloud(sink: augur_aws::cwlogs::CloudWatchSink, every: Duration) -> Log {
        let location = sink.location();
        let (tx, rx) = mpsc::channel(QUEUED);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(ship(sink, rx, every, dropped.clone()));
        Log {
            out: Arc::new(LogSink::Cloud { tx, dropped }),
            location,
            broken: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn write(&self, source: Source, text: &str) {
        match &*self.out {
            LogSink::File(f) => {
                let Ok(mut f) = f.lock() else { return };
                let Some(file) = f.as_mut() else { return };
                if let Err(e) = file.write_all(format_line(now_ms(), source, text).as_bytes()) {
                    self.set_broken(format!("cannot write log {}: {e}", self.location));
                    *f = None;
                }
            }
            LogSink::Cloud { tx, dropped } => {
                use std::sync::atomic::Ordering;
                let line = format!("{} {text}", source.as_str());
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let note = format!(
                        "{} augur: {lost} log line(s) dropped while CloudWatch Logs was slow to take them",
                        Source::Augur.as_str()
                    );
                    if tx.try_send(ToShipper::Line(now_ms(), note)).is_err() {
                        dropped.fetch_add(lost, Ordering::Relaxed);
                    }
                }
                if tx.try_send(ToShipper::Line(now_ms(), line)).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Why the log is incomplete, if it is.
    pub(crate) fn broken(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.clone())
    }

    fn set_broken(&self, why: String) {
        if let Ok(mut b) = self.broken.lock() {
            b.get_or_insert(why);
        }
    }

    /// The attempt's last lines are written: ships them (CloudWatch; retried with
    /// backoff for up to two minutes, there is no next time) and waits for that. A
    /// log that still cannot be shipped is said in [`broken`](Log::broken). Lines
    /// written after this are not shipped. Files need nothing: lines are written
    /// unbuffered, and not fsynced (a log that must outlive its machine is shipped).
    pub(crate) async fn finish(&self) {
        let LogSink::Cloud { tx, .. } = &*self.out else {
            return;
        };
        let (done, answer) = oneshot::channel();
        if tx.send(ToShipper::Finish(done)).await.is_err() {
            return;
        }
        if let Ok(Some(why)) = answer.await {
            self.set_broken(why);
        }
    }
}

/// The shipper: takes lines as they come and sends them every `every`; at
/// [`ToShipper::Finish`], sends the rest with retries and answers.
async fn ship(
    mut sink: augur_aws::cwlogs::CloudWatchSink,
    mut rx: mpsc::Receiver<ToShipper>,
    every: Duration,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut next = Instant::now() + every;
    loop {
        let go_on = tokio::select! {
            m = rx.recv() => take(&mut sink, m).await,
            _ = tokio::time::sleep_until(next) => {
                let came = flush_taking(&mut sink, &mut rx, &dropped).await;
                next = Instant::now() + every;
                let mut go_on = true;
                for m in came {
                    go_on = go_on && take(&mut sink, m).await;
                }
                go_on
            }
        };
        if !go_on {
            return;
        }
    }
}

/// Takes one message: a line into the sink; a finish (sends the rest, answers);
/// false when the shipper is done.
async fn take(sink: &mut augur_aws::cwlogs::CloudWatchSink, m: Option<ToShipper>) -> bool {
    match m {
        Some(ToShipper::Line(t, l)) => {
            sink.push(t, l);
            true
        }
        Some(ToShipper::Finish(done)) => {
            let _ = done.send(ship_last(sink).await);
            false
        }
        None => false,
    }
}

/// Ships what the sink holds, taking what comes meanwhile (a slow call must not
/// fill the queue the script's lines go through): the lines, up to the room left
/// within the sink's bound (past it they are dropped and counted, so the agent's
/// memory stays within that bound), a finish, the queue's end.
async fn flush_taking(
    sink: &mut augur_aws::cwlogs::CloudWatchSink,
    rx: &mut mpsc::Receiver<ToShipper>,
    dropped: &std::sync::atomic::AtomicU64,
) -> Vec<Option<ToShipper>> {
    let (room_lines, room_bytes) = sink.room();
    let (mut came, mut lines, mut bytes) = (Vec::new(), 0, 0);
    let flush = sink.flush();
    tokio::pin!(flush);
    loop {
        let ended = came.last().is_some_and(|m: &Option<ToShipper>| m.is_none());
        tokio::select! {
            r = &mut flush => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "log not shipped yet; will retry");
                }
                return came;
            }
            m = rx.recv(), if !ended => match m {
                Some(ToShipper::Line(_, l))
                    if lines >= room_lines || bytes + l.len() > room_bytes =>
                {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Some(ToShipper::Line(t, l)) => {
                    (lines, bytes) = (lines + 1, bytes + l.len());
                    came.push(Some(ToShipper::Line(t, l)));
                }
                other => came.push(other),
            },
        }
    }
}

/// The last shipment: retried with backoff for up to two minutes; why it failed.
async fn ship_last(sink: &mut augur_aws::cwlogs::CloudWatchSink) -> Option<String> {
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    loop {
        match sink.flush().await {
            Ok(()) => return None,
            Err(e) if Instant::now() < give_up => {
                tracing::warn!(error = %e, "last log lines not shipped yet; retrying");
                failed += 1;
                // 200 ms doubling, at most 5 s.
                tokio::time::sleep(crate::retry_wait(failed + 1)).await;
            }
            Err(e) => return Some(format!("last log lines not shipped: {e}")),
        }
    }
}
