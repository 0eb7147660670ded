//! The cloud as the simulation plays it: EC2 instances that boot late or never,
//! are reclaimed, and agents that heartbeat with a growing series of readings and
//! write their results as the real agent does.

use crate::counted::Calls;
use crate::HEARTBEAT_MS;
use async_trait::async_trait;
use augur::provider::{MachineProvider, Missing, ProviderError};
use augur::Machine;
use augur_model::bounded::Series;
use augur_model::{AttemptEnd, Expect, MetricPoint, Millis, Study, Trial, TrialState, TrialUpdate};
use augur_store::{Beaten, Launched, TrialStore, Written};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A script prints a reading this often (three metrics each).
const READING_MS: Millis = 15_000;

#[derive(Clone, Debug, PartialEq)]
pub enum InstState {
    Booting,
    Running,
    Gone(&'static str),
}

#[derive(Clone, Debug)]
pub struct Inst {
    study: String,
    trial: u64,
    attempt: u32,
    /// `None`: never boots.
    boot_at: Option<Millis>,
    run_ms: Millis,
    fails: bool,
    /// Reclaimed this long after its agent started.
    reclaim_after: Option<Millis>,
    state: InstState,
    launched: Millis,
    started: Millis,
    beat: Millis,
    gone_at: Millis,
    /// The readings its script printed, as the agent keeps them.
    series: Series,
}

/// How an abandoned study's machines ended ([`SimCloud::ends_since`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ends {
    /// Ended by themselves: the script finished, the attempt was gone, reclaimed.
    pub on_their_own: usize,
    /// The last of those, after the driver died.
    pub last_own_ms: Millis,
    /// Ended by a tick's TerminateInstances.
    pub by_ticks: usize,
    /// The longest a tick took to end one after the rules allowed it.
    pub lag_ms: Millis,
}

/// Instances by study, then by id: a listing filtered by the study's tag is
/// answered by EC2, not by the caller, so the simulation keeps its own cost of one
/// out of the CPU it measures.
pub type Instances = BTreeMap<String, BTreeMap<String, Inst>>;

/// EC2 as the reconciler sees it: instances that boot late or never, are reclaimed,
/// and are known for an hour after they end (with their state reason).
pub struct SimCloud {
    pub now: Arc<AtomicI64>,
    pub insts: Mutex<Instances>,
    pub rng: Mutex<ChaCha8Rng>,
    pub calls: Arc<Calls>,
    pub next: AtomicU64,
    /// RunInstances per (study, trial, attempt): a duplicate launch would show here.
    pub launches: Mutex<HashMap<(String, u64, u32), u32>>,
    /// Every script runs this long (else 3 to 12 minutes).
    pub run_ms: Option<Millis>,
    /// Attempts whose agent recorded a success, by study.
    pub succeeded: Mutex<HashMap<String, u64>>,
    /// Each study's last listing and when (virtual) it was made: reused for
    /// [`LIST_EVERY`], as the EC2 provider does.
    pub listed: Mutex<HashMap<String, (Millis, Vec<Machine>)>>,
    /// The instance of each (study, trial, attempt), as its tags say.
    pub by_attempt: Mutex<HashMap<(String, u64, u32), String>>,
    /// The ended instances asked for by name, as the EC2 provider keeps them: a
    /// name answered is not asked again, one not found is after [`LIST_EVERY`].
    pub asked: Mutex<HashMap<String, (Millis, Vec<Machine>)>>,
}

/// How long a listing is reused (the EC2 provider's `list_every`).
const LIST_EVERY: Millis = 5_000;
/// Names asked for in one DescribeInstances (the provider's chunks).
const NAMES_PER_CALL: usize = 150;

#[async_trait]
impl MachineProvider for SimCloud {
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError> {
        self.calls.count("RunInstances");
        let now = self.now.load(Ordering::Relaxed);
        let id = format!("i-{:08x}", self.next.fetch_add(1, Ordering::Relaxed));
        let mut rng = self.rng.lock().map_err(|_| ProviderError::Poisoned)?;
        let inst = Inst {
            study: study.name.clone(),
            trial: trial.id,
            attempt: trial.attempt,
            boot_at: (!rng.gen_bool(0.01)).then(|| now + rng.gen_range(20_000..90_000)),
            run_ms: self
                .run_ms
                .unwrap_or_else(|| rng.gen_range(180_000..720_000)),
            fails: rng.gen_bool(0.02),
            reclaim_after: rng.gen_bool(0.03).then(|| rng.gen_range(10_000..300_000)),
            state: InstState::Booting,
            launched: now,
            started: 0,
            beat: 0,
            gone_at: 0,
            series: Series::default(),
        };
        if let Ok(mut l) = self.launches.lock() {
            *l.entry((study.name.clone(), trial.id, trial.attempt))
                .or_default() += 1;
        }
        if let Ok(mut by) = self.by_attempt.lock() {
            by.insert((study.name.clone(), trial.id, trial.attempt), id.clone());
        }
        if let Ok(mut i) = self.insts.lock() {
            i.entry(study.name.clone())
                .or_default()
                .insert(id.clone(), inst);
        }
        Ok(Launched::free(id))
    }

    /// A study's instances not terminated (DescribeInstances filtered by its tag, in
    /// pages of 1,000), reused for [`LIST_EVERY`].
    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        let now = self.now.load(Ordering::Relaxed);
        if let Ok(l) = self.listed.lock() {
            if let Some((at, machines)) = l.get(study) {
                if now - at < LIST_EVERY {
                    return Ok(machines.clone());
                }
            }
        }
        let all = self.listed(Some(study), false)?;
        let machines: Vec<Machine> = all.into_iter().map(|(_, m)| m).collect();
        if let Ok(mut l) = self.listed.lock() {
            l.insert(study.to_string(), (now, machines.clone()));
        }
        Ok(machines)
    }

    async fn ended(&self, study: &str, missing: &Missing) -> Result<Vec<Machine>, ProviderError> {
        let now = self.now.load(Ordering::Relaxed);
        let names = missing.machines.iter().map(|id| (id.clone(), None)).chain(
            missing.attempts.iter().map(|a| {
                let name = format!("{study}/{}/{}/{}", a.trial, a.attempt, a.created_ms);
                (name, Some(*a))
            }),
        );
        let mut asked = self.asked.lock().map_err(|_| ProviderError::Poisoned)?;
        asked.retain(|_, (at, _)| now - *at < 7_200_000);
        let (mut out, mut due) = (Vec::new(), Vec::new());
        for (name, attempt) in names {
            match asked.get(&name) {
                Some((_, found)) if !found.is_empty() => out.extend(found.iter().cloned()),
                Some((at, _)) if now - at < LIST_EVERY => {}
                _ => due.push((name, attempt)),
            }
        }
        let (by_id, by_tag) = due.iter().partition::<Vec<_>, _>(|(_, a)| a.is_none());
        let calls = by_id.len().div_ceil(NAMES_PER_CALL) + by_tag.len().div_ceil(NAMES_PER_CALL);
        for _ in 0..calls {
            self.calls.count("DescribeInstances");
        }
        for (name, attempt) in due {
            let id = match attempt {
                None => Some(name.clone()),
                Some(a) => self.instance_of(study, a.trial, a.attempt),
            };
            let found: Vec<Machine> = id
                .and_then(|id| self.ended_one(study, &id))
                .filter(|m| attempt.is_none_or(|a| a.is(m)))
                .into_iter()
                .collect();
            out.extend(found.iter().cloned());
            asked.insert(name, (now, found));
        }
        Ok(out)
    }

    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError> {
        self.listed(None, false)
    }

    fn invalidate(&self, study: &str) {
        if let Ok(mut l) = self.listed.lock() {
            l.remove(study);
        }
    }

    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError> {
        self.calls.count("TerminateInstances");
        let now = self.now.load(Ordering::Relaxed);
        if let Ok(mut insts) = self.insts.lock() {
            if let Some(i) = insts.values_mut().find_map(|s| s.get_mut(&machine.id)) {
                if !matches!(i.state, InstState::Gone(_)) {
                    i.state = InstState::Gone("Client.UserInitiatedShutdown");
                    i.gone_at = now;
                }
            }
        }
        // A reused listing must not show it alive, as in the EC2 provider.
        if let Ok(mut l) = self.listed.lock() {
            for (_, machines) in l.values_mut() {
                machines.retain(|m| m.id != machine.id);
            }
        }
        Ok(())
    }

    fn sees_all(&self) -> bool {
        false
    }
}

impl SimCloud {
    /// Successes recorded so far in studies other than `study`.
    pub fn succeeded_besides(&self, study: &str) -> u64 {
        self.succeeded
            .lock()
            .map(|n| n.iter().filter(|(s, _)| *s != study).map(|(_, c)| c).sum())
            .unwrap_or(0)
    }

    /// The trials of `study` whose instances are live (what the tick's wind-down of
    /// an abandoned study learns from its listing).
    pub fn live_trials(&self, study: &str) -> std::collections::BTreeSet<u64> {
        let Ok(insts) = self.insts.lock() else {
            return Default::default();
        };
        insts
            .get(study)
            .into_iter()
            .flat_map(|of| of.values())
            .filter(|i| !matches!(i.state, InstState::Gone(_)))
            .map(|i| i.trial)
            .collect()
    }

    /// How the machines of `study` live at `since` ended: on their own (their script
    /// done, their attempt gone, reclaimed) or by a tick's TerminateInstances, and
    /// how long after the rules let a tick end it (a machine that never booted: its
    /// boot timeout after its launch; any other: at once).
    pub fn ends_since(&self, study: &str, since: Millis, boot_timeout: Millis) -> Ends {
        let mut e = Ends::default();
        let Ok(insts) = self.insts.lock() else {
            return e;
        };
        for i in insts.get(study).into_iter().flat_map(|of| of.values()) {
            let InstState::Gone(reason) = i.state else {
                continue;
            };
            if i.gone_at < since {
                continue;
            }
            if reason == "Client.UserInitiatedShutdown" {
                let due = match i.started {
                    0 => (i.launched + boot_timeout).max(since),
                    _ => since,
                };
                e.by_ticks += 1;
                e.lag_ms = e.lag_ms.max(i.gone_at - due);
            } else {
                e.on_their_own += 1;
                e.last_own_ms = e.last_own_ms.max(i.gone_at - since);
            }
        }
        e
    }

    /// Instance `id` of `study` if it ended within the hour, as a listing shows it
    /// (EC2 answers a filter by name from its own index: a lookup here, so that
    /// the simulation's own search stays out of the CPU it measures).
    fn ended_one(&self, study: &str, id: &str) -> Option<Machine> {
        let insts = self.insts.lock().ok()?;
        let i = insts.get(study)?.get(id)?;
        matches!(i.state, InstState::Gone(_)).then(|| machine(id, i))
    }

    /// The instance launched for an attempt (by its tags).
    fn instance_of(&self, study: &str, trial: u64, attempt: u32) -> Option<String> {
        let by = self.by_attempt.lock().ok()?;
        by.get(&(study.to_string(), trial, attempt)).cloned()
    }

    /// The instances of `study` (or all) not terminated, and with `ended` those that
    /// were (within the hour), counting the DescribeInstances pages.
    fn listed(
        &self,
        study: Option<&str>,
        ended: bool,
    ) -> Result<Vec<(String, Machine)>, ProviderError> {
        let insts = self.insts.lock().map_err(|_| ProviderError::Poisoned)?;
        let of: Vec<&BTreeMap<String, Inst>> = match study {
            Some(s) => insts.get(s).into_iter().collect(),
            None => insts.values().collect(),
        };
        let out: Vec<(String, Machine)> = of
            .into_iter()
            .flatten()
            .filter(|(_, i)| ended || !matches!(i.state, InstState::Gone(_)))
            .map(|(id, i)| (i.study.clone(), machine(id, i)))
            .collect();
        for _ in 0..out.len().div_ceil(1000).max(1) {
            self.calls.count("DescribeInstances");
        }
        Ok(out)
    }

    /// Moves every instance and its agent on to `now`: boots, heartbeats, results,
    /// reclaims, and the end of listings an hour after an instance ended.
    pub async fn advance(&self, now: Millis, agents: &dyn TrialStore) {
        self.now.store(now, Ordering::Relaxed);
        // Only the instances with something to do now (most wait for their next
        // heartbeat), and the end of listings an hour after an instance ended.
        let snapshot: Vec<(String, Inst)> = match self.insts.lock() {
            Ok(mut i) => {
                for of in i.values_mut() {
                    of.retain(|_, v| {
                        !matches!(v.state, InstState::Gone(_)) || now - v.gone_at <= 3_600_000
                    });
                }
                i.values()
                    .flatten()
                    .filter(|(_, v)| match v.state {
                        InstState::Booting => v.boot_at.is_some_and(|at| at <= now),
                        InstState::Running => {
                            now - v.beat >= HEARTBEAT_MS
                                || now - v.started >= v.run_ms
                                || v.reclaim_after.is_some_and(|r| now - v.started >= r)
                        }
                        InstState::Gone(_) => false,
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
            Err(_) => return,
        };
        for (id, inst) in snapshot {
            let next = self.step(&id, &inst, now, agents).await;
            if let Ok(mut insts) = self.insts.lock() {
                insts.entry(inst.study).or_default().insert(id, next);
            }
        }
    }

    /// What instance `id`'s agent does at `now`: start its attempt, beat, end it, or
    /// lose its machine.
    async fn step(&self, id: &str, inst: &Inst, now: Millis, agents: &dyn TrialStore) -> Inst {
        let mut next = inst.clone();
        match inst.state {
            InstState::Booting => match inst.boot_at {
                Some(at) if at <= now => {
                    let up = TrialUpdate::running(id, 1, now, None);
                    let ok = agents
                        .update_trial(
                            &inst.study,
                            inst.trial,
                            &Expect::state(TrialState::Starting, inst.attempt),
                            &up,
                        )
                        .await;
                    if matches!(ok, Ok(Written::Done(_))) {
                        next.state = InstState::Running;
                        next.started = now;
                        next.beat = now;
                    } else {
                        // Its attempt moved on: the agent powers the instance off.
                        next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                        next.gone_at = now;
                        next.series = Series::default();
                    }
                }
                _ => {}
            },
            InstState::Running => {
                if inst.reclaim_after.is_some_and(|r| now - inst.started >= r) {
                    next.state = InstState::Gone("Server.SpotInstanceTermination");
                    next.gone_at = now;
                    next.series = Series::default();
                } else if now - inst.started >= inst.run_ms {
                    let mut values = print(&mut next, now);
                    values.insert("v".to_string(), inst.trial as f64);
                    next.series.push(MetricPoint {
                        t_ms: now,
                        values: values.clone(),
                    });
                    let outcome = AttemptEnd {
                        exit_code: Some(if inst.fails { 1 } else { 0 }),
                        metrics: values,
                        series: next.series.points(),
                        ..Default::default()
                    };
                    let wrote = agents
                        .update_trial(
                            &inst.study,
                            inst.trial,
                            &Expect::state(TrialState::Running, inst.attempt),
                            &TrialUpdate::finished(now, &outcome),
                        )
                        .await;
                    if let (Ok(Written::Done(t)), Ok(mut n)) = (wrote, self.succeeded.lock()) {
                        if t.state == TrialState::Succeeded {
                            *n.entry(inst.study.clone()).or_default() += 1;
                        }
                    }
                    next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                    next.gone_at = now;
                    next.series = Series::default();
                } else if now - inst.beat >= HEARTBEAT_MS {
                    let metrics = print(&mut next, now);
                    let up = TrialUpdate {
                        heartbeat_ms: Some(now),
                        metrics: Some(metrics),
                        series: Some(next.series.points()),
                        ..Default::default()
                    };
                    let ok = agents
                        .heartbeat(&inst.study, inst.trial, inst.attempt, &up)
                        .await;
                    if matches!(ok, Ok(Beaten::Recorded)) {
                        next.beat = now;
                    } else {
                        next.state = InstState::Gone("Client.InstanceInitiatedShutdown");
                        next.gone_at = now;
                        next.series = Series::default();
                    }
                }
            }
            InstState::Gone(_) => {}
        }
        next
    }
}

/// The readings the script printed since the last heartbeat; the last values.
fn print(inst: &mut Inst, now: Millis) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    let mut t = inst.beat - inst.beat % READING_MS + READING_MS;
    while t <= now {
        let step = ((t - inst.started) / READING_MS).max(1) as f64;
        last = BTreeMap::from([
            ("step".to_string(), step),
            ("loss".to_string(), 1.0 / step),
            ("accuracy".to_string(), 1.0 - 1.0 / (step + 1.0)),
        ]);
        inst.series.push(MetricPoint {
            t_ms: t,
            values: last.clone(),
        });
        t += READING_MS;
    }
    last
}

/// Instance `id` as a listing shows it.
fn machine(id: &str, i: &Inst) -> Machine {
    Machine {
        id: id.to_string(),
        trial: i.trial,
        attempt: i.attempt,
        gone: match &i.state {
            InstState::Gone(why) => Some(why.to_string()),
            _ => None,
        },
        incarnation: None,
        billing: None,
    }
}
