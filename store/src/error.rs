//! How augur's failures are told apart: [`Kind`] is the one place that says whether
//! waiting mends a failure and which exit code it ends a command with; each error
//! type (`StoreError` here, `ProviderError`, the runner's `RunError`) says its
//! variants' kind in one `kind()`. A failure that came from another error (an SDK's,
//! the operating system's, SQLite's) keeps it as its `source()`; its message already
//! says the cause in words, as kube-rs's errors do.

use crate::Denied;

/// The error a failure came from, kept whole (an AWS SDK error, an `io::Error`).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a failure asks of whoever meets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The input must change first: the study file, the arguments, what is recorded,
    /// a grant or a setting of the stack (exit code 2). Never retried.
    Input,
    /// A service is busy or out of reach: asked again with backoff, and exit code 3
    /// when it stays so past the deadline.
    Unavailable,
    /// Unavailable for good as far as this command goes: the deadline passed, or the
    /// machines cannot run the agent (exit code 3; the study stays resumable).
    GaveUp,
    /// A bug, or a record augur cannot read (exit code 1).
    Bug,
}

impl Kind {
    /// Whether waiting and asking again may mend it.
    pub fn retryable(self) -> bool {
        self == Kind::Unavailable
    }

    /// The code a command exits with when it ends on such a failure (README, "Exit
    /// codes").
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Input => 2,
            Kind::Unavailable | Kind::GaveUp => 3,
            Kind::Bug => 1,
        }
    }
}

/// What failed, in words that name the call and say its cause, and the error it came
/// from when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Failure {
    pub what: String,
    #[source]
    pub source: Option<Cause>,
}

impl Failure {
    /// A failure told in words alone (an answer missing something, a lock).
    pub fn said(what: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            source: None,
        }
    }

    /// A failure that came from `source`.
    pub fn caused(what: impl Into<String>, source: impl Into<Cause>) -> Failure {
        Failure {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or used (retry later; exit code 3).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// IAM refused the request: a missing grant, never retried (exit code 2).
    #[error("{0}")]
    Denied(Box<Denied>),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    /// An update asked for a transition the state machine forbids (a bug).
    #[error("illegal transition of {study}/{id}: {from} -> {to}")]
    IllegalTransition {
        study: String,
        id: u64,
        from: augur_model::TrialState,
        to: augur_model::TrialState,
    },
    /// No study of that name is recorded (exit code 2).
    #[error("no study named `{study}`")]
    NoStudy { study: String },
    /// A record could not be encoded (a bug).
    #[error("cannot encode record {key}: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    /// The database refused a statement for a reason that waiting will not mend: a
    /// constraint, the schema, a type (a bug, or a database augur did not write).
    #[error("database error: {0}")]
    Database(#[source] rusqlite::Error),
    /// The database refused a request as malformed (DynamoDB's `ValidationError`:
    /// an item too large, an attribute it does not accept): waiting will not mend
    /// it (a bug, exit code 1). `item` names what was refused.
    #[error("the database refused {item}: {reason}")]
    Refused { item: String, reason: String },
    /// A panic elsewhere left a lock of the store's poisoned (a bug).
    #[error("a lock of the store was poisoned by a panic")]
    Poisoned,
}

impl From<rusqlite::Error> for StoreError {
    /// Busy, locked, I/O, a full disk or memory are the database being unavailable
    /// (retried, then exit 3); anything else is [`StoreError::Database`].
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(
                DatabaseBusy
                | DatabaseLocked
                | SystemIoFailure
                | CannotOpen
                | DiskFull
                | OutOfMemory
                | FileLockingProtocolFailed,
            ) => StoreError::Unavailable(Failure::caused(e.to_string(), e)),
            _ => StoreError::Database(e),
        }
    }
}

impl StoreError {
    /// The database unavailable, for the reason `what` says.
    pub fn unavailable(what: impl Into<String>) -> StoreError {
        StoreError::Unavailable(Failure::said(what))
    }

    /// No study named `study`.
    pub fn no_study(study: impl Into<String>) -> StoreError {
        StoreError::NoStudy {
            study: study.into(),
        }
    }

    /// What this failure asks of whoever meets it.
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::Unavailable(_) => Kind::Unavailable,
            StoreError::Denied(_) | StoreError::NoStudy { .. } => Kind::Input,
            StoreError::Corrupt { .. }
            | StoreError::IllegalTransition { .. }
            | StoreError::Encode { .. }
            | StoreError::Database(_)
            | StoreError::Refused { .. }
            | StoreError::Poisoned => Kind::Bug,
        }
    }

    /// Whether waiting may mend it.
    pub fn is_retryable(&self) -> bool {
        self.kind().retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_cause_is_kept_and_its_words_said() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only");
        let e = StoreError::Unavailable(Failure::caused("cannot open x.db: read-only", io));
        assert_eq!(
            e.to_string(),
            "database unavailable: cannot open x.db: read-only"
        );
        let failure = e.source().expect("the failure");
        let io = failure.source().expect("the io error");
        assert!(io.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(e.kind().exit_code(), 3);
        assert!(e.is_retryable());
    }

    #[test]
    fn each_kind_has_its_exit_code_and_only_unavailable_is_retried() {
        let all = [Kind::Input, Kind::Unavailable, Kind::GaveUp, Kind::Bug];
        let codes: Vec<u8> = all.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes, [2, 3, 3, 1]);
        let retried: Vec<bool> = all.iter().map(|k| k.retryable()).collect();
        assert_eq!(retried, [false, true, false, false]);
        assert_eq!(StoreError::no_study("q").kind(), Kind::Input);
        assert_eq!(StoreError::Poisoned.kind(), Kind::Bug);
    }
}
