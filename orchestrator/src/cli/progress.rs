//! What `augur run` shows while it runs: a progress bar on a terminal, one line per
//! event otherwise.

use augur::reconcile::MAX_LAUNCH_FAILURES;
use augur::report::{metrics_display, params_short, short};
use augur::Event;
use augur_model::{Study, Trial, TrialState};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use tokio::sync::mpsc;

pub struct Progress {
    study: Study,
    trials: HashMap<u64, Trial>,
    bar: Option<ProgressBar>,
    best: Option<f64>,
}

impl Progress {
    pub fn new(study: &Study, existing: &[Trial]) -> Progress {
        // The ETA comes from the trials this run finishes, not from those it resumed.
        let resumed = augur::report::finished_with(study, existing);
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(study.trials);
            let eta_key = move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let left = s.len().unwrap_or(0).saturating_sub(s.pos());
                let _ = w.write_str(&eta(s.pos().saturating_sub(resumed), left, s.elapsed()));
            };
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} (eta {augur_eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("augur_eta", eta_key)
                .progress_chars("=> "),
            );
            b.set_prefix(study.name.clone());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        let mut p = Progress {
            study: study.clone(),
            trials: HashMap::new(),
            bar,
            best: None,
        };
        for t in existing {
            p.observe(t.clone());
        }
        if !existing.is_empty() {
            p.say(format!(
                "resuming study `{}`: {} of {} trial(s) already final",
                study.name,
                p.done(),
                study.trials
            ));
        }
        p.refresh();
        p
    }

    fn done(&self) -> u64 {
        augur::report::finished_with(&self.study, self.trials.values())
    }

    fn observe(&mut self, t: Trial) {
        if !t.is_dataset() {
            let counted = t.result_metrics(&self.study.objective);
            if let Some(v) = counted.and_then(|m| m.get(&self.study.objective.metric).copied()) {
                if self.best.is_none_or(|b| self.study.objective.better(v, b)) {
                    self.best = Some(v);
                }
            }
        }
        self.trials.insert(t.id, t);
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            let count = |s: TrialState| self.trials.values().filter(|t| t.state == s).count();
            let mut msg = format!(
                "running {}",
                count(TrialState::Running) + count(TrialState::Starting)
            );
            for (s, name) in [(TrialState::Failed, "failed"), (TrialState::Lost, "lost")] {
                if count(s) > 0 {
                    msg.push_str(&format!(" · {name} {}", count(s)));
                }
            }
            if let Some(best) = self.best {
                msg.push_str(&format!(
                    " · best {}={}",
                    self.study.objective.metric,
                    short(best)
                ));
            }
            b.set_position(self.done());
            b.set_message(msg);
        }
    }

    fn name(t: &Trial) -> String {
        match &t.dataset {
            Some(d) => format!("dataset {d} ({})", t.id),
            None => format!("trial {}", t.id),
        }
    }

    /// What a trial's new state says, if anything.
    fn line(&self, t: &Trial) -> Option<String> {
        match t.state {
            TrialState::Succeeded => {
                let secs = match (t.started_ms, t.finished_ms) {
                    (Some(s), Some(f)) => format!(" in {:.1}s", (f - s) as f64 / 1000.0),
                    _ => String::new(),
                };
                Some(format!(
                    "{} succeeded{secs}: {} ({})",
                    Self::name(t),
                    metrics_display(&t.metrics),
                    params_short(&t.params)
                ))
            }
            TrialState::Failed => Some(format!(
                "{} failed (attempt {}): {} ({})",
                Self::name(t),
                t.attempt,
                t.error.clone().unwrap_or_default(),
                params_short(&t.params)
            )),
            TrialState::Cancelled => Some(format!("{} cancelled", Self::name(t))),
            TrialState::Pruned => Some(format!(
                "{} pruned: {} ({})",
                Self::name(t),
                t.error.clone().unwrap_or_default(),
                params_short(&t.params)
            )),
            _ => None,
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Trial { trial, .. } => {
                let t = *trial;
                let done_before = self.done();
                // A trial already seen as it is (a resumed study's finished ones) is
                // not news.
                let known = self
                    .trials
                    .get(&t.id)
                    .is_some_and(|old| old.state == t.state && old.attempt == t.attempt);
                let line = if known {
                    None
                } else {
                    self.line(&t)
                };
                self.observe(t);
                if let Some(l) = line {
                    let done = self.done();
                    let tag = if done != done_before {
                        format!("[{done}/{}] ", self.study.trials)
                    } else {
                        String::new()
                    };
                    self.say(format!("{tag}{l}"));
                }
            }
            Event::Lost { trial, reason } => self.say(format!("trial {trial} lost: {reason}")),
            Event::Retry {
                trial,
                attempt,
                delay_ms,
                runs,
                preemptions,
            } => {
                let line = self.retry_line(trial, attempt, delay_ms, (runs, preemptions));
                self.say(line)
            }
            Event::NoRoom {
                what,
                wait_ms,
                waited_ms,
            } => self.say(format!(
                "waiting for capacity ({:.0}s so far), launching again in {:.1}s: {what}",
                waited_ms as f64 / 1000.0,
                wait_ms as f64 / 1000.0
            )),
            Event::LaunchFailed {
                trial,
                tries,
                error,
                retry_in_ms,
            } => self.say(format!(
                "trial {trial}: launch try {tries} of {} failed, asked again in {:.1} s: {error}",
                augur_model::MAX_LAUNCH_TRIES,
                retry_in_ms as f64 / 1000.0
            )),
            Event::Backend { error } => self.say(format!("backend error (retrying): {error}")),
            Event::Held { holder, until } => self.say(format!(
                "`{}` is being driven by {holder} (lease for {:.0}s more): following it, taking over when the lease is free",
                self.study.name,
                ((until - augur_store::now_ms()).max(0) as f64) / 1000.0
            )),
            Event::Driving => self.say(format!("driving `{}` now", self.study.name)),
        }
        self.refresh();
    }

    /// A retry, with what the attempts so far used of each budget.
    fn retry_line(
        &self,
        trial: u64,
        attempt: u32,
        delay_ms: i64,
        (runs, preempted): (u32, u32),
    ) -> String {
        let failed = attempt.saturating_sub(1 + runs + preempted);
        let run = &self.study.run;
        format!(
            "trial {trial} will retry in {:.1}s as attempt {attempt} (so far: {runs} of {} runs, {failed} of {} failed launches, {preempted} of {} preemptions)",
            delay_ms as f64 / 1000.0,
            run.max_attempts,
            MAX_LAUNCH_FAILURES,
            run.max_preemptions,
        )
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(e) = rx.recv().await {
            self.handle(e);
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The time left at the pace so far: `done` trials finished in `elapsed`, `left` to
/// go; "?" until one has finished.
fn eta(done: u64, left: u64, elapsed: std::time::Duration) -> String {
    if left == 0 {
        return "0s".into();
    }
    if done == 0 {
        return "?".into();
    }
    let secs = (elapsed.as_secs_f64() * left as f64 / done as f64).round() as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_unknown_until_a_trial_finishes() {
        let s = std::time::Duration::from_secs;
        assert_eq!(eta(0, 10, s(30)), "?");
        assert_eq!(eta(2, 8, s(30)), "2m00s");
        assert_eq!(eta(1, 1, s(7)), "7s");
        assert_eq!(eta(1, 100, s(90)), "2h30m");
        assert_eq!(eta(5, 0, s(9)), "0s");
    }

    /// A retry says what each budget has used, not "attempt 2 of 1".
    #[test]
    fn a_retry_counts_what_is_counted() {
        let study = Study::parse(
            "name='s'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\nmax_attempts=1\n",
            "t",
            std::path::Path::new("."),
        )
        .expect("study");
        let p = Progress::new(&study, &[]);
        // Attempt 1 was a launch that failed: attempt 2 uses no run yet.
        let line = p.retry_line(1, 2, 1500, (0, 0));
        assert_eq!(
            line,
            "trial 1 will retry in 1.5s as attempt 2 (so far: 0 of 1 runs, 1 of 5 failed launches, 0 of 20 preemptions)"
        );
        // Attempts 1 and 2 were reclaimed, 3 ran: attempt 4.
        let line = p.retry_line(1, 4, 0, (1, 2));
        assert!(
            line.contains("1 of 1 runs, 0 of 5 failed launches, 2 of 20 preemptions"),
            "{line}"
        );
    }
}
