//! A study as the store keeps it: its state, its record, the timings its drivers
//! use, and what its launches have shown ([`LaunchBounds`]).

use crate::spec::Study;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a study stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyState {
    /// Trials are being run (or will be when an orchestrator runs it).
    Active,
    /// `augur stop` was asked: cancel what runs, launch nothing.
    Stopping,
    /// Stopped before it was done; `augur run` resumes it.
    Stopped,
    /// Every budgeted trial ran (or the oracle has no more points), every trial
    /// final.
    Done,
    /// `run.max_cost_usd` or `run.max_machine_hours` let no further trial start:
    /// what had not started was cancelled, the rest finished. `augur run` with a
    /// larger limit resumes it.
    Spent,
}

impl StudyState {
    /// Whether no driver works on it (until `augur run` again).
    pub fn is_over(self) -> bool {
        matches!(
            self,
            StudyState::Done | StudyState::Stopped | StudyState::Spent
        )
    }

    /// Every state.
    pub const ALL: [StudyState; 5] = [
        StudyState::Active,
        StudyState::Stopping,
        StudyState::Stopped,
        StudyState::Done,
        StudyState::Spent,
    ];

    /// The state named by its word ([`as_word`](Self::as_word), as stores keep it
    /// beside the record), or by its display, as stores wrote it there before
    /// ("budget spent").
    pub fn from_word(word: &str) -> Option<StudyState> {
        StudyState::ALL
            .into_iter()
            .find(|s| s.as_word() == word || s.to_string() == word)
    }

    /// How the serverless tick's log names it: "done", "stopped", "spent"; the
    /// word stores keep beside the record.
    pub fn as_word(self) -> &'static str {
        match self {
            StudyState::Active => "active",
            StudyState::Stopping => "stopping",
            StudyState::Stopped => "stopped",
            StudyState::Done => "done",
            StudyState::Spent => "spent",
        }
    }
}

impl fmt::Display for StudyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StudyState::Active => "active",
            StudyState::Stopping => "stopping",
            StudyState::Stopped => "stopped",
            StudyState::Done => "done",
            StudyState::Spent => "budget spent",
        })
    }
}

/// A study as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub name: String,
    pub spec: Study,
    pub state: StudyState,
    pub created_ms: Millis,
    pub updated_ms: Millis,
    /// How the study is driven (timings), as last set by `augur run` or `augur submit`:
    /// a serverless tick, or `augur stop`, drives it the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<DriveSettings>,
    /// What its launches have shown since it was last run or submitted.
    #[serde(default, skip_serializing_if = "LaunchBounds::is_clear")]
    pub bounds: LaunchBounds,
    /// Why augur stopped it (a bound on its launches), until it is run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl StudyRecord {
    /// Stops a study still running (active or stopping) for `reason`, at `now`;
    /// whether it changed anything (one that ended already keeps its end).
    pub fn stop_for(&mut self, reason: &str, now: Millis) -> bool {
        if !matches!(self.state, StudyState::Active | StudyState::Stopping) {
            return false;
        }
        self.state = StudyState::Stopped;
        self.reason = Some(reason.to_string());
        self.updated_ms = now;
        true
    }

    /// Whether the record can be acted on as it is: the study file's limits, and the
    /// shape of every value that becomes a word, a path or an AWS parameter. For
    /// records read back from the store, which is not trusted as much as the file.
    pub fn check(&self) -> Result<(), String> {
        crate::spec::check_record(self)
    }
}

/// After this many machines ended before their agent reported, with no agent
/// reporting, a study stops ([`LaunchBounds::boots_stop`]).
pub const FAILED_BOOTS_TO_STOP: usize = 3;

/// How many failed boots a study's bounds name (enough to tell the bound).
pub const KEPT_FAILED_BOOTS: usize = 10;

/// What a study's launches have shown since it was last run or submitted, that
/// bounds them: machines that ended before their agent reported, and a drought (no
/// room to launch: capacity, a quota). Kept with the study, so that every driver
/// enforces the same bounds: a tick (a fresh process each time), a second `augur
/// run`, a new Lambda environment. A person's `augur run` or `augur submit` starts
/// them afresh ([`LaunchBounds::fresh`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchBounds {
    /// When they were started afresh.
    pub since_ms: Millis,
    /// An agent has reported since: machines boot, and failed boots stop nothing.
    #[serde(default)]
    pub reported: bool,
    /// The attempts (`trial/attempt`) whose machine ended before their agent
    /// reported, since (the first [`KEPT_FAILED_BOOTS`]): a set, so that recording
    /// one twice (a write retried) counts it once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_boots: Vec<String>,
    /// The last of them: `trial N: why`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_boot: Option<String>,
    /// The drought under way: launches have found no room since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room_since_ms: Option<Millis>,
    /// Batches of launches that found no room in this drought.
    #[serde(default)]
    pub no_room_failures: u32,
    /// No launch is asked before then (the drought's backoff).
    #[serde(default)]
    pub no_room_until_ms: Millis,
    /// What the cloud last said when it had no room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room_what: Option<String>,
}

impl LaunchBounds {
    /// Bounds counting from `now`, nothing seen yet.
    pub fn fresh(now: Millis) -> LaunchBounds {
        LaunchBounds {
            since_ms: now,
            ..LaunchBounds::default()
        }
    }

    /// Whether nothing has been seen (no report, no failed boot, no drought).
    pub fn is_clear(&self) -> bool {
        !self.reported && self.failed_boots.is_empty() && self.no_room_since_ms.is_none()
    }

    /// An agent started at `started_ms`; whether that is news (the first report
    /// since the bounds began).
    pub fn saw_report(&mut self, started_ms: Millis) -> bool {
        let news = !self.reported && started_ms >= self.since_ms;
        self.reported |= news;
        news
    }

    /// The machine of `attempt` of `trial` ended before its agent reported (`why`).
    pub fn failed_boot(&mut self, trial: u64, attempt: u32, why: &str) {
        let key = format!("{trial}/{attempt}");
        if self.failed_boots.contains(&key) || self.failed_boots.len() >= KEPT_FAILED_BOOTS {
            return;
        }
        self.failed_boots.push(key);
        self.last_failed_boot = Some(format!("trial {trial}: {why}"));
    }

    /// Why no more machines should be launched: the first
    /// [`FAILED_BOOTS_TO_STOP`] ended before their agent reported, and no agent
    /// has reported. Launching more machines that cannot work only costs money.
    pub fn boots_stop(&self) -> Option<String> {
        (!self.reported && self.failed_boots.len() >= FAILED_BOOTS_TO_STOP).then(|| {
            format!(
                "its first {} machines ended before their agent reported (the last: {})",
                self.failed_boots.len(),
                self.last_failed_boot.as_deref().unwrap_or("?")
            )
        })
    }

    /// A batch of launches found no room at `now` (the cloud said `what`): the
    /// drought starts or goes on, and no launch is asked until `now` plus the
    /// wait `backoff` gives for the drought's count of failures, unless a wait set
    /// by this batch's first launch is still on. How long it has lasted.
    pub fn no_room(&mut self, now: Millis, what: &str, backoff: impl Fn(u32) -> Millis) -> Millis {
        let since = *self.no_room_since_ms.get_or_insert(now);
        if self.no_room_until_ms <= now {
            self.no_room_failures += 1;
            self.no_room_until_ms = now + backoff(self.no_room_failures);
        }
        self.no_room_what = Some(what.to_string());
        now - since
    }

    /// A launch found room: the drought, if any, is over; whether there was one.
    pub fn room(&mut self) -> bool {
        let was = self.no_room_since_ms.is_some();
        self.no_room_since_ms = None;
        self.no_room_failures = 0;
        self.no_room_until_ms = 0;
        self.no_room_what = None;
        was
    }

    /// Whether launches wait for room at `now`.
    pub fn holds_launches(&self, now: Millis) -> bool {
        now < self.no_room_until_ms
    }

    /// What the study waits for, in a sentence (`augur studies`, the pages).
    pub fn waits(&self, now: Millis) -> Option<String> {
        let since = self.no_room_since_ms?;
        Some(format!(
            "waiting for capacity for {} s: {}",
            (now - since).max(0) / 1000,
            self.no_room_what.as_deref().unwrap_or("no room")
        ))
    }
}

/// Milliseconds as people read them (`1500ms`, `90s`, `1h`).
fn show_ms(ms: Millis) -> String {
    crate::duration::format(std::time::Duration::from_millis(ms.max(0) as u64))
}

/// How a study is driven, recorded with the study so every driver (a foreground run,
/// a tick, `augur stop`) uses the same: the one settings type of a drive. Set from the
/// command line's `DriveFlags`; what is not a setting (a listing's lag, the clock
/// skew leases allow) is a constant of the reconciler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveSettings {
    /// Agents heartbeat this often.
    pub heartbeat_ms: Millis,
    /// A running trial with no heartbeat for this long is lost (recorded under its
    /// old name, `lease_ms`, which agents of earlier builds read).
    #[serde(rename = "lease_ms")]
    pub heartbeat_timeout_ms: Millis,
    /// A starting trial whose agent has not reported after this long is lost.
    pub boot_timeout_ms: Millis,
    pub backoff_base_ms: Millis,
    pub backoff_cap_ms: Millis,
    /// How long launches may fail for want of capacity or quota (the study waits,
    /// backing off) before the drive stops (exit 3).
    #[serde(default = "default_capacity_timeout")]
    pub capacity_timeout_ms: Millis,
    /// An agent that could record no heartbeat for this long ends its script (the
    /// store, or its way to it, is gone). Apart from the heartbeat timeout, and longer: a store
    /// throttled or down for a few minutes ends no running trial, and a driver that
    /// could not see the store meanwhile does not count them lost either.
    #[serde(default = "default_give_up")]
    pub give_up_ms: Millis,
}

fn default_capacity_timeout() -> Millis {
    30 * 60_000
}

fn default_give_up() -> Millis {
    15 * 60_000
}

impl DriveSettings {
    /// The defaults of the embedded default: local processes report within a second.
    pub fn local() -> DriveSettings {
        DriveSettings {
            heartbeat_ms: 2_000,
            heartbeat_timeout_ms: 30_000,
            boot_timeout_ms: 60_000,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 60_000,
            capacity_timeout_ms: default_capacity_timeout(),
            give_up_ms: default_give_up(),
        }
    }

    /// Whether the settings can drive a study: each in its range, the heartbeat
    /// timeout longer than two heartbeats, the backoff's cap at least its base. The
    /// problem names the setting as a flag would (`heartbeat`, `boot-timeout`, ...).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        const MS: Millis = 1;
        const S: Millis = 1_000;
        const H: Millis = 3_600 * S;
        const D: Millis = 24 * H;
        let within = |name: &'static str, v: Millis, lo: Millis, hi: Millis| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((
                    name,
                    format!(
                        "must be from {} to {}, got {}",
                        show_ms(lo),
                        show_ms(hi),
                        show_ms(v)
                    ),
                ))
            }
        };
        within("heartbeat", self.heartbeat_ms, 10 * MS, H)?;
        within(
            "heartbeat-timeout",
            self.heartbeat_timeout_ms,
            20 * MS,
            7 * D,
        )?;
        within("boot-timeout", self.boot_timeout_ms, 100 * MS, 7 * D)?;
        within("backoff-base", self.backoff_base_ms, MS, H)?;
        within("backoff-cap", self.backoff_cap_ms, MS, D)?;
        within("capacity-timeout", self.capacity_timeout_ms, S, 7 * D)?;
        within("give-up", self.give_up_ms, 20 * MS, 7 * D)?;
        if self.heartbeat_timeout_ms < 2 * self.heartbeat_ms {
            return Err((
                "heartbeat-timeout",
                format!(
                    "{} must be at least two heartbeats ({})",
                    show_ms(self.heartbeat_timeout_ms),
                    show_ms(2 * self.heartbeat_ms)
                ),
            ));
        }
        if self.give_up_ms < self.heartbeat_timeout_ms {
            return Err((
                "give-up",
                format!(
                    "{} is below the heartbeat timeout ({}): agents would end trials drivers still count",
                    show_ms(self.give_up_ms),
                    show_ms(self.heartbeat_timeout_ms)
                ),
            ));
        }
        if self.backoff_cap_ms < self.backoff_base_ms {
            return Err((
                "backoff-cap",
                format!(
                    "{} is below the backoff base ({})",
                    show_ms(self.backoff_cap_ms),
                    show_ms(self.backoff_base_ms)
                ),
            ));
        }
        Ok(())
    }

    /// The defaults on a cloud: instances boot in minutes, and DynamoDB writes per
    /// trial are 5 + its duration / the heartbeat.
    pub fn cloud() -> DriveSettings {
        DriveSettings {
            heartbeat_ms: 20_000,
            heartbeat_timeout_ms: 90_000,
            boot_timeout_ms: 600_000,
            ..DriveSettings::local()
        }
    }

    /// The delay before retry `n` (1-based) of trial `id`: capped exponential backoff
    /// with full jitter, drawn from a generator seeded by the study seed, trial and
    /// attempt, so a decision that waits stays a pure function.
    pub fn backoff_ms(&self, seed: u64, id: u64, n: u32) -> Millis {
        use rand::{Rng, SeedableRng};
        let ms = |v: Millis| std::time::Duration::from_millis(v.max(0) as u64);
        let top = crate::backoff::ceiling(ms(self.backoff_base_ms), ms(self.backoff_cap_ms), n);
        let ceiling = top.as_millis().min(Millis::MAX as u128) as Millis;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ id.rotate_left(32) ^ n as u64);
        if ceiling == 0 {
            0
        } else {
            rng.gen_range(0..=ceiling)
        }
    }
}

impl Default for DriveSettings {
    /// The embedded default's ([`DriveSettings::local`]).
    fn default() -> DriveSettings {
        DriveSettings::local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores keep the state's word beside the record, and read it back; what an
    /// older augur wrote there (the display) reads too.
    #[test]
    fn a_study_state_reads_back_from_its_word_and_its_old_display() {
        for s in StudyState::ALL {
            assert_eq!(StudyState::from_word(s.as_word()), Some(s));
            assert_eq!(StudyState::from_word(&s.to_string()), Some(s));
        }
        assert_eq!(
            StudyState::from_word("budget spent"),
            Some(StudyState::Spent)
        );
        assert_eq!(StudyState::from_word("paused"), None);
    }
    #[test]
    fn drive_settings_are_range_checked() {
        assert_eq!(DriveSettings::local().check(), Ok(()));
        assert_eq!(DriveSettings::cloud().check(), Ok(()));
        let bad = |f: fn(&mut DriveSettings)| {
            let mut d = DriveSettings::local();
            f(&mut d);
            d.check().expect_err("out of range")
        };
        assert_eq!(bad(|d| d.heartbeat_ms = 0).0, "heartbeat");
        assert_eq!(bad(|d| d.heartbeat_ms = 2 * 3_600_000).0, "heartbeat");
        assert_eq!(
            bad(|d| d.heartbeat_timeout_ms = d.heartbeat_ms).0,
            "heartbeat-timeout"
        );
        assert_eq!(bad(|d| d.boot_timeout_ms = 0).0, "boot-timeout");
        assert_eq!(bad(|d| d.backoff_base_ms = 0).0, "backoff-base");
        assert_eq!(bad(|d| d.backoff_cap_ms = 10).0, "backoff-cap");
        let (_, why) = bad(|d| d.heartbeat_ms = 0);
        assert!(why.contains("from 10ms to 1h"), "{why}");
    }
}
