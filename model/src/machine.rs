//! A machine as a provider lists it: where one attempt of a trial runs.

/// A machine as the provider sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    /// Provider's id (pid, instance id).
    pub id: String,
    pub trial: u64,
    pub attempt: u32,
    /// `Some(why)` when the provider lists the machine as ended, `why` in EC2's
    /// state-reason codes (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html>),
    /// which every provider speaks: `Server.*` when the cloud took the machine away
    /// (`Server.SpotInstanceTermination`, `Server.InternalError`), `Client.*` when it
    /// ended itself or was ended (`Client.InstanceInitiatedShutdown`,
    /// `Client.UserInitiatedShutdown`).
    pub gone: Option<String>,
    /// The creation time of the trial record the machine was launched for, when the
    /// provider knows it (EC2 tags it): a machine of a study deleted and created
    /// again under its name is not the new trial's.
    pub incarnation: Option<crate::Millis>,
    /// How it is billed, as far as the listing says (a cloud's: its type, zone and
    /// market, at a first-guess price): what an attempt that adopts it records.
    pub billing: Option<crate::cost::Billing>,
}

impl Machine {
    /// Whether a machine that ended with `why` was taken away by the cloud (no fault
    /// of the attempt it ran), not ended by itself or by someone.
    pub fn taken_away(why: &str) -> bool {
        why.starts_with("Server.")
    }
}
