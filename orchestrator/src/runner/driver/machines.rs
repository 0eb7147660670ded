//! What a drive learns about the machines it launches: whether they boot at all
//! ([`Boots`]), and whether the cloud has room for them ([`Weather`]).

use crate::runner::RunError;
use augur_model::Millis;

/// The cloud's weather: launches that find no room (capacity, a quota). While it
/// lasts no trial is launched (each would fail like the last), the wait grows as
/// the retry backoff does, and past the study's `capacity_timeout` the drive stops.
/// A launch that succeeds ends it. No attempt is used up by it.
#[derive(Default)]
pub(super) struct Weather {
    pub since: Option<Millis>,
    pub failures: u32,
    pub until: Millis,
}

/// After this many failed boots, and no agent reporting, a drive stops.
pub const FAILED_BOOTS_TO_STOP: u32 = 3;

/// Whether this drive's machines can run the agent at all: the boots that failed
/// (machines that ended before their agent reported) while no agent has reported
/// since the drive began. Launching more machines that cannot work only costs
/// money: after [`FAILED_BOOTS_TO_STOP`] the drive stops, and says what to check.
#[derive(Default)]
pub(super) struct Boots {
    pub since: Millis,
    pub reported: bool,
    pub failed: u32,
    pub last: String,
}

impl Boots {
    pub fn check(&self, study: &str, hint: &str) -> Result<(), RunError> {
        if self.reported || self.failed < FAILED_BOOTS_TO_STOP {
            return Ok(());
        }
        Err(RunError::Machines(format!(
            "study `{study}` stopped: its first {} machines ended before their agent reported (the last: {}). {hint}`augur run` again resumes the study.",
            self.failed, self.last
        )))
    }
}
