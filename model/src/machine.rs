//! A machine as a provider lists it: where one attempt of a trial runs.

/// A machine as the provider sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Provider's id (pid, instance id).
    pub id: String,
    pub trial: u64,
    pub attempt: u32,
    /// `Some(why)` when the provider lists the machine as ended (an EC2 instance
    /// shutting down or terminated, with its state-reason code): if its attempt is
    /// still active, the machine was taken away (a spot reclaim, a termination
    /// outside augur) and the attempt is a preemption, not a failure of the trial.
    pub gone: Option<String>,
}
