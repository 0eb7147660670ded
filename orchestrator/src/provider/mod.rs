//! Machine providers: where trial attempts run. The trait is
//! [`augur_store::provider::MachineProvider`]; local processes and in-process
//! objectives are here, EC2 is in `augur-aws` ([`augur_aws::ec2`]).

pub mod adopt;
pub mod gpus;
pub mod inprocess;
pub mod local;

pub use augur_store::provider::{Launched, MachineProvider, Missing, ProviderError};
