//! How a run ends when it does not end well: the words (with what to do next) and an
//! exit code scripts can rely on.

use crate::api::ApiError;

/// A run's failure.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command line or the folder is not usable as given.
    #[error("{0}")]
    Usage(String),
    /// The token was refused.
    #[error(
        "the server refused the token ({0}). Get a new one (`filesync token --user ID` on the \
         server) and pass it with --token, FILESYNC_TOKEN or --token-file"
    )]
    Unauthenticated(String),
    /// The caller is not (or no longer) a member of the space.
    #[error(
        "no access to the space ({0}). Ask an owner to add you again; your files here are \
         untouched"
    )]
    NoAccess(String),
    /// The server cannot be reached.
    #[error(
        "the server cannot be reached ({0}). Nothing is lost: the next run carries on where \
         this one stopped"
    )]
    Unreachable(String),
    /// Some files could not be synced; the rest were.
    #[error(
        "{0} file(s) could not be synced (listed above; `filesync-sync status DIR` lists them \
         again). They are tried again on the next run"
    )]
    Incomplete(usize),
    /// The pass would delete more than allowed.
    #[error(
        "this pass would delete {deletes} of {total} files, more than --max-delete allows \
         ({limit}). Nothing was changed. If that is what you want, run again with \
         --max-delete 100%; `--dry-run` shows the plan"
    )]
    TooManyDeletes {
        deletes: usize,
        total: usize,
        limit: String,
    },
    /// The disk holding the folder is full: not even the state could be recorded.
    #[error(
        "the disk holding the folder is full: free some space, then run again (nothing \
         recorded is lost)"
    )]
    DiskFull,
    /// Another run holds the folder.
    #[error("{0}")]
    Locked(String),
    /// Anything else (the state database, the server answering nonsense).
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// The process exit code (documented in client-examples/README.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unauthenticated(_) => 3,
            Failure::NoAccess(_) => 4,
            Failure::Unreachable(_) => 5,
            // A full disk leaves files unsynced, as a per-file problem does.
            Failure::Incomplete(_) | Failure::DiskFull => 6,
            Failure::TooManyDeletes { .. } => 7,
            Failure::Locked(_) => 8,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthenticated(why) => Failure::Unauthenticated(why),
            ApiError::Forbidden(why) | ApiError::NotFound(why) => Failure::NoAccess(why),
            ApiError::Unreachable(why) => Failure::Unreachable(why),
            ApiError::RateLimited { .. } => {
                Failure::Unreachable("the server keeps answering that it is busy".into())
            }
            e => Failure::Other(e.to_string()),
        }
    }
}

impl From<crate::scan::ScanError> for Failure {
    fn from(e: crate::scan::ScanError) -> Self {
        match e {
            crate::scan::ScanError::State(e) => e.into(),
            e => Failure::Other(e.to_string()),
        }
    }
}

impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        if e.is_disk_full() {
            return Failure::DiskFull;
        }
        Failure::Other(e.to_string())
    }
}
