//! What the agent makes of the script's output: metrics, the status line, the last
//! lines, the keepalive directive; and how the attempt ended.

use crate::lines::{Chunk, Stream};
use crate::log::Log;
use crate::process;
use crate::script::{failure_text, killed_from_outside};
use augur_model::bounded::{clip, MetricNames, Series, TAIL_LINES};
use augur_model::metrics::{self, Line};
use augur_model::{duration, AttemptEnd, MetricPoint};
use augur_store::logfile::Source;
use augur_store::now_ms;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// What the agent has seen of the script so far, as the record keeps it (bounded:
/// [`augur_model::bounded`]; the log has every line whole).
#[derive(Default)]
pub(crate) struct ScriptOutput {
    pub(crate) metrics: BTreeMap<String, f64>,
    pub(crate) series: Series,
    /// The last line printed, clipped.
    pub(crate) status: Option<String>,
    /// The last lines, clipped.
    pub(crate) tail: VecDeque<String>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) dirty: bool,
    /// Secret values, masked (`***`) wherever a line of output goes.
    pub(crate) masked: Vec<String>,
    /// Whether `masked` holds what to mask of them ([`augur_model::secret::masks`]:
    /// each line of a value, each string of a JSON one), worked out at the first
    /// line.
    pub(crate) masks_made: bool,
    /// The last line the script wrote to stderr (not a `set -x` trace): what a
    /// failure says beside its exit code.
    pub(crate) last_err: Option<String>,
    /// Whether the last stderr line left a `set -x` trace's quoted argument open: the
    /// lines up to the one that closes it are the trace's too (an argument with
    /// newlines, as a multi-line secret's).
    pub(crate) trace_open: bool,
    /// What the checkpoint directory holds in the bucket, since the last heartbeat.
    pub(crate) checkpoint: Option<augur_model::Checkpoint>,
    /// Which metric names the record keeps ([`MetricNames`]: the objective's
    /// always, at most [`augur_model::bounded::METRIC_NAMES`]).
    pub(crate) names: MetricNames,
}

/// How much of the last stderr line a failure carries.
const LAST_ERR_CHARS: usize = 240;

impl ScriptOutput {
    /// How the attempt ended: the script's exit, or why the agent ended it.
    pub(crate) fn outcome(
        self,
        status: Option<std::process::ExitStatus>,
        ended: Option<(String, bool)>,
    ) -> AttemptEnd {
        let mut tail = self.tail;
        if let Some(note) = self.names.note() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(clip(&note));
        }
        let status =
            status.unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(255 << 8));
        let (error, retryable) = match ended {
            Some((why, retryable)) => (Some(why), retryable),
            // A script killed with SIGKILL from outside (the kernel's OOM killer, a
            // person) did not fail by itself: it may be retried, within max_attempts.
            None => (
                failure_text(&status).map(|e| match &self.last_err {
                    Some(line) => format!("{e}; stderr: {line}"),
                    None => e,
                }),
                killed_from_outside(&status),
            ),
        };
        AttemptEnd {
            exit_code: Some(process::exit_code(&status)),
            metrics: self.metrics,
            series: self.series.points(),
            error,
            retryable,
            preempted: false,
            status: self.status,
            log_tail: tail.into_iter().collect(),
            script_ended_ms: None,
            checkpoint: self.checkpoint,
        }
    }

    /// A reading: the names the record keeps ([`MetricNames`]) merged into its
    /// last values and its series; the first name dropped said once in the log
    /// (and in the record's last lines), the count when the attempt ends.
    fn take_metrics(&mut self, reading: std::collections::BTreeMap<String, f64>, log: &Log) {
        let (kept, first_dropped) = self.names.admit(&self.metrics, reading);
        if let Some(name) = first_dropped {
            let warning = format!(
                "warning: metric `{}` and any later new name beyond the first {} (or longer than {} characters) are not recorded; the log keeps every line",
                clip(&name),
                augur_model::bounded::METRIC_NAMES,
                augur_model::bounded::METRIC_NAME_CHARS
            );
            log.write(Source::Augur, &warning);
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(clip(&format!("augur: {warning}")));
        }
        if kept.is_empty() {
            return;
        }
        self.metrics
            .extend(kept.iter().map(|(k, v)| (k.clone(), *v)));
        self.series.push(MetricPoint {
            t_ms: now_ms(),
            values: kept,
        });
        self.dirty = true;
    }

    /// Whether a line is a `set -x` trace (bash's `+ command 'argument'`, written to
    /// stderr), or a line of one whose quoted argument spans lines: an argument is
    /// open while its single quotes, bar escaped ones (`'\''`), are unbalanced.
    fn trace(&mut self, chunk: &Chunk) -> bool {
        if chunk.stream != Stream::Err || chunk.progress {
            return false;
        }
        let trace = self.trace_open || chunk.text.starts_with('+');
        let quotes = chunk
            .text
            .split("\\'")
            .map(|part| part.matches('\'').count())
            .sum::<usize>();
        self.trace_open = trace && (self.trace_open ^ (quotes % 2 == 1));
        trace
    }

    pub(crate) fn take(&mut self, chunk: Chunk, log: &Log, last_output: &mut Instant) {
        *last_output = Instant::now();
        if !self.masks_made {
            self.masked = augur_model::secret::masks(&self.masked);
            self.masks_made = true;
        }
        let text = augur_model::secret::mask(&chunk.text, &self.masked);
        let trace = self.trace(&chunk);
        if chunk.progress {
            if !text.trim().is_empty() {
                self.status = Some(clip(&text));
                self.dirty = true;
            }
            return;
        }
        log.write(
            if chunk.stream == Stream::Out {
                Source::Out
            } else {
                Source::Err
            },
            &text,
        );
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(clip(&text));
        if chunk.stream == Stream::Err && !text.trim().is_empty() && !trace {
            self.last_err = Some(match text.char_indices().nth(LAST_ERR_CHARS) {
                Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
                None => text.trim_end().to_string(),
            });
        }
        match metrics::parse_line(&text) {
            Line::Metrics(m) => self.take_metrics(m, log),
            Line::BadMetrics(e) => log.write(
                Source::Augur,
                &format!("warning: ignored metrics line: {e}"),
            ),
            Line::Keepalive(d) => {
                self.keepalive = (!d.is_zero()).then_some(d);
                log.write(
                    Source::Augur,
                    &match self.keepalive {
                        Some(d) => format!(
                            "keepalive armed: the attempt ends if the script prints nothing for {}",
                            duration::format(d)
                        ),
                        None => "keepalive disarmed".to_string(),
                    },
                );
            }
            Line::BadDirective(e) => {
                log.write(Source::Augur, &format!("warning: ignored directive: {e}"))
            }
            Line::Plain => {}
        }
        // The status is what the script last said (set -x traces are not news).
        if !text.trim().is_empty() && !trace {
            self.status = Some(clip(&text));
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> Chunk {
        Chunk {
            stream: Stream::Out,
            text: text.to_string(),
            progress: false,
        }
    }

    /// The objective's name is kept when it comes after the bound is reached.
    #[test]
    fn the_objective_is_kept_after_thousands_of_other_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = Log::open(dir.path().join("log"));
        let mut seen = ScriptOutput {
            names: MetricNames::keeping("loss"),
            ..Default::default()
        };
        let mut last = Instant::now();
        for i in 0..5_000 {
            seen.take(out(&format!("METRICS: m{i}={i}")), &log, &mut last);
        }
        seen.take(out("METRICS: loss=0.25"), &log, &mut last);
        assert_eq!(seen.metrics.len(), augur_model::bounded::METRIC_NAMES);
        assert_eq!(seen.metrics.get("loss"), Some(&0.25));
        assert_eq!(seen.series.points().last().map(|p| p.values.len()), Some(1));
        let end = seen.outcome(None, None);
        let note = end.log_tail.last().cloned().unwrap_or_default();
        assert!(note.starts_with("augur: 4745 metric names"), "{note}");
    }

    /// A `set -x` trace whose argument spans lines (a multi-line secret echoed) is a
    /// trace to its last line: none of it is the status or the failure's last line,
    /// whatever order stdout and stderr are read in.
    #[test]
    fn a_trace_of_a_multi_line_argument_is_not_news() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = Log::open(dir.path().join("log"));
        let err = |text: &str| Chunk {
            stream: Stream::Err,
            ..out(text)
        };
        let mut seen = ScriptOutput::default();
        let mut last = Instant::now();
        seen.take(out("step 2"), &log, &mut last);
        for line in [
            "+ echo 'key: -----BEGIN",
            "MIIE",
            "-----END'",
            "+ echo 'it'\\''s'",
        ] {
            seen.take(err(line), &log, &mut last);
        }
        assert_eq!(seen.status.as_deref(), Some("step 2"));
        assert_eq!(seen.last_err, None);
        assert!(!seen.trace_open);
        // A line after the trace closed is the script's own again.
        seen.take(err("real trouble"), &log, &mut last);
        assert_eq!(seen.last_err.as_deref(), Some("real trouble"));
        assert_eq!(seen.status.as_deref(), Some("real trouble"));
    }
}
