//! Machines that run several attempts at once ([`View::slots`]: a study's
//! `run.gpus` on an instance type with more GPUs, kept warm).
//!
//! To the record each slot is a machine of its own, named after its machine
//! ([`slot_name`]: `i-0abc` is slot 0, `i-0abc/1` slot 1), with an agent of its own
//! that takes the study's attempts given to that name, one at a time, on the slot's
//! GPUs. So `decide` sees the listing expanded into slots, and the rules of warm
//! machines hold for each slot as they hold for a machine. Three rules are the
//! slots' own:
//! - a slot no record names yet (*fresh*: every slot but 0 of a new machine) is
//!   idle from when its machine's first attempt started, which is when its agent
//!   started waiting, for as long as any warm machine is ([`Warm::idle`]);
//! - a launch brings `slots - 1` fresh slots: pending trials wait for those of
//!   machines still booting rather than launch machines of their own
//!   ([`coming`]);
//! - a machine is ended only when every slot of it would be ([`merge_ends`]): the
//!   end of one slot's attempt must not end the others'.
//!
//! [`Warm::idle`]: super::warm::Warm::idle

use super::warm::Idle;
use super::{Action, Machine, View};
use augur_model::machine::{machine_of_slot, slot_name, slot_of};
use augur_model::Trial;
use std::borrow::Cow;
use std::collections::HashSet;

/// The listing as slots: each live or ended machine, then its slots 1.., which
/// carry its tags, its state and its billing.
pub(super) fn expand(machines: &[Machine], slots: u32) -> Cow<'_, [Machine]> {
    if slots <= 1 {
        return Cow::Borrowed(machines);
    }
    let mut out = Vec::with_capacity(machines.len() * slots as usize);
    for m in machines {
        out.push(m.clone());
        out.extend((1..slots).map(|s| Machine {
            id: slot_name(&m.id, s),
            ..m.clone()
        }));
    }
    Cow::Owned(out)
}

/// The most slots the records name on one machine (1 when they name none): how
/// many a machine of the study runs at least, for whoever cannot ask its provider
/// (a machine one of whose slots runs an attempt must never be ended as a whole).
pub fn slots_named(trials: &[Trial]) -> u32 {
    named_machines(trials)
        .map(|m| slot_of(m) + 1)
        .max()
        .unwrap_or(1)
}

/// Every machine name the records give, each attempt's (earlier ones too).
fn named_machines(trials: &[Trial]) -> impl Iterator<Item = &str> {
    trials
        .iter()
        .flat_map(|t| t.history.iter().map(|h| &h.machine).chain([&t.machine]))
        .filter_map(|m| m.as_deref())
}

/// How many fresh slots of the study's machines are still to come: `slots - 1` for
/// each attempt launched (not given to a slot) that goes on, less its machine's
/// slots a record names and those already [`idle`](super::warm::Warm::idle) (a
/// machine booting, or not yet in the provider's listing, has none yet), none once
/// its agents stopped waiting ([`super::warm::waits`]).
pub(super) fn coming(v: &View, idle: &[Idle]) -> u64 {
    if v.slots <= 1 {
        return 0;
    }
    let named: HashSet<&str> = named_machines(v.trials)
        .filter(|m| slot_of(m) > 0)
        .collect();
    let launched = |t: &&Trial| {
        t.state.is_active()
            && !t.assigned
            && t.machine.as_deref().is_none_or(|m| slot_of(m) == 0)
            && t.started_ms.is_none_or(|s| super::warm::waits(v, s))
    };
    v.open_trials()
        .filter(launched)
        .map(|t| {
            let Some(m) = t.machine.as_deref() else {
                return v.slots as u64 - 1;
            };
            let fresh = (1..v.slots).filter(|&k| !named.contains(slot_name(m, k).as_str()));
            let idle = |name: &String| idle.iter().any(|i| i.machine == name);
            fresh.map(|k| slot_name(m, k)).filter(|n| !idle(n)).count() as u64
        })
        .sum()
}

/// `actions` with the ends of slots made ends of machines: a machine is ended
/// (once, by its own name) when every live slot of it is; else none of its slots'
/// ends is kept.
pub(super) fn merge_ends(actions: Vec<Action>, v: &View) -> Vec<Action> {
    if v.slots <= 1 {
        return actions;
    }
    let ending: HashSet<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { machine, .. } => Some(machine.id.clone()),
            _ => None,
        })
        .collect();
    let whole = |id: &str| {
        v.machines
            .iter()
            .filter(|m| m.gone.is_none() && machine_of_slot(&m.id) == id)
            .all(|m| ending.contains(&m.id))
    };
    let mut ended = HashSet::new();
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Terminate { machine, reason } => {
                let id = machine_of_slot(&machine.id).to_string();
                (whole(&id) && ended.insert(id.clone())).then_some(Action::Terminate {
                    machine: Machine { id, ..machine },
                    reason,
                })
            }
            a => Some(a),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{decide, Action, Loss, Mode, Scope, View};
    use augur_model::DriveSettings;
    use augur_model::{Machine, Params, Study, Trial, TrialState};
    use std::path::Path;

    fn study(trials: u64) -> Study {
        let text = format!("name='s'\nobjective={{metric='m'}}\ntrials={trials}\nparallel=2\n[run]\nscript='true'\ngpus=2\nreuse='study'\nkeep_alive='60s'\n");
        Study::parse(&text, "t", Path::new(".")).expect("study")
    }

    fn trial(id: u64, state: TrialState, machine: Option<&str>) -> Trial {
        let mut t = Trial::new("s", id, id - 1, 0, Params::new(), 0);
        (t.state, t.machine) = (state, machine.map(String::from));
        if state != TrialState::Pending {
            t.launched_ms = Some(0);
        }
        if matches!(state, TrialState::Running | TrialState::Succeeded) {
            (t.started_ms, t.heartbeat_ms) = (Some(500), Some(1_900));
        }
        if state == TrialState::Succeeded {
            (t.exit_code, t.finished_ms) = (Some(0), Some(1_000));
        }
        t
    }

    /// Instance `i-1`, launched for trial 1.
    fn instance(gone: Option<&str>) -> Machine {
        Machine {
            id: "i-1".into(),
            trial: 1,
            attempt: 1,
            gone: gone.map(String::from),
            ..Default::default()
        }
    }

    fn decide_at(s: &Study, trials: &[Trial], machines: &[Machine]) -> Vec<Action> {
        let drive = DriveSettings::default();
        decide(&View {
            study: s,
            trials,
            open: None,
            machines,
            scope: &Scope::Budget(s.trials),
            mode: Mode::Run,
            exhausted: false,
            sees_all: false,
            warm: true,
            pooled: false,
            fresh_listing: true,
            drive: &drive,
            now: 2_000,
            seen_since: 0,
            slots: 2,
        })
    }

    #[test]
    fn trials_wait_for_the_slots_a_booting_machine_brings_then_take_them() {
        let s = study(2);
        use TrialState::{Pending, Running, Starting};
        // Two trials to place, two slots a machine: one launch.
        let both = [trial(1, Pending, None), trial(2, Pending, None)];
        let launch = Action::Launch {
            trial: 1,
            attempt: 1,
        };
        assert_eq!(decide_at(&s, &both, &[]), vec![launch]);
        // While it boots, trial 2 waits for its second slot.
        let booting = [trial(1, Starting, Some("i-1")), trial(2, Pending, None)];
        assert_eq!(decide_at(&s, &booting, &[instance(None)]), vec![]);
        // Its first attempt runs: until the listing shows the machine, trial 2 still
        // waits; then the second slot takes it.
        let up = [trial(1, Running, Some("i-1")), trial(2, Pending, None)];
        assert_eq!(decide_at(&s, &up, &[]), vec![], "not listed yet");
        let a = decide_at(&s, &up, &[instance(None)]);
        assert_eq!(
            a,
            vec![Action::Assign {
                trial: 2,
                attempt: 1,
                machine: "i-1/1".into(),
                billing: None
            }]
        );
        // A new trial is proposed to be placed next pass, not launched at once: the
        // booting machine's second slot will take it.
        let a = decide_at(&study(4), &booting[..1], &[instance(None)]);
        assert!(
            a.contains(&Action::Propose {
                count: 1,
                launch: false
            }),
            "{a:?}"
        );
    }

    #[test]
    fn a_machine_ends_only_when_every_slot_of_it_would() {
        let s = study(2);
        use TrialState::{Running, Succeeded};
        // Slot 0 is idle and no attempt is left for it, but slot 1 runs trial 2.
        let one_left = [
            trial(1, Succeeded, Some("i-1")),
            trial(2, Running, Some("i-1/1")),
        ];
        let a = decide_at(&s, &one_left, &[instance(None)]);
        assert!(
            !a.iter().any(|a| matches!(a, Action::Terminate { .. })),
            "{a:?}"
        );
        // Both done: the machine is ended once, by its own name, and the study ends.
        let done = [
            trial(1, Succeeded, Some("i-1")),
            trial(2, Succeeded, Some("i-1/1")),
        ];
        let a = decide_at(&s, &done, &[instance(None)]);
        let ends: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::Terminate { machine, .. } => Some(machine.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec!["i-1"], "{a:?}");
    }

    #[test]
    fn a_reclaimed_machine_loses_the_attempt_of_every_slot_as_a_preemption() {
        let s = study(2);
        let running = [
            trial(1, TrialState::Running, Some("i-1")),
            trial(2, TrialState::Running, Some("i-1/1")),
        ];
        let reclaimed = instance(Some("Server.SpotInstanceTermination"));
        let a = decide_at(&s, &running, &[reclaimed]);
        let lost: Vec<u64> = a
            .iter()
            .filter_map(|a| match a {
                Action::MarkLost {
                    trial,
                    loss: Loss::Preempted,
                    ..
                } => Some(*trial),
                _ => None,
            })
            .collect();
        assert_eq!(lost, vec![1, 2], "{a:?}");
    }

    #[test]
    fn the_records_say_at_least_how_many_slots_a_machine_has() {
        use super::slots_named;
        use TrialState::{Running, Succeeded};
        assert_eq!(slots_named(&[]), 1);
        assert_eq!(slots_named(&[trial(1, Running, Some("i-1"))]), 1);
        let named = [
            trial(1, Succeeded, Some("i-1/1")),
            trial(2, Running, Some("i-2/3")),
        ];
        assert_eq!(slots_named(&named), 4);
    }
}
