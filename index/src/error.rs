use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    // The io error is part of the message, not a `source`: `{:#}` at the edge would print it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("invalid region record {key}: {message}")]
    InvalidRecord { key: String, message: String },
    #[error("no index at {0} (it has no {MANIFEST}); build one with `regionseek index`", MANIFEST = crate::files::MANIFEST)]
    NotFound(PathBuf),
    #[error("an index already exists at {0}")]
    Exists(PathBuf),
    #[error(
        "{0} holds index segments but no {MANIFEST} (deleted or lost); nothing was changed. \
         `regionseek index-repair {0}` rebuilds the manifest from the intact segments",
        MANIFEST = crate::files::MANIFEST
    )]
    Orphaned(PathBuf),
    #[error("{dir} is being written by another process ({holder}); wait for it or stop it first")]
    Locked { dir: PathBuf, holder: String },
    #[error("{0}")]
    Engine(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
        let path = path.into();
        move |error| IndexError::Io { path, error }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> IndexError {
        IndexError::Corrupt {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
