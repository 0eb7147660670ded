//! The application layer that the CLI, the Lambda and the status server share: the
//! backend a command talks to ([`backend::Backend`]: store, machines, logs, files),
//! the config file, the serverless tick, the status server and trial logs. The CLI
//! only parses arguments and prints.

mod abandoned;
pub mod access;
pub mod backend;
pub mod config;
pub mod doctor;
pub mod logs;
mod pages;
pub mod serve;
pub mod study;
pub mod tick;
pub mod trials;

use std::time::Duration;

/// An error with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub code: u8,
    pub message: String,
}

impl AppError {
    /// A failure as a command ends on it: its message, and the exit code its kind
    /// says (`augur_store::Kind::exit_code`, the one place codes are given).
    pub fn of(kind: augur_store::Kind, e: impl std::fmt::Display) -> AppError {
        AppError {
            code: kind.exit_code(),
            message: e.to_string(),
        }
    }
    pub fn input(m: impl Into<String>) -> AppError {
        AppError {
            code: 2,
            message: m.into(),
        }
    }
    pub fn unavailable(m: impl Into<String>) -> AppError {
        AppError {
            code: 3,
            message: m.into(),
        }
    }
}

impl From<augur_store::StoreError> for AppError {
    fn from(e: augur_store::StoreError) -> AppError {
        AppError::of(e.kind(), e)
    }
}

impl From<augur::RunError> for AppError {
    fn from(e: augur::RunError) -> AppError {
        AppError::of(e.kind(), e)
    }
}

/// A study name from the command line or a URL, checked before it becomes a database
/// key, a log-stream name or a path (no `..`, no `/`).
pub fn study_name(s: &str) -> Result<String, String> {
    if augur_model::valid_study_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a study name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
        ))
    }
}

/// A duration as people write it (`90s`, `10m`), for flags.
pub fn dur(s: &str) -> Result<Duration, String> {
    augur_model::duration::parse(s)
}
