//! How a study's instances are listed. A listing shows the instances not yet
//! terminated; the terminated ones, which EC2 keeps listing for about an hour
//! ("Recently terminated instances might appear in the returned results. This
//! interval is usually less than one hour", the `DescribeInstances` reference), are
//! asked for by name only when a driver needs them ([`MachineProvider::ended`]).
//! At 2,000 trials at a time of 3 to 12 minutes, the terminated were six of every
//! seven instances listed (`augur-sim`); an ended instance is asked for once.
//!
//! [`MachineProvider::ended`]: augur_store::provider::MachineProvider::ended

use crate::ec2::Ec2Provider;
use crate::instance::{INCARNATION_TAG, STACK_TAG};
use augur_model::Machine;
use augur_store::provider::{Missing, ProviderError, Tagged};
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pending or running.
pub(crate) const LIVE: &[&str] = &["pending", "running"];
/// What a study's listing shows: all but the terminated.
const LISTED: &[&str] = &["pending", "running", "shutting-down", "stopping", "stopped"];
/// What an instance asked for by name may be.
const ENDED: &[&str] = &["shutting-down", "terminated", "stopping", "stopped"];
/// Values of one filter per call: EC2 answers `FilterLimitExceeded` past 200 values
/// in all the filters of a call; the study's and stack's tags and the states take
/// six.
const NAMES_PER_CALL: usize = 150;
/// How long an answer is kept: past EC2's hour of listing the terminated.
const KEPT: Duration = Duration::from_secs(2 * 3600);

/// The last listing of each study, and when it was made.
pub(crate) type Listed = Mutex<HashMap<String, (Instant, Vec<Machine>)>>;

/// What was asked for by name (an instance id, or a study's trial and attempt), when,
/// and the ended instances found: an ended instance stays ended, so a name answered
/// is not asked again; one not (yet) found is asked again after a listing's time.
pub(crate) type Asked = Mutex<HashMap<String, (Instant, Vec<Machine>)>>;

impl Ec2Provider {
    /// The instances of `study` not terminated, reused for `list_every`.
    pub(crate) async fn listing(&self, study: &str) -> Result<Vec<Machine>, ProviderError> {
        if let Ok(cache) = self.listed.lock() {
            if let Some((at, machines)) = cache.get(study) {
                if at.elapsed() < self.settings.list_every {
                    return Ok(machines.clone());
                }
            }
        }
        let mut found = self.find(self.scope(Some(study)), LISTED).await?;
        // Oldest first, so that of two instances for one attempt the first is kept.
        found.sort_by(|a, b| a.2.cmp(&b.2).then(a.1.id.cmp(&b.1.id)));
        let machines: Vec<Machine> = found.into_iter().map(|(_, m, _)| m).collect();
        if let Ok(mut cache) = self.listed.lock() {
            cache.insert(study.to_string(), (Instant::now(), machines.clone()));
        }
        Ok(machines)
    }

    /// The ended instances among `missing`: by instance id, and by the trial and
    /// attempt tags.
    pub(crate) async fn ended_of(
        &self,
        study: &str,
        missing: &Missing,
    ) -> Result<Vec<Machine>, ProviderError> {
        let names: Vec<(String, Ask)> = missing
            .machines
            .iter()
            .map(|id| (id.clone(), Ask::Instance(id.clone())))
            .chain(missing.attempts.iter().map(|&a| {
                let name = format!("{study}/{}/{}/{}", a.trial, a.attempt, a.created_ms);
                (name, Ask::Attempt(a))
            }))
            .collect();
        let (mut out, due) = self.answered(names);
        let ids: Vec<String> = due.iter().filter_map(|(_, a)| a.instance()).collect();
        let mut trials: Vec<String> = due.iter().filter_map(|(_, a)| a.trial()).collect();
        trials.dedup();
        let mut found = Vec::new();
        for chunk in ids.chunks(NAMES_PER_CALL) {
            let mut filters = self.scope(Some(study));
            filters.push(values("instance-id", chunk));
            found.extend(self.find(filters, ENDED).await?.into_iter().map(|f| f.1));
        }
        for chunk in trials.chunks(NAMES_PER_CALL) {
            let mut filters = self.scope(Some(study));
            filters.push(values("tag:augur:trial", chunk));
            found.extend(self.find(filters, ENDED).await?.into_iter().map(|f| f.1));
        }
        let now = Instant::now();
        let answers: Vec<(String, Vec<Machine>)> = due
            .into_iter()
            .map(|(name, ask)| (name, found.iter().filter(|m| ask.is(m)).cloned().collect()))
            .collect();
        for (_, of) in &answers {
            out.extend(of.iter().cloned());
        }
        if let Ok(mut asked) = self.asked.lock() {
            for (name, of) in answers {
                asked.insert(name, (now, of));
            }
        }
        Ok(out)
    }

    /// The machines already found for `names`, and the names to ask (never asked,
    /// or not found a listing's time ago). Forgets answers past [`KEPT`].
    fn answered(&self, names: Vec<(String, Ask)>) -> (Vec<Machine>, Vec<(String, Ask)>) {
        let Ok(mut asked) = self.asked.lock() else {
            return (Vec::new(), names);
        };
        asked.retain(|_, (at, _)| at.elapsed() < KEPT);
        let mut out = Vec::new();
        let mut due = Vec::new();
        for (name, ask) in names {
            match asked.get(&name) {
                Some((_, found)) if !found.is_empty() => out.extend(found.iter().cloned()),
                Some((at, _)) if at.elapsed() < self.settings.list_every => {}
                _ => due.push((name, ask)),
            }
        }
        (out, due)
    }

    /// Instances matching `filters` in one of `states`, with their study and launch
    /// time; those not pending or running are marked `gone` with their state-reason
    /// code.
    pub(crate) async fn find(
        &self,
        filters: Vec<Filter>,
        states: &[&str],
    ) -> Result<Vec<(String, Machine, Option<String>)>, ProviderError> {
        let mut out = Vec::new();
        let mut token = None;
        let states = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
            .build();
        loop {
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .filters(states.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| crate::instance::fail("DescribeInstances", e))?;
            for r in page.reservations() {
                for i in r.instances() {
                    let tag = |k: &str| {
                        i.tags()
                            .iter()
                            .find(|t| t.key() == Some(k))
                            .and_then(|t| t.value())
                            .map(String::from)
                    };
                    let (Some(study), Some(trial), Some(attempt), Some(id)) = (
                        tag("augur:study"),
                        tag("augur:trial"),
                        tag("augur:attempt"),
                        i.instance_id(),
                    ) else {
                        continue;
                    };
                    let (Ok(trial), Ok(attempt)) = (trial.parse(), attempt.parse()) else {
                        continue;
                    };
                    let incarnation = tag(INCARNATION_TAG).and_then(|c| c.parse().ok());
                    let launched = i.launch_time().map(|t| t.to_string());
                    let live = matches!(
                        i.state().and_then(|s| s.name()),
                        Some(InstanceStateName::Pending | InstanceStateName::Running) | None
                    );
                    let gone = (!live).then(|| {
                        i.state_reason()
                            .and_then(|r| r.code())
                            .or_else(|| i.state().and_then(|s| s.name()).map(|n| n.as_str()))
                            .unwrap_or("ended")
                            .to_string()
                    });
                    let billing = self.listed_billing(i);
                    out.push((
                        study,
                        Machine {
                            id: id.to_string(),
                            trial,
                            attempt,
                            gone,
                            incarnation,
                            billing,
                        },
                        launched,
                    ));
                }
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// The filters of a listing of `study`'s instances (all studies': `None`), in this
    /// stack only.
    pub(crate) fn scope(&self, study: Option<&str>) -> Vec<Filter> {
        let mut f = vec![match study {
            Some(name) => Self::tag_filter("augur:study", name),
            None => Filter::builder()
                .name("tag-key")
                .values("augur:study")
                .build(),
        }];
        if !self.settings.table.is_empty() {
            f.push(Self::tag_filter(STACK_TAG, &self.settings.table));
        }
        f
    }

    pub(crate) fn tag_filter(key: &str, value: &str) -> Filter {
        Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build()
    }
}

/// One name asked for.
enum Ask {
    Instance(String),
    Attempt(Tagged),
}

impl Ask {
    fn instance(&self) -> Option<String> {
        match self {
            Ask::Instance(id) => Some(id.clone()),
            Ask::Attempt(_) => None,
        }
    }
    fn trial(&self) -> Option<String> {
        match self {
            Ask::Attempt(a) => Some(a.trial.to_string()),
            Ask::Instance(_) => None,
        }
    }
    /// Whether `m` answers it.
    fn is(&self, m: &Machine) -> bool {
        match self {
            Ask::Instance(id) => m.id == *id,
            Ask::Attempt(a) => a.is(m),
        }
    }
}

/// A filter on `name` matching any of `values`.
fn values(name: &str, values: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.to_vec()))
        .build()
}
