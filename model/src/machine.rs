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

/// What separates an instance's id from a slot's number in a slot's name.
const SLOT_MARK: char = '/';

/// The name a record gives slot `slot` of machine `machine`: a machine that runs
/// several attempts at once (an EC2 instance whose GPUs a study's trials share,
/// `run.gpus`) is, to the record, one machine per slot. Slot 0 is the machine
/// itself (`i-0abc`), slot 2 `i-0abc/2`: a study with one slot per machine names
/// machines as it always has.
pub fn slot_name(machine: &str, slot: u32) -> String {
    match slot {
        0 => machine.to_string(),
        n => format!("{machine}{SLOT_MARK}{n}"),
    }
}

/// The machine a record's name is a slot of (the name itself for slot 0); what a
/// provider lists, asks for and ends.
pub fn machine_of_slot(name: &str) -> &str {
    name.split_once(SLOT_MARK).map_or(name, |(m, _)| m)
}

/// The slot a record's name names (0 for the machine itself).
pub fn slot_of(name: &str) -> u32 {
    name.split_once(SLOT_MARK)
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl Machine {
    /// Whether a machine that ended with `why` was taken away by the cloud (no fault
    /// of the attempt it ran), not ended by itself or by someone.
    pub fn taken_away(why: &str) -> bool {
        why.starts_with("Server.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_named_after_its_machine_and_slot_0_is_the_machine() {
        assert_eq!(slot_name("i-0abc", 0), "i-0abc");
        assert_eq!(slot_name("i-0abc", 3), "i-0abc/3");
        for (name, machine, slot) in [
            ("i-0abc/3", "i-0abc", 3),
            ("i-0abc", "i-0abc", 0),
            ("host:12", "host:12", 0),
        ] {
            assert_eq!(
                (machine_of_slot(name), slot_of(name)),
                (machine, slot),
                "{name}"
            );
        }
    }
}
