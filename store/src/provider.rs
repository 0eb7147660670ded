//! The machines trials run on: the [`MachineProvider`] trait, implemented by local
//! processes and in-process objectives (in `augur`) and by EC2 (in `augur-aws`).

use crate::{Failure, Kind};
use async_trait::async_trait;
use augur_model::cost::Billing;
use augur_model::{Machine, Millis, Study, Trial};

/// A provider failure. Each carries what failed in words and, where it came from
/// another error (the SDK's, the operating system's), that error as its source.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The machine could not be started (bad agent path, spawn failure): the
    /// attempt is lost.
    #[error("cannot launch: {0}")]
    Launch(#[source] Failure),
    /// The cloud has no room now: capacity, a quota, a spot price, an instance
    /// profile still propagating. No machine was made; the study waits and tries
    /// again, and the trial's attempts are not used up.
    #[error("no capacity: {0}")]
    Capacity(#[source] Failure),
    /// The provider cannot be reached now (retry later; exit code 3 in the end).
    #[error("machine provider unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// IAM refused the request: no machine was made, and none will be until the
    /// grant is added. Never retried, costs no attempt (exit code 2).
    #[error("{0}")]
    Denied(Box<crate::Denied>),
    /// The provider refused the request itself: an image, subnet, security group,
    /// launch template or key pair that does not exist, a parameter it does not
    /// accept. No machine was made and none will be until the study's settings or
    /// the stack are fixed. Never retried, costs no attempt (exit code 2).
    #[error("{0}: nothing was launched; fix the study's [aws] settings or the stack")]
    Rejected(#[source] Failure),
    /// A panic elsewhere left a lock of the provider's poisoned (a bug).
    #[error("a lock of the machine provider was poisoned by a panic")]
    Poisoned,
}

impl ProviderError {
    /// What this failure asks of whoever meets it.
    pub fn kind(&self) -> Kind {
        match self {
            ProviderError::Launch(_) | ProviderError::Capacity(_) => Kind::Unavailable,
            ProviderError::Unavailable(_) => Kind::Unavailable,
            ProviderError::Denied(_) | ProviderError::Rejected(_) => Kind::Input,
            ProviderError::Poisoned => Kind::Bug,
        }
    }

    /// The provider unavailable, for the reason `what` says.
    pub fn unavailable(what: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable(Failure::said(what))
    }
}

/// A machine started for an attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    /// Its id (pid, instance id).
    pub id: String,
    /// How it is billed (`None`: free, a local machine), from what the provider
    /// knew at once.
    pub billing: Option<Billing>,
    /// The billing's price is final; else a first guess, asked again with
    /// [`MachineProvider::price`] once the launch is recorded.
    pub priced: bool,
}

impl Launched {
    /// A free machine (local processes, in-process objectives).
    pub fn free(id: impl Into<String>) -> Launched {
        Launched {
            id: id.into(),
            billing: None,
            priced: true,
        }
    }
}

/// What a listing left out that a driver needs to judge its trials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// Machines by the name their records give them: warm machines that may be
    /// given the next attempt, or serve one given to them.
    pub machines: Vec<String>,
    /// Active attempts by the tags their machine was launched with (whatever name
    /// their record gives it).
    pub attempts: Vec<Tagged>,
}

/// An attempt's machine as its tags name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub trial: u64,
    pub attempt: u32,
    /// The trial record's creation time: a machine of an earlier study of the same
    /// name carries another (a stranger).
    pub created_ms: Millis,
}

impl Tagged {
    /// Whether `m` is this attempt's machine.
    pub fn is(&self, m: &Machine) -> bool {
        (m.trial, m.attempt) == (self.trial, self.attempt)
            && m.incarnation.is_none_or(|c| c == self.created_ms)
    }
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty() && self.attempts.is_empty()
    }
}

/// Starts, lists and ends the machines trials run on (one per attempt, or kept
/// warm for the study's next attempts).
#[async_trait]
pub trait MachineProvider: Send + Sync {
    /// Starts a machine whose agent runs `trial` at its current attempt. Asked again
    /// for the same attempt (its answer was lost, or came too late to record), it
    /// answers with the machine the first ask made, if it made one: a cloud's launch
    /// is idempotent by its `ClientToken`. Slow work that is not the launch (prices)
    /// is left to [`price`](Self::price), after the launch is recorded.
    async fn launch(&self, study: &Study, trial: &Trial) -> Result<Launched, ProviderError>;
    /// The price of a machine billed as `billing` (a first guess: a launch's answer
    /// not [`Launched::priced`], or a listing's), asked of its source; `None` when
    /// there is nothing better to say.
    async fn price(&self, _billing: &Billing) -> Option<Billing> {
        None
    }
    /// The machines of `study` that exist now, whoever launched them. A cloud may
    /// leave out those that ended a while ago (see [`ended`](Self::ended)).
    async fn list(&self, study: &str) -> Result<Vec<Machine>, ProviderError>;
    /// The ended machines among `missing`, which [`list`](Self::list) left out: a
    /// cloud lists only machines not yet terminated, since EC2 keeps terminated
    /// instances listed for about an hour, most of a busy study's listing, and a
    /// driver needs only the few that ended under an attempt it has not judged yet.
    /// None by default: the provider's listing shows its ended machines.
    async fn ended(&self, _study: &str, _missing: &Missing) -> Result<Vec<Machine>, ProviderError> {
        Ok(Vec::new())
    }
    /// Every live machine this provider can see, of every study, with its study
    /// (`augur gc`).
    async fn list_all(&self) -> Result<Vec<(String, Machine)>, ProviderError>;
    /// Ends a machine (idempotent: an absent machine is not an error).
    async fn terminate(&self, machine: &Machine) -> Result<(), ProviderError>;
    /// Whether a machine kept warm takes its next attempt through the record (an
    /// assignment `decide` makes, that its agent reads): then a machine serves the
    /// latest attempt whose record names it, whatever it was launched for. A local
    /// provider hands attempts to its warm agents itself.
    fn warm_by_record(&self) -> bool {
        false
    }
    /// How many attempts of `study` one of its machines runs at once, each in a slot
    /// of its own with its own GPUs: the GPUs of the study's machines over its
    /// `run.gpus` where it keeps them warm, else 1. A study that asks more GPUs
    /// than its machines have is [`ProviderError::Rejected`].
    async fn slots(&self, _study: &Study) -> Result<u32, ProviderError> {
        Ok(1)
    }
    /// Whether an agent whose attempt ended by itself goes back to the provider (a
    /// local pool of warm agents) rather than ending: it is listed with that attempt
    /// until the provider hears it is idle, a moment after its last write.
    fn pools_agents(&self) -> bool {
        false
    }
    /// Whether a machine absent from [`list`](Self::list) is certainly gone (true for
    /// local processes; not for an eventually consistent cloud API).
    fn sees_all(&self) -> bool;
    /// What to check when machines end before their agent reports (a sentence or
    /// two, ending with a space; empty when the provider has nothing to add).
    fn boot_hint(&self) -> &'static str {
        ""
    }
    /// Forgets any cached listing of `study`, so the next [`list`](Self::list) asks the
    /// cloud (before a study is declared finished, for example).
    fn invalidate(&self, _study: &str) {}
    /// Resolves when a machine may have changed state, so the reconciler can react at
    /// once instead of at its next periodic tick.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}
