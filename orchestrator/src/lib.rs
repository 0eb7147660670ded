//! augur: black-box experiments ("studies") of many trials, run on local processes
//! (the embedded default) or on EC2 instances (an instance per attempt, or kept
//! warm for the study's next ones).
//!
//! The engine is this library: the pure reconciler ([`reconcile`]), the executor and
//! diviner-style API ([`runner`]), and the machine providers ([`provider`]). The
//! `augur` binary is a thin CLI over it.

// The CLI lives in the library (so `augur` and `augur-lambda` share it) and names
// this crate `augur`, as a dependent would.
extern crate self as augur;

pub mod analysis;
pub mod app;
pub mod cli;
pub mod provider;
pub mod reconcile;
pub mod report;
pub mod runner;

pub use provider::inprocess::{InProcessProvider, TrialContext};
pub use provider::local::LocalProvider;
pub use provider::MachineProvider;
pub use reconcile::{decide, Action, Machine, Mode, Scope};
pub use runner::{
    Clock, CounterValues, Driver, Event, Finished, LeaseSpec, Next, RegisterOptions, RunError,
    Runner, RunnerConfig, StreamHandle, TickCaches, TickEnd,
};
